"""A minimal HTTP/1.1 server loop on an anyio byte stream (h11, sans-IO framing).

Used where Warren serves a few small endpoints from inside the event loop: the runner's
``/metrics``, ``/healthz`` and ``/readyz``, and the fault proxy's Toxiproxy API. Serving
from the event loop (not a side thread) means an answer also proves the loop is alive, and
the handlers read worker state on the thread that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import anyio
import h11

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import SocketStream


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
    content_type: str = "application/json"


async def serve_http(
    stream: SocketStream, answer: Callable[[HttpRequest], Awaitable[HttpResponse]]
) -> None:
    """Answer requests on one connection (keep-alive) until the client goes away."""
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            request = await _next_event(conn, stream)
            if not isinstance(request, h11.Request):
                return
            body = b""
            while True:
                event = await _next_event(conn, stream)
                if isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
            req = HttpRequest(request.method.decode(), request.target.decode(), headers, body)
            response = await answer(req)
            if not await _respond(conn, stream, response, head=req.method == "HEAD"):
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return


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
    conn: h11.Connection, stream: SocketStream, response: HttpResponse, *, head: bool
) -> bool:
    headers = [("content-type", response.content_type),
               ("content-length", str(len(response.body)))]  # fmt: skip
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
