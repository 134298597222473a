"""Serve an ASGI app over HTTP/1.1 on the running anyio backend until ``stopping`` is set.

The services' own connection loop (h11 for the framing, as the ops server), not a server
library's, for what a server library keeps out of reach:

- **Accepting** goes through ``warren._http.accept``: out of file descriptors, the listener
  pauses with a growing pause, logs that once, and resumes by itself (Hypercorn's accept
  loops, asyncio's and trio's, logged a traceback per failed ``accept``, ten a second).
- **Framing** is checked on the raw bytes of each request head before h11 parses it.
  h11 is lenient where a proxy in front may be strict or lenient differently: it accepts
  bare-LF line endings, folded (obs-fold) header lines, and Content-Length alongside
  Transfer-Encoding. A request two parsers could split differently (request smuggling)
  is refused with 400 and the connection closed; see ``framing_problem``.

One request at a time per connection, kept alive; the body is read as the app asks for it.
Every wait on the client is bounded: the head (``HEAD_TIMEOUT``), the body (``READ_TIMEOUT``
between reads, ``BODY_TIMEOUT`` in all: 408 when one runs out), and each write of the
answer (``WRITE_TIMEOUT``: a client that stops reading is dropped).
No lifespan events (the services set up around the app). When ``stopping`` is set, the
listener closes, idle connections close, and requests in flight get ``GRACE`` seconds.
"""

from __future__ import annotations

import http
import json
import logging
import socket
from functools import partial
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

import anyio
import h11
from anyio.abc import SocketAttribute, SocketListener
from prometheus_client import Counter

from warren import ConfigError, parse_addr, serve_connections

if TYPE_CHECKING:
    from anyio.abc import SocketStream
    from prometheus_client import CollectorRegistry
    from starlette.types import ASGIApp, Message

log = logging.getLogger("warren.http")

MAX_HEAD: Final = 16 * 1024  # a request line and headers, as h11's own default
HEAD_TIMEOUT: Final = 10.0  # for a whole request head, or the next one on a kept-alive link
READ_TIMEOUT: Final = 30.0  # between two reads of a body
BODY_TIMEOUT: Final = 60.0  # for a whole body: one dripped a byte at a time is cut off too
WRITE_TIMEOUT: Final = 30.0  # for the client to take each part of an answer
GRACE: Final = 5.0  # for requests in flight when stopping
_CHUNK: Final = 64 * 1024


