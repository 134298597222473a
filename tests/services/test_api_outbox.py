"""The api's transactional outbox, against SIGKILL: a 202 ``"push": "queued"`` is never
followed by a lost push.

The message row and its push job are one SQLite transaction in ``WARREN_API_DB``; the api's
publisher drains that table, on restart too. Real processes, the real broker, the fault
proxy for the outage.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.helpers import WARREN, free_port, outbox_rows, wait_serving
from warren.testing import partition_sync

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.support.broker import Broker
    from warren.testing.pytest_plugin import ProxiedBroker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]


@pytest.fixture
def push_queue(broker: Broker) -> Iterator[str]:
    name = f"warren.test.apibox.{uuid.uuid4().hex[:8]}"
    yield name
    for queue in (name, f"{name}.dlq"):
        broker.delete_queue(queue)


class _Api:
    """``warren run api`` as a process."""

    def __init__(self, url: str, db: Path, queue: str, **extra: str) -> None:
        self.addr = f"127.0.0.1:{free_port()}"
        ops = free_port()
        env = {**os.environ, "WARREN_AMQP_URL": url, "WARREN_API_DB": str(db),
               "WARREN_API_ADDR": self.addr, "WARREN_METRICS_ADDR": f"127.0.0.1:{ops}",
               "WARREN_PUSH_QUEUE": queue, "WARREN_HEARTBEAT": "2",
               "WARREN_BACKOFF_BASE": "0.05", "WARREN_BACKOFF_CAP": "0.3", **extra}  # fmt: skip
        quiet = subprocess.DEVNULL
        self.proc = subprocess.Popen([*WARREN, "run", "api"], env=env, stdout=quiet, stderr=quiet)
        wait_serving(self.proc, ops)

    def post(self, client: httpx.Client) -> str | None:
        """One message; its push id if the api answered 202 queued."""
        r = client.post(f"http://{self.addr}/messages",
                        json={"from": "a", "to": "device-1", "text": "hi"})  # fmt: skip
        if r.status_code == 202 and r.json()["push"] == "queued":
            return f"push-{r.json()['id']}"
        return None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def _drained_by_a_restart(url: str, db: Path, queue: str) -> None:
    """Start the api again on the same database and wait until its outbox is empty."""
    api = _Api(url, db, queue)
    try:
        deadline = time.monotonic() + 60
        while outbox_rows(db):
            assert time.monotonic() < deadline, "the restarted api never drained its outbox"
            time.sleep(0.05)
    finally:
        api.stop()


def test_kill_9_during_an_outage_loses_no_queued_push(
    rabbit_proxy: ProxiedBroker, broker: Broker, push_queue: str, tmp_path: Path
) -> None:
    db = tmp_path / "api.sqlite3"
    api = _Api(rabbit_proxy.url, db, push_queue)
    queued: set[str] = set()
    with httpx.Client(timeout=10) as client, partition_sync(rabbit_proxy.proxy):
        for _ in range(50):
            push = api.post(client)
            assert push is not None, "the api refused a message during the outage"
            queued.add(push)
        api.kill()
    _drained_by_a_restart(rabbit_proxy.direct_url, db, push_queue)
    arrived = broker.drain_all(push_queue)
    assert queued <= set(arrived.ids), f"lost: {sorted(queued - set(arrived.ids))[:5]}"


@pytest.mark.scenario
def test_kill_9_at_random_instants_loses_no_queued_push(
    broker_url: str, broker: Broker, push_queue: str, tmp_path: Path
) -> None:
    """Twelve kills, each after a random number of accepted messages, the link up and
    pushes in flight."""
    db = tmp_path / "api.sqlite3"
    rng = random.Random(99)
    queued: set[str] = set()
    with httpx.Client(timeout=10) as client:
        for _ in range(12):
            api = _Api(broker_url, db, push_queue)
            for _ in range(rng.randint(1, 60)):
                push = api.post(client)
                if push is not None:
                    queued.add(push)
            api.kill()
    _drained_by_a_restart(broker_url, db, push_queue)
    arrived = broker.drain_all(push_queue)
    assert queued <= set(arrived.ids), f"lost: {sorted(queued - set(arrived.ids))[:5]}"
    assert arrived.duplicates <= 12 * 60  # at most what was in flight at each kill


def test_without_the_outbox_pushes_still_flow(
    broker_url: str, broker: Broker, push_queue: str, tmp_path: Path
) -> None:
    """``WARREN_API_OUTBOX=off`` (the comparison in ``make bench``): the push waits in memory
    only, stored message first."""
    db = tmp_path / "api.sqlite3"
    api = _Api(broker_url, db, push_queue, WARREN_API_OUTBOX="off")
    with httpx.Client(timeout=10) as client:
        queued = {api.post(client) for _ in range(5)}
    api.stop()
    assert api.proc.returncode == 0
    assert None not in queued
    assert set(broker.drain_all(push_queue).ids) == queued
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 5
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "warren_outbox" not in tables
    finally:
        conn.close()
