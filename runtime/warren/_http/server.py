"""A minimal HTTP/1.1 server loop on an anyio byte stream (h11, sans-IO framing).

Used where Warren serves a few small endpoints from inside the event loop: the runner's
``/metrics``, ``/healthz`` and ``/readyz``, and the fault proxy's Toxiproxy API. Serving
from the event loop (not a side thread) means an answer also proves the loop is alive, and
the handlers read worker state on the thread that owns it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

import anyio
import h11

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import SocketStream

log = logging.getLogger("warren.http")


@final
@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


@final
@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"  # None: no Content-Type header
    headers: tuple[tuple[str, str], ...] = ()  # more headers, as (name, value)


MAX_BODY: Final = 1024 * 1024
IDLE_TIMEOUT: Final = 30.0


async def serve_http(
    stream: SocketStream,
    answer: Callable[[HttpRequest], Awaitable[HttpResponse]],
    *,
    max_body: int = MAX_BODY,
    idle_timeout: float = IDLE_TIMEOUT,
) -> None:
    """Answer requests on one connection (keep-alive) until the client goes away.

    Every wait is bounded by ``idle_timeout``: for the next request to arrive *whole* (head
    and body: a client dripping bytes gets no more time than a silent one), and for the
    client to take the answer (one that stops reading is not waited for). When one runs
    out the connection is closed quietly — a port scan, a TCP health check or a stalled
    scraper costs one connection for a while, never the server. A body over ``max_body``
    gets 413 and the connection closed; a handler that raises gets a logged 500, and the
    server goes on.
    """
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            request: HttpRequest | None = None
            with anyio.move_on_after(idle_timeout):
                request = await _read_request(conn, stream, max_body)
            if request is None:
                return
            try:
                response = await answer(request)
            except Exception:  # one request never takes the server down
                log.exception("http.handler_failed method=%s target=%r", request.method,
                              request.target[:200])  # fmt: skip
                response = HttpResponse(500, b'{"error": "internal error"}\n')
            sent = False
            with anyio.move_on_after(idle_timeout):
                sent = await _respond(conn, stream, response, head=request.method == "HEAD")
            if not sent:
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return


async def _read_request(
    conn: h11.Connection, stream: SocketStream, max_body: int
) -> HttpRequest | None:
    """The next request, whole; None when the client went away, broke the protocol or sent
    a body over ``max_body`` (answered 413 here)."""
    head = await _next_event(conn, stream)
    if not isinstance(head, h11.Request):
        return None
    body = bytearray()
    while True:
        event = await _next_event(conn, stream)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                if await _respond(conn, stream, _too_large(max_body), head=False, close=True):
                    await _discard(stream)
                return None
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            return None
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in head.headers}
    return HttpRequest(head.method.decode(), head.target.decode("latin-1"), headers,
                       bytes(body))  # fmt: skip


async def _discard(stream: SocketStream, *, within: float = 2.0, limit: int = 16 << 20) -> None:
    """Read and drop what the client is still sending, briefly: closing with unread data
    would reset the connection before the client reads the 413."""
    with anyio.move_on_after(within):
        seen = 0
        while seen < limit:
            try:
                seen += len(await stream.receive(65536))
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return


def _too_large(max_body: int) -> HttpResponse:
    message = f'{{"error": "body over {max_body} bytes", "status": 413}}\n'
    return HttpResponse(413, message.encode())


async def _next_event(conn: h11.Connection, stream: SocketStream) -> object:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return None
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            data = b""
        conn.receive_data(data)


async def _respond(
    conn: h11.Connection,
    stream: SocketStream,
    response: HttpResponse,
    *,
    head: bool,
    close: bool = False,
) -> bool:
    headers = [("content-length", str(len(response.body))), *response.headers]
    if response.content_type is not None:
        headers.insert(0, ("content-type", response.content_type))
    if close:
        headers.append(("connection", "close"))
    try:
        await stream.send(
            conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
        )
        if response.body and not head:
            await stream.send(conn.send(h11.Data(data=response.body)) or b"")
        await stream.send(conn.send(h11.EndOfMessage()) or b"")
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        return False
    return True
