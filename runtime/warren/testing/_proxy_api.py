"""The fault proxy server: named proxies plus a Toxiproxy-compatible HTTP API.

Implements Toxiproxy 2's API for the subset Warren needs, with its JSON shapes, status
codes and ``{"error", "status"}`` bodies (from Toxiproxy's ``api.go``): ``GET/POST
/proxies``, ``POST /populate``, ``GET/POST/PATCH/DELETE /proxies/{name}``, ``GET/POST
/proxies/{name}/toxics``, ``GET/POST/PATCH/DELETE /proxies/{name}/toxics/{toxic}``,
``POST /reset``, ``GET /version``. So Toxiproxy's own clients and scripts work against it,
and a real Toxiproxy can stand in for it.
"""

from __future__ import annotations

import json
import logging
import random
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, final

import anyio
from anyio.abc import SocketAttribute, TaskStatus

from warren._http.accept import serve_connections
from warren._http.server import HttpRequest, HttpResponse, serve_http
from warren.testing._go_json import go_type
from warren.testing._proxy import FaultProxy
from warren.testing._proxy_http import ApiError, Raw, Response, answer
from warren.testing._proxy_net import Dialer, leads_to_itself, resolve_listen, split_addr
from warren.testing._toxics import ToxicSpecError, parse_toxic, update_toxic

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anyio.abc import SocketStream, TaskGroup

log = logging.getLogger("warren.proxy")

VERSION = "2.12.0-warren"  # the Toxiproxy API version this speaks

_VERSION_TYPE = "application/json;charset=utf-8"
_PROXY_FIELDS = ("name", "listen", "upstream", "enabled")
# the Go type Toxiproxy decodes each /populate entry into, as its errors name it
_POPULATE_ENTRY = 'struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }'


def _proxy_fields(body: object, owner: str = "Proxy") -> dict[str, Any]:
    """A proxy's fields from a JSON body as Go decodes them into Toxiproxy's Proxy: keys
    matched case-insensitively, null as absent, Go's error for the earliest wrong type."""
    if not isinstance(body, dict):
        raise ApiError(f"bad request body: json: cannot unmarshal {go_type(body)} into Go"
                       " value of type toxiproxy.Proxy", 400)  # fmt: skip
    fields: dict[str, Any] = {}
    for key, value in body.items():
        name = key if key in _PROXY_FIELDS else key.lower()
        if name not in _PROXY_FIELDS or value is None:
            continue
        want = "bool" if name == "enabled" else "string"
        if not isinstance(value, bool if want == "bool" else str):
            raise ApiError(f"bad request body: json: cannot unmarshal {go_type(value)} into Go"
                           f" struct field {owner}.{name} of type {want}", 400)  # fmt: skip
        fields[name] = value
    return fields


class PopulateError(ApiError):
    """``/populate`` failed; ``made`` are the proxies it made (or kept) before that."""

    def __init__(self, message: str, status: int, made: list[FaultProxy]) -> None:
        super().__init__(message, status)
        self.made = made


async def _resolved(listen: str) -> str:
    """``listen`` as a listener there would report it, for comparing (Go's ResolveTCPAddr)."""
    try:
        return await resolve_listen(listen)
    except ValueError:
        raise ApiError(f"address {listen}: missing port in address", 500) from None
    except OSError:
        raise ApiError(f"lookup {listen}: no such host", 500) from None


async def _refuse_loop(listen: str, upstream: str) -> None:
    if await leads_to_itself(listen, upstream):
        raise ApiError(f"bad request body: upstream {upstream} is the proxy's own listen"
                       f" address {listen}: it would dial itself", 400)  # fmt: skip


def _populated(made: list[FaultProxy], error: ApiError | None = None) -> Raw:
    """``/populate``'s answer: JSON (also for an error), the proxies made, and the error's
    fields first if there is one; an empty list is ``null`` (Go's nil slice)."""
    answer: dict[str, Any] = {} if error is None else {"error": str(error), "status": error.status}
    answer["proxies"] = [p.to_json() for p in made] or None
    return Raw(json.dumps(answer, separators=(",", ":")).encode(), "application/json")


_NOT_FOUND = ("proxy not found", 404)
_TOXIC_NOT_FOUND = ("toxic not found", 404)


