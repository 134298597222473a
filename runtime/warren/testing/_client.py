"""A small typed client for the Toxiproxy HTTP API (Warren's fault proxy or a real one),
and the context managers tests use: ``partition()`` and ``link_down()``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio

from warren._exceptions import WarrenError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


class ToxiproxyError(WarrenError):
    """The proxy API answered with an error (``status``, and its ``error`` message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@final
@dataclass(frozen=True)
class ProxyInfo:
    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[dict[str, Any], ...]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProxyInfo:
        return cls(
            name=data["name"],
            listen=data["listen"],
            upstream=data["upstream"],
            enabled=bool(data["enabled"]),
            toxics=tuple(data.get("toxics") or ()),
        )


@final
class ToxiproxyClient:
    """Blocking client. ``AsyncToxiproxyClient`` wraps it for event loops."""

    def __init__(self, api_url: str = "http://127.0.0.1:8474", *, timeout: float = 10) -> None:
        self.api_url = api_url.rstrip("/")
        self._timeout = timeout

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("User-Agent", "warren-toxiproxy-client")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace").strip()
            raise ToxiproxyError(exc.code, message) from None
        return json.loads(raw) if raw.strip() else None

    def version(self) -> str:
        return str(self._call("GET", "/version")["version"])

    def proxies(self) -> dict[str, ProxyInfo]:
        return {n: ProxyInfo.from_json(p) for n, p in self._call("GET", "/proxies").items()}

    def create_proxy(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", *, enabled: bool = True
    ) -> ProxyInfo:
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        return ProxyInfo.from_json(self._call("POST", "/proxies", body))

    def get_proxy(self, name: str) -> ProxyInfo:
        return ProxyInfo.from_json(self._call("GET", f"/proxies/{name}"))

    def update_proxy(self, name: str, **fields: Any) -> ProxyInfo:
        return ProxyInfo.from_json(self._call("POST", f"/proxies/{name}", fields))

    def set_enabled(self, name: str, enabled: bool) -> ProxyInfo:
        return self.update_proxy(name, enabled=enabled)

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
        **attributes: int,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type, "stream": stream, "toxicity": toxicity,
                                "attributes": attributes}  # fmt: skip
        if name is not None:
            body["name"] = name
        result: dict[str, Any] = self._call("POST", f"/proxies/{proxy}/toxics", body)
        return result

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"/proxies/{proxy}/toxics")
        return result

    def update_toxic(self, proxy: str, name: str, **attributes: int) -> dict[str, Any]:
        body = {"attributes": attributes}
        result: dict[str, Any] = self._call("POST", f"/proxies/{proxy}/toxics/{name}", body)
        return result

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def reset(self) -> None:
        self._call("POST", "/reset")


@final
class AsyncToxiproxyClient:
    """The same calls, awaitable: each runs the blocking client in a worker thread."""

    def __init__(self, api_url: str = "http://127.0.0.1:8474", *, timeout: float = 10) -> None:
        self.sync = ToxiproxyClient(api_url, timeout=timeout)

    async def version(self) -> str:
        return await anyio.to_thread.run_sync(self.sync.version)

    async def create_proxy(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", *, enabled: bool = True
    ) -> ProxyInfo:
        return await anyio.to_thread.run_sync(
            lambda: self.sync.create_proxy(name, upstream, listen, enabled=enabled)
        )

    async def set_enabled(self, name: str, enabled: bool) -> ProxyInfo:
        return await anyio.to_thread.run_sync(self.sync.set_enabled, name, enabled)

    async def delete_proxy(self, name: str) -> None:
        await anyio.to_thread.run_sync(self.sync.delete_proxy, name)

    async def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
        **attributes: int,
    ) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(
            lambda: self.sync.add_toxic(
                proxy, type, name=name, stream=stream, toxicity=toxicity, **attributes
            )
        )

    async def remove_toxic(self, proxy: str, name: str) -> None:
        await anyio.to_thread.run_sync(self.sync.remove_toxic, proxy, name)

    async def reset(self) -> None:
        await anyio.to_thread.run_sync(self.sync.reset)


@final
@dataclass(frozen=True)
class ProxyHandle:
    """One proxy on a proxy server: the address to connect to, and faults to inject."""

    client: ToxiproxyClient
    name: str
    host: str
    port: int

    def amqp_url(self, user: str = "guest", password: str = "guest", vhost: str = "%2F") -> str:
        return f"amqp://{user}:{password}@{self.host}:{self.port}/{vhost}"

    @property
    def aio(self) -> AsyncToxiproxyClient:
        return AsyncToxiproxyClient(self.client.api_url)


_BLACKHOLE = ("warren_blackhole_up", "upstream"), ("warren_blackhole_down", "downstream")


def _blackhole(proxy: ProxyHandle) -> None:
    for name, stream in _BLACKHOLE:
        proxy.client.add_toxic(proxy.name, "timeout", name=name, stream=stream, timeout=0)


def _heal(proxy: ProxyHandle) -> None:
    for name, _ in _BLACKHOLE:
        proxy.client.remove_toxic(proxy.name, name)


@contextmanager
def partition_sync(proxy: ProxyHandle) -> Iterator[None]:
    """A silent partition while inside: bytes vanish both ways, no FIN, no RST (the
    ``docker network disconnect`` case). On exit the toxics go, and as in Toxiproxy the
    connections they held are closed; new connections work again."""
    _blackhole(proxy)
    try:
        yield
    finally:
        _heal(proxy)


@asynccontextmanager
async def partition(proxy: ProxyHandle) -> AsyncIterator[None]:
    """``partition_sync`` for async code."""
    await anyio.to_thread.run_sync(_blackhole, proxy)
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_heal, proxy)


@asynccontextmanager
async def link_down(proxy: ProxyHandle) -> AsyncIterator[None]:
    """The link is down while inside: connections closed (FIN), new ones refused."""
    await anyio.to_thread.run_sync(proxy.client.set_enabled, proxy.name, False)
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(proxy.client.set_enabled, proxy.name, True)
