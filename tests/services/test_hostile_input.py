"""An adversarial pass over the surfaces #27 added (the services' HTTP server, outbox
salvage, ...): each test is a finding, and failed on the code before its fix.

- The services' HTTP server (``warren_services._http``) bounded each read of a body, not
  the body: one dripped a byte just inside the read timeout held its connection for ever.
  Nor did it bound a write: a client that never reads its answer held it for ever too.
- ``warren outbox salvage`` scanned up to the page count a header states: a 4 KB file
  whose header counts 2**32 pages hung it for hours. A FIFO beside the file as its WAL
  hung it in ``open``.
- A push provider's 2xx whose body then failed (not decodable, never ending) made the
  delivered push fail and go round again: sent twice. Error bodies had no size bound.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import struct
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import httpx
import pytest

from tests.support.helpers import run_warren, wait_until
from warren._outbox.outbox import CREATE_TABLE, INSERT, SCHEMA_VERSION
from warren_services import _http

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, MutableMapping
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)


# --- the services' HTTP server: every wait on a client is bounded ------------------------


class _App:
    """An ASGI app that reads the whole body and answers ``?size`` bytes; ``done`` counts
    the requests whose answer the server took to the end (or gave up on)."""

    def __init__(self) -> None:
        self.done = 0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        try:
            more = scope["method"] == "POST"
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                more = message["more_body"]
            size = int(scope["query_string"] or b"2")
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % size)]})  # fmt: skip
            await send({"type": "http.response.body", "body": b"x" * size})
        finally:
            self.done += 1


@asynccontextmanager
async def _serving(app: _App) -> AsyncIterator[int]:
    listener = _http.bind_listener("TEST_ADDR", "127.0.0.1:0")
    port = listener.getsockname()[1]
    stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_http.serve_asgi, app, listener, stopping)
        try:
            yield port
        finally:
            stopping.set()


async def _get(port: int) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /?5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = b""
        with anyio.fail_after(5):
            while True:
                try:
                    answer += await stream.receive()
                except anyio.EndOfStream:
                    return answer


@pytest.mark.scenario  # slow (5 s): make scenarios
@pytest.mark.anyio
async def test_a_body_dripped_inside_the_read_timeout_is_still_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_http, "READ_TIMEOUT", 1.0)
    monkeypatch.setattr(_http, "BODY_TIMEOUT", 2.0, raising=False)  # the fix's setting
    app = _App()
    async with _serving(app) as port:
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.setblocking(False)
        try:
            client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
            answer = b""
            deadline = time.monotonic() + 8  # the old code held it for 1000 * 0.3 s
            while time.monotonic() < deadline:
                try:
                    client.send(b"a")  # a byte well inside each read timeout
                except OSError:
                    break
                await anyio.sleep(0.3)  # the drip's pace, not synchronisation
                try:
                    if not (more := client.recv(4096)):
                        break
                    answer += more
                except BlockingIOError:
                    pass
            assert answer.startswith(b"HTTP/1.1 408 "), answer or "still open after 8 s"
        finally:
            client.close()
        assert b"HTTP/1.1 200 " in await _get(port)


@pytest.mark.anyio
async def test_a_client_that_never_reads_its_answer_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_http, "WRITE_TIMEOUT", 1.0, raising=False)  # the fix's setting
    app = _App()
    async with _serving(app) as port:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        try:
            # 64 MB: far more than the kernel buffers on both sides hold
            client.sendall(b"GET /?67108864 HTTP/1.1\r\nHost: t\r\n\r\n")
            await wait_until(lambda: app.done == 1, within=10)
        finally:
            client.close()
        assert b"HTTP/1.1 200 " in await _get(port)


# --- outbox salvage: a hostile file never hangs it --------------------------------------


def _outbox(path: Path, jobs: int = 300) -> None:
    db = sqlite3.connect(path)
    db.execute(CREATE_TABLE)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    rows = [(i, 1.0, "", "q", f"m{i}", b"M", b"H", b"b" * 100) for i in range(1, jobs + 1)]
    db.executemany(INSERT, rows)
    db.commit()
    db.close()


def test_a_header_counting_billions_of_pages_does_not_hang_salvage(tmp_path: Path) -> None:
    damaged = tmp_path / "outbox.sqlite3"
    _outbox(damaged)
    data = bytearray(damaged.read_bytes())
    size = struct.unpack(">H", data[16:18])[0]
    data[2 * size] = 0x77  # page 3, a leaf of the jobs: a hole, so the pages get scanned
    data[28:32] = b"\xff\xff\xff\xff"  # the header's page count: 2**32 - 1 ...
    data[92:96] = data[24:28]  # ... and valid (SQLite trusts it when these two agree)
    damaged.write_bytes(data)
    done = run_warren("outbox", "salvage", str(damaged), "--to", str(tmp_path / "new"),
                      timeout=30)  # fmt: skip
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    new = sqlite3.connect(tmp_path / "new")
    try:
        (copied,) = new.execute("SELECT count(*) FROM warren_outbox").fetchone()
    finally:
        new.close()
    assert 0 < copied < 300, done.stdout


def test_a_fifo_as_the_wal_is_refused_not_waited_on(tmp_path: Path) -> None:
    damaged = tmp_path / "outbox.sqlite3"
    _outbox(damaged, jobs=3)
    os.mkfifo(tmp_path / "outbox.sqlite3-wal")
    done = run_warren("outbox", "salvage", str(damaged), "--to", str(tmp_path / "new"),
                      timeout=20)  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "outbox.sqlite3-wal" in done.stderr and "not a file" in done.stderr, done.stderr
    assert not (tmp_path / "new").exists()


# --- push providers: a delivered push is never retried for its answer's body ----------


@asynccontextmanager
async def _provider(answer: bytes, *, then_hang: bool = False) -> AsyncIterator[str]:
    """A provider that answers every request with ``answer`` (raw bytes), and then holds
    the connection open (``then_hang``: a body that never ends) or closes it."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def one(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await stream.receive()
            await stream.send(answer)
            if then_hang:
                await anyio.sleep_forever()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, one)
        yield f"http://127.0.0.1:{port}/webhook"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "then_hang"),
    [
        # 200, and a body that claims gzip but is not: httpx raised DecodingError
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!", False),
        # 200, and a body that never ends (a gigabyte promised): read until the timeout
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n{", True),
    ],
    ids=["undecodable", "endless"],
)
async def test_a_delivered_push_is_not_retried_for_its_answers_body(
    answer: bytes, then_hang: bool
) -> None:
    from warren_services.push_common import PushJob
    from warren_services.push_providers import WebhookProvider

    async with (
        _provider(answer, then_hang=then_hang) as url,
        httpx.AsyncClient(timeout=2) as client,
    ):
        with anyio.fail_after(10):
            await WebhookProvider(url).send(
                client, PushJob("m-1", "device", "t", "b", {})
            )  # delivered