@final
class FaultProxyServer:
    """Proxies and their HTTP API. ``await serve()`` runs both until cancelled."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8474, *, seed: int | None = None):
        self.host = host
        self.port = port
        self.proxies: dict[str, FaultProxy] = {}
        self._rng = random.Random(seed)
        self._dialer = Dialer()  # one for all the proxies: a loop through them is seen
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
        fields = _proxy_fields(body)
        name, upstream = fields.get("name"), fields.get("upstream")
        if not name:
            raise ApiError("missing required field: name", 400)
        if not upstream:
            raise ApiError("missing required field: upstream", 400)
        if name in self.proxies:
            raise ApiError("proxy already exists", 409)
        listen = str(fields.get("listen") or "127.0.0.1:0")
        enabled = bool(fields.get("enabled", True))
        try:
            split_addr(listen)
        except ValueError:
            raise ApiError(f"listen tcp: address {listen}: missing port in address", 500) from None
        try:
            proxy = FaultProxy(name, listen, upstream, rng=self._rng, dialer=self._dialer)
        except ValueError as exc:
            raise ApiError(f"bad request body: {exc}", 400) from None
        await _refuse_loop(listen, upstream)
        if enabled:
            await self._start(proxy)
        self.proxies[name] = proxy
        return proxy

    async def _start(self, proxy: FaultProxy) -> None:
        assert self._tg is not None
        try:
            await proxy.start(self._tg)
        except OSError as exc:
            raise ApiError(str(exc), 500) from None

    def get(self, name: str) -> FaultProxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise ApiError(*_NOT_FOUND) from None

    async def update_proxy(self, name: str, body: object) -> FaultProxy:
        proxy = self.get(name)
        fields = _proxy_fields(body)
        enabled = bool(fields.get("enabled", proxy.enabled))
        try:
            upstream = str(fields.get("upstream") or proxy.upstream)
            split_addr(upstream)
            listen = str(fields.get("listen") or proxy.listen)
            if listen != proxy.listen:
                split_addr(listen)
                # the same address spelled otherwise (localhost for 127.0.0.1) is no change
                listen = await resolve_listen(listen) if proxy.enabled else listen
        except ValueError as exc:
            raise ApiError(f"bad request body: {exc}", 400) from None
        except OSError as exc:
            raise ApiError(f"listen tcp {listen}: {exc.strerror or exc}", 500) from None
        await _refuse_loop(listen, upstream)
        assert self._tg is not None
        was = proxy.listen, proxy.upstream
        try:
            if (listen, upstream) != was:
                # as Toxiproxy: a new upstream or listen address closes the live connections
                # and restarts the listener
                await proxy.move(self._tg, listen, upstream)
            if enabled and not proxy.enabled:
                await proxy.start(self._tg)
        except OSError as exc:
            if not proxy.enabled:  # a live proxy's move puts it back itself
                proxy.listen, proxy.upstream = was
            raise ApiError(str(exc), 500) from None
        if not enabled and proxy.enabled:
            await proxy.stop()
        return proxy

    async def delete_proxy(self, name: str) -> None:
        await self.get(name).stop()
        del self.proxies[name]

    async def add_toxic(self, name: str, body: object) -> dict[str, Any]:
        proxy = self.get(name)
        try:
            toxic = parse_toxic(body, taken=proxy.toxics)
        except ToxicSpecError as exc:
            raise ApiError(str(exc), exc.status) from None
        await proxy.add_toxic(toxic)
        return toxic.to_json()

    def toxic(self, name: str, toxic_name: str) -> dict[str, Any]:
        toxic = self.get(name).toxics.get(toxic_name)
        if toxic is None:
            raise ApiError(*_TOXIC_NOT_FOUND)
        return toxic.to_json()

    async def update_toxic(self, name: str, toxic_name: str, body: object) -> dict[str, Any]:
        proxy = self.get(name)
        toxic = proxy.toxics.get(toxic_name)
        if toxic is None:
            raise ApiError(*_TOXIC_NOT_FOUND)
        try:
            update_toxic(toxic, body)
        except ToxicSpecError as exc:
            raise ApiError(str(exc), exc.status) from None
        await proxy.toxic_updated(toxic)
        return toxic.to_json()

    async def remove_toxic(self, name: str, toxic_name: str) -> None:
        proxy = self.get(name)
        if toxic_name not in proxy.toxics:
            raise ApiError(*_TOXIC_NOT_FOUND)
        await proxy.remove_toxic(toxic_name)

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (Toxiproxy's ``POST /reset``). A proxy
        that cannot listen does not stop the rest (Toxiproxy stops there): the first such
        failure is raised once all the others are reset."""
        failed: list[ApiError] = []
        for proxy in list(self.proxies.values()):
            if not proxy.enabled:
                try:
                    await self._start(proxy)
                except ApiError as exc:
                    failed.append(exc)
            for toxic in proxy.ordered_toxics():  # Toxiproxy's order: upstream first
                await proxy.remove_toxic(toxic.name)
        if failed:
            raise failed[0]

    async def populate(self, body: object) -> list[FaultProxy]:
        """Create or replace a list of proxies (Toxiproxy's ``POST /populate`` and -config).

        Every entry's name and upstream are checked first (nothing is made if one lacks
        them); an existing proxy with the same listen and upstream is kept as it is, with its
        toxics and live connections; one that differs is replaced. Raises PopulateError,
        carrying the proxies made before the failure, if one cannot be made."""
        if not isinstance(body, list):
            raise PopulateError(f"bad request body: json: cannot unmarshal {go_type(body)}"
                                f" into Go value of type []{_POPULATE_ENTRY}", 400, [])  # fmt: skip
        specs = []
        for spec in body:
            if not isinstance(spec, dict):
                kind = go_type(spec)
                raise PopulateError(f"bad request body: json: cannot unmarshal {kind} into Go"
                                    f" value of type {_POPULATE_ENTRY}", 400, [])  # fmt: skip
        try:
            entries = [_proxy_fields(spec, owner="") for spec in body]
        except ApiError as exc:
            raise PopulateError(str(exc), exc.status, []) from None
        for i, fields in enumerate(entries, 1):
            for key in ("name", "upstream"):
                if not fields.get(key):
                    raise PopulateError(f"missing required field: {key} at proxy {i}", 400, [])
            listen = str(fields.get("listen") or "127.0.0.1:0")
            specs.append((fields["name"], listen, fields["upstream"], fields.get("enabled", True)))
        made: list[FaultProxy] = []
        for name, listen, upstream, enabled in specs:
            try:
                existing = self.proxies.get(name)
                was_enabled = existing is not None and existing.enabled
                if existing is not None:
                    if (await _resolved(listen), upstream) == (
                        existing.listen,
                        existing.upstream,
                    ):
                        made.append(existing)
                        continue
                    await self.delete_proxy(name)
                body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
                try:
                    made.append(await self.create_proxy(body))
                except ApiError:
                    if existing is not None:
                        await self._put_back(existing, was_enabled)
                    raise
            except ApiError as exc:
                raise PopulateError(str(exc), exc.status, made) from None
        return made

    async def _put_back(self, proxy: FaultProxy, enabled: bool) -> None:
        """A proxy its replacement could not take over from stays, with its toxics
        (Toxiproxy loses it)."""
        self.proxies[proxy.name] = proxy
        if enabled:
            with suppress(ApiError):  # its port, free a moment ago, was taken meanwhile
                await self._start(proxy)

    # -- HTTP ------------------------------------------------------------------------------

    async def _route(self, method: str, parts: list[str], body: object) -> Response:
        match method, parts:
            case "GET", ["version"]:
                return 200, Raw(f'{{"version": "{VERSION}"}}\n'.encode(), _VERSION_TYPE)
            case "POST", ["reset"]:
                await self.reset()
                return 204, None
            case "GET", ["proxies"]:
                return 200, {n: p.to_json() for n, p in self.proxies.items()}
            case "POST", ["proxies"]:
                return 201, (await self.create_proxy(body)).to_json()
            case "POST", ["populate"]:
                try:
                    made = await self.populate(body)
                except PopulateError as exc:
                    return exc.status, _populated(exc.made, exc)
                return 201, _populated(made)
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
                return 200, await self.add_toxic(name, body)
            case "GET", ["proxies", name, "toxics", toxic]:
                return 200, self.toxic(name, toxic)
            case (("POST" | "PATCH"), ["proxies", name, "toxics", toxic]):
                return 200, await self.update_toxic(name, toxic, body)
            case "DELETE", ["proxies", name, "toxics", toxic]:
                await self.remove_toxic(name, toxic)
                return 204, None
        raise ApiError("404 page not found", 404)

    async def _http(self, stream: SocketStream) -> None:
        await serve_http(stream, self._answer)

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        return await answer(request, self._route)


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
