"""Every timer of Warren's small HTTP server (the ops server's /metrics and health, the fault
proxy's API): a client that connects and says nothing, says a little and stops, drips its
request, or stops reading the answer must cost one connection for a bounded time — never
the server, never the process (#27: an idle connection killed `warren run` after 30 s)."""

from __future__ import annotations

import socket
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from tests.support.helpers import wait_until
from warren._http.server import HttpRequest, HttpResponse, serve_http

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from anyio.abc import SocketStream

pytestmark = pytest.mark.timeout(30)

IDLE = 0.3


async def _answer(request: HttpRequest) -> HttpResponse:
    size = int(request.target.rsplit("/", 1)[-1] or 0) if request.target != "/" else 0
    return HttpResponse(200, b"x" * size, "text/plain")


class _Server:
    """serve_http behind a real listener; counts connections ended and how they ended."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ended: list[tuple[float, BaseException | None]] = []


async def _serve(
    server: _Server,
    listener: anyio.abc.Listener[SocketStream],
    serve: Callable[[SocketStream], Awaitable[None]],
) -> None:
    async def one(stream: SocketStream) -> None:
        error: BaseException | None = None
        try:
            await serve(stream)
        except Exception as exc:  # the test asserts there is none
            error = exc
        server.ended.append((time.monotonic(), error))

    await listener.serve(one)


@asynccontextmanager
async def serving(idle_timeout: float) -> AsyncIterator[_Server]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server = _Server(port)

    async def serve(stream: SocketStream) -> None:
        await serve_http(stream, _answer, idle_timeout=idle_timeout)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(_serve, server, listener, serve)
        yield server
        tg.cancel_scope.cancel()


async def _ended(server: _Server, count: int, within: float) -> list[BaseException | None]:
    await wait_until(lambda: len(server.ended) >= count, within=within)
    return [error for _, error in server.ended]


async def _still_answers(server: _Server) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.get(f"http://127.0.0.1:{server.port}/5")
    assert r.status_code == 200 and r.content == b"xxxxx"


@pytest.mark.parametrize("sent", [b"", b"GE", b"GET / HTTP/1.1\r\nHost: x\r\n"])
async def test_a_silent_or_partial_client_is_closed_quietly(sent: bytes) -> None:
    async with serving(idle_timeout=IDLE) as server:
        client = await anyio.connect_tcp("127.0.0.1", server.port)
        async with client:
            if sent:
                await client.send(sent)
            errors = await _ended(server, 1, within=5)
            assert errors == [None], "the idle timeout must close one connection, quietly"
            with anyio.fail_after(2):  # the server closed it: the client sees the end
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await client.receive()
        await _still_answers(server)


async def test_a_client_dripping_its_request_is_cut_off_after_the_request_timeout() -> None:
    async with serving(idle_timeout=IDLE) as server:
        client = await anyio.connect_tcp("127.0.0.1", server.port)
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
        async with client:
            start = time.monotonic()
            with pytest.raises((anyio.BrokenResourceError, OSError)):  # noqa: PT012
                with anyio.fail_after(10):
                    for byte in head + b"y" * 1000:  # every byte well within the idle time
                        await client.send(bytes([byte]))
                        await anyio.sleep(IDLE / 10)
                        if server.ended:
                            raise anyio.BrokenResourceError
            errors = await _ended(server, 1, within=5)
            assert errors == [None]
            # the whole request had a bounded time, not one idle period per byte
            assert server.ended[0][0] - start < IDLE * 4
        await _still_answers(server)


async def test_a_client_that_never_reads_its_answer_is_cut_off() -> None:
    big = 32 << 20  # far more than both sockets' buffers hold
    async with serving(idle_timeout=IDLE) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            sock.sendall(f"GET /{big} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            errors = await _ended(server, 1, within=10)
            assert errors == [None]
        finally:
            sock.close()
        await _still_answers(server)


async def test_keep_alive_between_requests_is_bounded_by_the_idle_timeout() -> None:
    async with serving(idle_timeout=IDLE) as server:
        client = await anyio.connect_tcp("127.0.0.1", server.port)
        async with client:
            await client.send(b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
            with anyio.fail_after(5):
                reply = b""
                while not reply.endswith(b"xxx"):
                    reply += await client.receive()
            assert reply.startswith(b"HTTP/1.1 200")
            errors = await _ended(server, 1, within=5)
            assert errors == [None]
