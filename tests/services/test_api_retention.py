"""What the api stores is bounded (#34): messages past ``WARREN_API_RETENTION`` are pruned
in small batches, their pages given back, and a message whose push still waits in the
outbox is never pruned."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from typing import TYPE_CHECKING, cast

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from tests.support.helpers import free_port, run_warren, running, wait_http, wait_until
from warren_services import api
from warren_services.api import PRUNE_BATCH, MessageStore, _pruning

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)


def _fill(path: Path, old: int, new: int, now: float) -> None:
    db = sqlite3.connect(path)
    rows = [(uuid.uuid4().hex, "a", "b", "x" * 500, now - 1000 + i * 0.001, "queued")
            for i in range(old)]  # fmt: skip
    rows += [(uuid.uuid4().hex, "a", "b", "x" * 500, now, "queued") for _ in range(new)]
    db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def _pragma(path: Path, name: str) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        db.close()


def test_old_messages_go_in_batches_and_their_pages_are_given_back(tmp_path: Path) -> None:
    path = tmp_path / "api.sqlite3"
    store = MessageStore(str(path))
    try:
        now = time.time()
        _fill(path, old=1200, new=10, now=now)
        full = path.stat().st_size
        assert _pragma(path, "auto_vacuum") == 2, "a new file frees pages incrementally"
        batches = []
        while deleted := store.prune(now, retention=500):
            batches.append(deleted)
        assert batches == [PRUNE_BATCH, PRUNE_BATCH, 1200 - 2 * PRUNE_BATCH]
        assert _pragma(path, "freelist_count") == 0, "every freed page was given back"
        assert path.stat().st_size < full / 10
        left = sqlite3.connect(path).execute("SELECT count(*) FROM messages").fetchone()[0]
        assert left == 10, "the recent messages stay"
    finally:
        store.close()


def _env(url: str, tmp_path: Path, queue: str, retention: str) -> dict[str, str]:
    return {"WARREN_AMQP_URL": url, "WARREN_API_ADDR": f"127.0.0.1:{free_port()}",
            "WARREN_API_DB": str(tmp_path / "api.sqlite3"), "WARREN_PUSH_QUEUE": queue,
            "WARREN_API_RETENTION": retention, "WARREN_RECONNECT_MAX_ATTEMPTS": "0"}  # fmt: skip


async def _post(addr: str, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=f"http://{addr}") as client:
        ids = []
        for i in range(count):
            r = await client.post("/messages", json={"from": "a", "to": "b", "text": f"m{i}"})
            assert r.status_code == 202 and r.json()["push"] == "queued", r.text
            ids.append(r.json()["id"])
        return ids


@pytest.mark.broker
async def test_the_api_prunes_messages_past_their_retention(
    broker_url: str, push_queue: str, tmp_path: Path
) -> None:
    env = _env(broker_url, tmp_path, push_queue, "1")
    async with running(api.service, env) as ctx:
        addr = env["WARREN_API_ADDR"]
        await wait_http(f"http://{addr}/messages/none")
        ids = await _post(addr, 20)
        registry = ctx.metrics.registry

        def pruned() -> float:
            return registry.get_sample_value("warren_api_messages_pruned_total") or 0.0

        await wait_until(lambda: pruned() == 20, within=20)
        async with httpx.AsyncClient() as client:
            gone = await client.get(f"http://{addr}/messages/{ids[0]}")
        assert gone.status_code == 404


@pytest.mark.broker
async def test_a_message_whose_push_waits_in_the_outbox_is_never_pruned(
    tmp_path: Path, push_queue: str
) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"  # the pushes cannot leave
    env = {**_env(dead, tmp_path, push_queue, "1"), "WARREN_FLUSH_TIMEOUT": "0"}  # kept
    async with running(api.service, env):
        addr = env["WARREN_API_ADDR"]
        await wait_http(f"http://{addr}/messages/none")
        ids = await _post(addr, 5)
        store = MessageStore(env["WARREN_API_DB"])
        try:  # a day later, with a retention of one second: still there
            assert store.prune(time.time() + 86_400, retention=1) == 0
        finally:
            store.close()
        async with httpx.AsyncClient() as client:
            for message_id in ids:
                r = await client.get(f"http://{addr}/messages/{message_id}")
                assert r.status_code == 200


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_a_bad_retention_exits_2_naming_the_setting(tmp_path: Path, value: str) -> None:
    env = _env("amqp://guest:guest@127.0.0.1:1/%2F", tmp_path, "q", value)
    done = run_warren("run", "api", env={**os.environ, **env}, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "WARREN_API_RETENTION" in done.stderr


async def test_a_failing_prune_is_logged_once_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A busy or full disk fails a prune: the api goes on serving, says so once, and prunes
    again next round."""

    class Flaky:
        calls = 0

        def prune(self, now: float, retention: float) -> int:
            self.calls += 1
            if self.calls <= 3:
                raise sqlite3.OperationalError("database is locked")
            return 0

    store = Flaky()
    pruned = Counter("pruned", "", registry=CollectorRegistry())
    async with anyio.create_task_group() as tg:
        tg.start_soon(_pruning, cast("MessageStore", store), 1.0, pruned)
        await wait_until(lambda: store.calls >= 5, within=10)
        tg.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.getMessage().startswith("messages.prune_failed")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