def bind_listener(setting: str, addr: str) -> socket.socket:
    """Bind and listen on ``addr`` now, so a port in use or an address this host does not
    have is a configuration error naming ``setting`` before the service starts any work."""
    host, port = parse_addr(setting, addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(setting, f"cannot listen on {addr}: {exc.strerror or exc}") from None


async def serve_asgi(
    app: ASGIApp,
    listener: socket.socket,
    stopping: anyio.Event,
    *,
    name: str = "http",
    registry: CollectorRegistry | None = None,
) -> None:
    """Serve ``app`` on ``listener`` (see ``bind_listener``; closed here) until ``stopping``
    is set, then let requests in flight finish for up to ``GRACE`` seconds. ``name`` names
    the server in the log (``accept.paused server=<name>``) and in
    ``warren_http_client_gone_total{server}``, counted in ``registry``."""
    try:
        tcp = await SocketListener.from_socket(listener)
    except BaseException:
        listener.close()
        raise
    server = _Server(app, name, registry)
    async with anyio.create_task_group() as connections:
        async with tcp, anyio.create_task_group() as accepting:
            accepting.start_soon(partial(serve_connections, tcp, server.connection,
                                         connections, server=name))  # fmt: skip
            await stopping.wait()
            accepting.cancel_scope.cancel()
        server.close_idle()
        connections.cancel_scope.deadline = anyio.current_time() + GRACE


def framing_problem(head: bytes) -> str | None:
    """Why a raw request head (request line, headers, the blank line) could be framed one
    way here and another way by a proxy in front; None if it cannot.

    Refused: a line ending that is not CRLF, an obs-fold continuation line, whitespace
    before a header's colon, Transfer-Encoding with Content-Length, Transfer-Encoding other
    than exactly one ``chunked`` (or in HTTP/1.0), more than one Content-Length, and a
    Content-Length that is not all digits.
    """
    unpaired = head.replace(b"\r\n", b"")
    if b"\n" in unpaired:
        return "a bare LF line ending; lines end with CRLF"
    if b"\r" in unpaired:
        return "a bare CR in the request head"
    request_line, *fields = head.split(b"\r\n")
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for line in fields:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            return "a folded (obs-fold) header line"
        name, _, value = line.partition(b":")
        if name != name.strip(b" \t"):
            return "whitespace before a header's colon"
        if name.lower() == b"content-length":
            lengths.append(value.strip(b" \t"))
        elif name.lower() == b"transfer-encoding":
            codings.append(value.strip(b" \t"))
    if codings and lengths:
        return "both Content-Length and Transfer-Encoding"
    if codings and (codings != [b"chunked"] or request_line.endswith(b"HTTP/1.0")):
        return 'Transfer-Encoding other than one "chunked", or in an HTTP/1.0 request'
    if len(lengths) > 1:
        return "more than one Content-Length"
    if lengths and not (lengths[0].isdigit() and lengths[0].isascii()):
        return "a Content-Length that is not a number"
    return None


class _Server:
    def __init__(self, app: ASGIApp, name: str, registry: CollectorRegistry | None) -> None:
        self._app = app
        self._name = name
        self._gone = (
            None
            if registry is None
            else Counter("warren_http_client_gone", "Requests whose client hung up before"
                         " its whole answer.", ["server"], registry=registry).labels(name)
        )  # fmt: skip
        self._closing = False
        self._idle: set[anyio.CancelScope] = set()  # connections waiting for a request

    def close_idle(self) -> None:
        """Stopping: close connections between requests, and each other after its answer."""
        self._closing = True
        for scope in self._idle:
            scope.cancel()

    async def connection(self, stream: SocketStream) -> None:
        """Serve one client. What fails here ends its connection only, logged: one client
        (or one bug its request reaches) must not end the server."""
        try:
            await self._serve(stream)
        except Exception:
            log.exception("http.connection_failed")

    def _client_gone(self, request: h11.Request) -> None:
        """A client that hangs up mid-request is the client's business, not an error of
        ours: counted and logged at DEBUG (a proxy timing out, a user closing the app)."""
        if self._gone is not None:
            self._gone.inc()
        method, target = request.method.decode("latin-1"), request.target[:200].decode("latin-1")
        log.debug("http.client_gone server=%s method=%s target=%s", self._name, method, target)

    async def _serve(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        addrs = (_address(stream, SocketAttribute.remote_address),
                 _address(stream, SocketAttribute.local_address))  # fmt: skip
        async with stream:
            while not self._closing:
                request: h11.Request | tuple[int, str] | None = None
                with anyio.CancelScope() as idle:
                    self._idle.add(idle)
                    try:
                        with anyio.move_on_after(HEAD_TIMEOUT):
                            request = await _next_request(conn, stream)
                    finally:
                        self._idle.discard(idle)
                if isinstance(request, tuple):
                    await _refuse(stream, *request)
                if not isinstance(request, h11.Request):
                    return
                exchange = _Exchange(conn, stream, request)
                if not await exchange.run(self._app, _scope(request, *addrs)):
                    self._client_gone(request)
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    await _linger(stream)
                    return
                conn.start_next_cycle()


class _Exchange:
    """One request and its response: the ASGI ``receive`` and ``send`` of one app call."""

    def __init__(self, conn: h11.Connection, stream: SocketStream, request: h11.Request):
        self._conn, self._stream, self._request = conn, stream, request
        self._start: Message | None = None
        self._responded = anyio.Event()
        self._gone = False  # the client went away, or broke the protocol mid-body
        self._body_deadline = anyio.current_time() + BODY_TIMEOUT
        self._hung_up = False  # the client went away before it had its whole answer
        # A request without a body is read to its end now (no I/O): then it is known to be
        # whole when the answer starts, and the connection stays open for the next one.
        self._empty_body = not any(
            name == b"transfer-encoding" or (name == b"content-length" and int(value))
            for name, value in request.headers
        )
        if self._empty_body:
            end = conn.next_event()
            assert isinstance(end, h11.EndOfMessage), end

    async def run(self, app: ASGIApp, scope: dict[str, Any]) -> bool:
        """Call the app; False if the client hung up before it had its whole answer (the
        app's error then is the hang-up's echo, e.g. starlette's ClientDisconnect)."""
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            if not self._gone:
                log.exception("http.app_failed method=%s target=%s",
                              scope["method"], scope["raw_path"].decode("latin-1"))  # fmt: skip
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE) and not self._gone:
            await self._error(500, "the server failed to answer")
        self._responded.set()
        return not self._hung_up

    async def receive(self) -> Message:
        if self._empty_body:
            self._empty_body = False
            return {"type": "http.request", "body": b"", "more_body": False}
        if self._conn.their_state is h11.SEND_BODY and not self._gone:
            if self._conn.they_are_waiting_for_100_continue:
                await self._send(
                    h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                )
            event = await self._next_body_event()
            if isinstance(event, h11.Data):
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            if isinstance(event, h11.EndOfMessage):
                return {"type": "http.request", "body": b"", "more_body": False}
            self._gone = True
        if not self._gone:
            await self._responded.wait()  # as ASGI asks: a disconnect once the answer is out
        return {"type": "http.disconnect"}

    async def _next_body_event(self) -> object:
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._error(exc.error_status_hint, f"a malformed body: {exc}")
                return None
            if event is not h11.NEED_DATA:
                return event
            with anyio.move_on_after(min(READ_TIMEOUT, self._body_deadline - anyio.current_time())):
                data = await _receive(self._stream)
                if not data:  # the client hung up mid-body
                    self._hung_up = True
                    return None
                self._conn.receive_data(data)
                continue
            await self._error(408, "the request body did not arrive in time")
            return None

    async def send(self, message: Message) -> None:
        if self._gone:
            return
        if message["type"] == "http.response.start":
            self._start = message  # sent with the first body part, when framing is known
            return
        if message["type"] != "http.response.body" or self._start is None:
            raise RuntimeError(f"unexpected ASGI message {message['type']!r}")
        if self._conn.our_state is h11.SEND_RESPONSE:
            headers = list(self._start.get("headers", []))
            if self._conn.their_state is not h11.DONE:  # the body is unread: no keep-alive
                headers.append((b"connection", b"close"))
            status = self._start["status"]
            await self._send(h11.Response(status_code=status, headers=headers,
                                          reason=_phrase(status)))  # fmt: skip
        body = message.get("body", b"")
        if body and self._request.method != b"HEAD":
            await self._send(h11.Data(data=body))
        if not message.get("more_body", False):
            await self._send(h11.EndOfMessage())
            self._responded.set()

    async def _error(self, status: int, why: str) -> None:
        if self._conn.our_state is h11.SEND_RESPONSE:
            body = json.dumps({"error": why}).encode() + b"\n"
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", b"%d" % len(body))]  # fmt: skip
            response = h11.Response(status_code=status, headers=headers, reason=_phrase(status))
            await self._send(response)
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        self._gone = True

    async def _send(self, event: h11.Event) -> None:
        if self._conn.our_state is h11.ERROR:
            return  # a send failed: the client is gone
        data = self._conn.send(event)
        if data and not await _send_within(self._stream, data):
            self._gone = self._hung_up = True
            self._conn.send_failed()


async def _next_request(
    conn: h11.Connection, stream: SocketStream
) -> h11.Request | tuple[int, str] | None:
    """The next request on ``conn`` once its whole head is in and passed
    ``framing_problem``; (status, why) to refuse it; None when the client is gone."""
    while True:
        buffered, closed = conn.trailing_data
        head = _head(buffered)
        if head is not None:
            if len(head) > MAX_HEAD:
                return 431, f"a request head over {MAX_HEAD:,} bytes"
            problem = framing_problem(head)
            if problem is not None:
                return 400, problem
            break
        if closed or len(buffered) > MAX_HEAD:
            break  # h11 says why
        conn.receive_data(await _receive(stream))
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return exc.error_status_hint, str(exc)
    return event if isinstance(event, h11.Request) else None


def _head(buffered: bytes) -> bytes | None:
    """The request head at the start of ``buffered``, through its blank line (CRLF or LF:
    a bare LF is found here to be refused), or None if it is not all in yet."""
    ends = [end + len(blank) for blank in (b"\n\r\n", b"\n\n")
            if (end := buffered.find(blank)) >= 0]  # fmt: skip
    return buffered[: min(ends)] if ends else None


async def _refuse(stream: SocketStream, status: int, why: str) -> None:
    log.debug("http.refused status=%d reason=%s", status, why)
    body = json.dumps({"error": why}).encode() + b"\n"
    head = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _phrase(status), len(body)))  # fmt: skip
    if await _send_within(stream, head + body):
        await _linger(stream)


