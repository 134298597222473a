"""The fault proxy server: named proxies plus a Toxiproxy-compatible HTTP API.

Implements Toxiproxy 2's API for the subset Warren needs, with its JSON shapes, status
codes and ``{"error", "status"}`` bodies (from Toxiproxy's ``api.go``): ``GET/POST
/proxies``, ``POST /populate``, ``GET/POST/PATCH/DELETE /proxies/{name}``, ``GET/POST
/proxies/{name}/toxics``, ``GET/POST/PATCH/DELETE /proxies/{name}/toxics/{toxic}``,
``POST /reset``, ``GET /version``. So Toxiproxy's own clients and scripts work against it,
and a real Toxiproxy can stand in for it.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import secrets
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, final
from urllib.parse import unquote

import anyio
from anyio.abc import SocketAttribute, TaskStatus

from .._accept import serve_connections
from .._http11 import MAX_BODY, HttpRequest, HttpResponse, serve_http
from .._json import BadRequest, loads_strict
from ._proxy import FaultProxy, resolve_listen, split_addr
from ._toxics import ToxicSpecError, parse_toxic, update_toxic

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anyio.abc import SocketStream, TaskGroup

log = logging.getLogger("warren.proxy")

VERSION = "2.9.0-warren"  # the Toxiproxy API version this speaks

_PLAIN_TEXT = "text/plain; charset=utf-8"
_NAME = "*"  # a path segment that is a (non-empty) proxy or toxic name
# path pattern -> the methods it answers (Toxiproxy's gorilla/mux routes in api.go)
_ROUTES: dict[tuple[str, ...], frozenset[str]] = {
    ("version",): frozenset({"GET"}),
    ("reset",): frozenset({"POST"}),
    ("proxies",): frozenset({"GET", "POST"}),
    ("populate",): frozenset({"POST"}),
    ("proxies", _NAME): frozenset({"GET", "POST", "PATCH", "DELETE"}),
    ("proxies", _NAME, "toxics"): frozenset({"GET", "POST"}),
    ("proxies", _NAME, "toxics", _NAME): frozenset({"GET", "POST", "PATCH", "DELETE"}),
}


def _allowed(parts: list[str]) -> frozenset[str] | None:
    """The methods a path answers, or None for a path Toxiproxy does not know."""
    for pattern, methods in _ROUTES.items():
        if len(pattern) == len(parts) and all(
            want == got or (want == _NAME and got) for want, got in zip(pattern, parts, strict=True)
        ):
            return methods
    return None


def _request_id() -> str:
    """A 20-character id per answered request, as Toxiproxy's ``X-Toxiproxy-Request-Id``."""
    return base64.b32hexencode(secrets.token_bytes(12)).decode().rstrip("=").lower()


