"""Logs an operator can keep for months: a steady stream of pushes writes a handful of INFO
lines, not one per push (#34: httpx's ``HTTP Request: POST ... 200`` was 4.5 GB a day at
300/s), while a failure still shows, once."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import uuid
from contextlib import ExitStack
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from tests.support.broker import rabbitmqctl
from tests.support.helpers import WARREN, free_port, wait_http
from warren._run.logging import _LibraryLevels

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.broker import Broker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

PUSHES = 1000
# what a quiet service may write at INFO and above for a whole run: start-up, connected,
# stopping, flushed... a handful, whatever the number of pushes
MOST_LINES = 25
_LEVEL = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def _lines_at_info_or_above(text: str) -> list[str]:
    return [line for line in text.splitlines() if (m := _LEVEL.match(line)) and m[1] != "DEBUG"]


async def _post_all(api: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        sem = anyio.Semaphore(20)

        async def one(i: int) -> None:
            async with sem:
                body = {"from": "a", "to": f"device-{i}", "text": "hi"}
                r = await client.post("/messages", json=body)
                assert r.status_code == 202, r.text

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(one, i)


@pytest.mark.scenario
async def test_a_thousand_pushes_write_a_handful_of_info_lines(
    broker_url: str, broker: Broker, redis_url: str, tmp_path: Path, anyio_backend: str
) -> None:
    queue = f"push.test.quiet.{uuid.uuid4().hex[:8]}"
    fake = f"127.0.0.1:{free_port()}"
    api = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "WARREN_AMQP_URL": broker_url,
        "WARREN_LOG_LEVEL": "INFO",
        "WARREN_PUSH_QUEUE": queue,
        "WARREN_PUSH_INVALID_TOKENS_QUEUE": "",
        "WARREN_FAKE_PUSH_ADDR": fake,
        "WARREN_PUSH_PROVIDER_URL": f"http://{fake}/webhook",
        "WARREN_DEDUP_URL": redis_url,
        "WARREN_API_ADDR": api,
        "WARREN_API_DB": str(tmp_path / "api.sqlite3"),
    }
    logs: dict[str, Path] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with ExitStack() as files:
            for service in ("fake-push-provider", "push-sender", "api"):
                logs[service] = tmp_path / f"{service}.log"
                out = files.enter_context(logs[service].open("wb"))
                procs[service] = subprocess.Popen(  # noqa: ASYNC220 - started once, not waited on
                    [*WARREN, "run", service, "--backend", anyio_backend],
                    env={**env, "WARREN_METRICS_ADDR": f"127.0.0.1:{free_port()}"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            await wait_http(f"http://{fake}/received")
            await wait_http(f"http://{api}/messages/none")
            await _post_all(f"http://{api}", PUSHES)
            async with httpx.AsyncClient() as client:

                async def delivered() -> int:
                    return int((await client.get(f"http://{fake}/received")).json()["distinct"])

                with anyio.fail_after(120):  # an HTTP server: no event to wait on
                    while await delivered() < PUSHES:  # noqa: ASYNC110
                        await anyio.sleep(0.2)
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                proc.wait(timeout=30)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # the push queue, its dead letters and the sender's delay queues
        for name in rabbitmqctl("list_queues", "--quiet", "--no-table-headers", "name").split():
            if name.startswith(queue):
                broker.delete_queue(name)
    for service, path in logs.items():
        lines = _lines_at_info_or_above(path.read_text(errors="replace"))
        assert len(lines) <= MOST_LINES, f"{service}: {len(lines)} lines:\n" + "\n".join(lines[:40])
        assert procs[service].returncode == 0, f"{service}:\n" + "\n".join(lines[-20:])


def _record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


def test_library_chatter_is_debug_and_a_repeated_failure_shows_once() -> None:
    now = [0.0]
    levels = _LibraryLevels(show_debug=False, clock=lambda: now[0])
    request = _record("httpx", logging.INFO, 'HTTP Request: POST %s "HTTP/1.1 200 OK"')
    assert not levels.filter(request) and request.levelname == "DEBUG"
    assert not levels.filter(_record("pika.connection", logging.ERROR, "refused"))
    assert not levels.filter(_record("httpcore.http11", logging.DEBUG, "send_request"))
    # a library's warning: once, then held back for a while, then shown with the count
    shown = [levels.filter(_record("google.auth", logging.WARNING, "refresh failed %s"))
             for _ in range(5)]  # fmt: skip
    assert shown == [True, False, False, False, False]
    now[0] += 61
    again = _record("google.auth", logging.WARNING, "refresh failed %s")
    assert levels.filter(again) and "4 more like it" in str(again.msg)
    # Warren's own events and the application's own loggers are left as they are
    assert levels.filter(_record("warren.publisher", logging.INFO, "connection.restored"))
    assert all(levels.filter(_record("myapp.orders", logging.INFO, "order %s")) for _ in "ab")


def test_at_debug_every_line_shows() -> None:
    levels = _LibraryLevels(show_debug=True)
    lines = [("httpx", logging.INFO), ("pika", logging.ERROR), ("google.auth", logging.WARNING)]
    for name, level in [*lines, *lines]:
        assert levels.filter(_record(name, level, "x"))