async def _send_within(stream: SocketStream, data: bytes) -> bool:
    """Send ``data``; False if the client is gone, or did not take it within
    ``WRITE_TIMEOUT`` (a client that never reads must not hold its connection forever)."""
    with anyio.move_on_after(WRITE_TIMEOUT):
        try:
            await stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True
    return False


async def _linger(stream: SocketStream) -> None:
    """Half-close, and drop what the client still sends, briefly: closing with unread data
    would reset the connection before the client has read the answer."""
    with anyio.move_on_after(2.0):
        try:
            await stream.send_eof()
            while await stream.receive(_CHUNK):
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return  # (anyio's send_eof on trio lets ENOTCONN through as it is)


async def _receive(stream: SocketStream) -> bytes:
    """The next bytes from the client; b"" once it has closed or reset the connection."""
    try:
        return await stream.receive(_CHUNK)
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        return b""


def _phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _scope(request: h11.Request, client: Any, server: Any) -> dict[str, Any]:
    path, _, query = request.target.partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.http_version.decode(),
        "method": request.method.decode(),
        "scheme": "http",
        "path": unquote(path.decode("latin-1")),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": list(request.headers),
        "client": client,
        "server": server,
    }


def _address(stream: SocketStream, attribute: Any) -> tuple[str, int]:
    address = stream.extra(attribute)
    return str(address[0]), int(address[1])