def _go_type(value: object) -> str:
    """How Go's encoding/json names a JSON value's type in its errors."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "array" if isinstance(value, list) else "object"


def _enabled(body: dict[str, Any], default: bool) -> bool:
    """``enabled`` as Toxiproxy decodes it: a JSON bool; null or absent keeps ``default``."""
    value = body.get("enabled")
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(f"bad request body: json: cannot unmarshal {_go_type(value)} into Go"
                       " struct field Proxy.enabled of type bool", 400)  # fmt: skip
    return value


class ApiError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


_NOT_FOUND = ("proxy not found", 404)
_TOXIC_NOT_FOUND = ("toxic not found", 404)

Response = tuple[int, Any]


@final
class FaultProxyServer:
    """Proxies and their HTTP API. ``await serve()`` runs both until cancelled."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8474, *, seed: int | None = None):
        self.host = host
        self.port = port
        self.proxies: dict[str, FaultProxy] = {}
        self._rng = random.Random(seed)
        self._tg: TaskGroup | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        self.port = listener.extra(SocketAttribute.local_port)
        try:
            async with listener, anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                log.info("proxy.api listening=%s", self.api_url)
                await serve_connections(listener, self._http, tg, server="proxy-api")
        finally:
            with anyio.CancelScope(shield=True):
                for proxy in self.proxies.values():
                    await proxy.stop()

    # -- operations (the API calls these; in-process users may too) -----------------------

    async def create_proxy(self, body: object) -> FaultProxy:
        if not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        name, upstream = body.get("name"), body.get("upstream")
        if not isinstance(name, str) or not name:
            raise ApiError("missing required field: name", 400)
        if not isinstance(upstream, str) or not upstream:
            raise ApiError("missing required field: upstream", 400)
        if name in self.proxies:
            raise ApiError("proxy already exists", 409)
        listen = body.get("listen") or "127.0.0.1:0"
        enabled = _enabled(body, True)
        try:
            proxy = FaultProxy(name, str(listen), upstream, rng=self._rng)
        except ValueError as exc:
            raise ApiError(f"bad request body: {exc}", 400) from None
        if enabled:
            await self._start(proxy)
        self.proxies[name] = proxy
        return proxy

    async def _start(self, proxy: FaultProxy) -> None:
        assert self._tg is not None
        try:
            await proxy.start(self._tg)
        except OSError as exc:
            raise ApiError(f"listen tcp {proxy.listen}: {exc.strerror or exc}", 500) from None

    def get(self, name: str) -> FaultProxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise ApiError(*_NOT_FOUND) from None

    async def update_proxy(self, name: str, body: object) -> FaultProxy:
        proxy = self.get(name)
        if not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        enabled = _enabled(body, proxy.enabled)
        try:
            upstream = str(body.get("upstream", proxy.upstream))
            split_addr(upstream)
            listen = str(body.get("listen", proxy.listen))
            if listen != proxy.listen:
                split_addr(listen)
                # the same address spelled otherwise (localhost for 127.0.0.1) is no change
                listen = await resolve_listen(listen) if proxy.enabled else listen
        except ValueError as exc:
            raise ApiError(f"bad request body: {exc}", 400) from None
        except OSError as exc:
            raise ApiError(f"listen tcp {listen}: {exc.strerror or exc}", 500) from None
        if (upstream, listen) != (proxy.upstream, proxy.listen):
            # as Toxiproxy: a new upstream or listen address closes the live connections
            # and restarts the listener
            was_enabled = proxy.enabled
            await proxy.stop()
            proxy.upstream, proxy.listen = upstream, listen
            if was_enabled:
                await self._start(proxy)
        if enabled and not proxy.enabled:
            await self._start(proxy)
        elif not enabled and proxy.enabled:
            await proxy.stop()
        return proxy

    async def delete_proxy(self, name: str) -> None:
        await self.get(name).stop()
        del self.proxies[name]

    def add_toxic(self, name: str, body: object) -> dict[str, Any]:
        proxy = self.get(name)
        try:
            toxic = parse_toxic(body)
        except ToxicSpecError as exc:
            raise ApiError(str(exc), exc.status) from None
        if toxic.name in proxy.toxics:
            raise ApiError("toxic already exists", 409)
        proxy.add_toxic(toxic)
        return toxic.to_json()

    def toxic(self, name: str, toxic_name: str) -> dict[str, Any]:
        toxic = self.get(name).toxics.get(toxic_name)
        if toxic is None:
            raise ApiError(*_TOXIC_NOT_FOUND)
        return toxic.to_json()

    def update_toxic(self, name: str, toxic_name: str, body: object) -> dict[str, Any]:
        toxic = self.get(name).toxics.get(toxic_name)
        if toxic is None:
            raise ApiError(*_TOXIC_NOT_FOUND)
        try:
            update_toxic(toxic, body)
        except ToxicSpecError as exc:
            raise ApiError(str(exc), exc.status) from None
        return toxic.to_json()

    def remove_toxic(self, name: str, toxic_name: str) -> None:
        proxy = self.get(name)
        if toxic_name not in proxy.toxics:
            raise ApiError(*_TOXIC_NOT_FOUND)
        proxy.remove_toxic(toxic_name)

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (Toxiproxy's ``POST /reset``)."""
        for proxy in self.proxies.values():
            if not proxy.enabled:
                await self._start(proxy)
            for toxic_name in list(proxy.toxics):
                proxy.remove_toxic(toxic_name)

    async def populate(self, body: object) -> list[FaultProxy]:
        """Create or replace a list of proxies (Toxiproxy's ``POST /populate``, -config)."""
        if not isinstance(body, list):
            raise ApiError("bad request body: expected a JSON array of proxies", 400)
        made = []
        for spec in body:
            if isinstance(spec, dict) and spec.get("name") in self.proxies:
                await self.delete_proxy(str(spec["name"]))
            made.append(await self.create_proxy(spec))
        return made

    # -- HTTP ------------------------------------------------------------------------------

    async def _route(self, method: str, parts: list[str], body: object) -> Response:
        match method, parts:
            case "GET", ["version"]:
                return 200, {"version": VERSION}
            case "POST", ["reset"]:
                await self.reset()
                return 204, None
            case "GET", ["proxies"]:
                return 200, {n: p.to_json() for n, p in self.proxies.items()}
            case "POST", ["proxies"]:
                return 201, (await self.create_proxy(body)).to_json()
            case "POST", ["populate"]:
                return 201, {"proxies": [p.to_json() for p in await self.populate(body)]}
            case "GET", ["proxies", name]:
                return 200, self.get(name).to_json()
            case (("POST" | "PATCH"), ["proxies", name]):
                return 200, (await self.update_proxy(name, body)).to_json()
            case "DELETE", ["proxies", name]:
                await self.delete_proxy(name)
                return 204, None
            case "GET", ["proxies", name, "toxics"]:
                return 200, [t.to_json() for t in self.get(name).ordered_toxics()]
            case "POST", ["proxies", name, "toxics"]:
                return 200, self.add_toxic(name, body)
            case "GET", ["proxies", name, "toxics", toxic]:
                return 200, self.toxic(name, toxic)
            case (("POST" | "PATCH"), ["proxies", name, "toxics", toxic]):
                return 200, self.update_toxic(name, toxic, body)
            case "DELETE", ["proxies", name, "toxics", toxic]:
                self.remove_toxic(name, toxic)
                return 204, None
        raise ApiError("404 page not found", 404)

    async def _http(self, stream: SocketStream) -> None:
        await serve_http(stream, self._answer)

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        """Answer as Toxiproxy's API does: 404 (plain text) for a path it does not know, 405
        (empty) for a method a known path does not take, then the route; its errors are
        JSON sent as text/plain with a newline (Go's ``http.Error``), its results compact
        JSON, each with an ``X-Toxiproxy-Request-Id``."""
        request_id = (("x-toxiproxy-request-id", _request_id()),)
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            # Toxiproxy's browser guard: a web page could drive a local proxy API with a
            # cross-site text/plain POST (no preflight), e.g. to open a proxy to anywhere.
            # (Toxiproxy checks matched paths only; here every path: nothing to gain there.)
            return HttpResponse(403, b"User agent not allowed\n", _PLAIN_TEXT, request_id)
        parts = [unquote(p) for p in request.target.split("?", 1)[0].split("/")[1:]]
        allowed = _allowed(parts)
        if allowed is None:
            return HttpResponse(404, b"404 page not found\n", _PLAIN_TEXT)
        if request.method not in allowed:
            return HttpResponse(405, b"", None)
        status, payload = await self._answer_json(request.method, parts, request.body)
        if status >= 400:
            body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
            return HttpResponse(status, body, _PLAIN_TEXT, request_id)
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        return HttpResponse(status, body, "application/json", request_id)

    async def _answer_json(self, method: str, parts: list[str], body: bytes) -> Response:
        try:
            parsed: object = loads_strict(body, max_bytes=MAX_BODY) if body.strip() else {}
        except BadRequest as exc:
            return exc.status, {"error": f"bad request body: {exc}", "status": exc.status}
        try:
            return await self._route(method, parts, parsed)
        except ApiError as exc:
            return exc.status, {"error": str(exc), "status": exc.status}
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # a field of the wrong type deep in a toxic's attributes: the client's mistake
            return 400, {"error": f"bad request body: {type(exc).__name__}: {exc}"[:300],
                         "status": 400}  # fmt: skip


@contextmanager
def run_in_thread(
    host: str = "127.0.0.1", port: int = 0, *, seed: int | None = None
) -> Iterator[FaultProxyServer]:
    """Run a FaultProxyServer in a background thread with its own event loop.

    For sync code and for tests on any backend: the proxy does not share the test's loop.
    """
    server = FaultProxyServer(host, port, seed=seed)
    scopes: list[anyio.CancelScope] = []

    async def run(*, task_status: TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await server.serve(task_status=task_status)

    with anyio.from_thread.start_blocking_portal() as portal:
        future, _ = portal.start_task(run)
        try:
            yield server
        finally:
            portal.call(scopes[0].cancel)
            future.result(timeout=30)
