"""One fault-injecting TCP proxy: a listener, its live links, and the toxics on them.

Each accepted connection becomes a ``_Link`` to the upstream with two pumps (``upstream``:
client to server, ``downstream``: server to client). Every chunk passes through the toxics
active for its direction *at that moment*, so adding or removing a toxic acts on live
connections at once. Whether a toxic bites a link is decided once per link (``toxicity``;
Toxiproxy rolls again when a link's chain is rebuilt: see docs/testing-your-worker.md).
Disabling the proxy closes its links normally (FIN) and its listener (new connections are
refused).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute

from .._accept import serve_connections
from ._rabbit_node import free_port

if TYPE_CHECKING:
    import random

    from anyio.abc import SocketStream, TaskGroup
    from anyio.streams.stapled import MultiListener

    from ._toxics import Toxic

_PUMP_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


def split_addr(addr: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ValueError if malformed."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {addr!r} is not host:port")
    return (host.strip("[]") or "0.0.0.0"), int(port)


async def resolve_listen(addr: str) -> str:
    """``host:port`` as Toxiproxy reports a listener bound there: a host name becomes the
    address it binds (IPv4 first, as Go's listener: ``localhost`` -> ``127.0.0.1``), IPv6 in
    brackets. Raises OSError if the name does not resolve."""
    host, port = split_addr(addr)
    return join_addr(await _bind_host(host), port)


def join_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _bind_host(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    found = await anyio.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    if not found:
        raise OSError(f"no address for {host!r}")
    ipv4 = [info for info in found if info[0] == socket.AF_INET]
    return str((ipv4 or found)[0][4][0])


class FaultProxy:
    """A named proxy from ``listen`` to ``upstream`` (both ``host:port``)."""

    def __init__(self, name: str, listen: str, upstream: str, *, rng: random.Random) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        split_addr(listen)
        split_addr(upstream)
        self.enabled = False
        self.toxics: dict[str, Toxic] = {}
        self.links: set[_Link] = set()
        self._rng = rng
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.ordered_toxics()],
        }

    def ordered_toxics(self) -> list[Toxic]:
        """Upstream toxics first, then downstream, each in the order added (Toxiproxy's)."""
        toxics = list(self.toxics.values())
        return [t for t in toxics if t.stream == "upstream"] + [
            t for t in toxics if t.stream == "downstream"
        ]

    async def start(self, tg: TaskGroup) -> None:
        """Open the listener (port 0 picks one; ``listen`` then shows it) and serve."""
        if self.enabled:
            return
        host, port = split_addr(self.listen)
        host = await _bind_host(host)  # one address, reported as bound: Toxiproxy's listen
        listener = await _listen(host, port)
        actual = listener.extra(SocketAttribute.local_port)
        self.listen = join_addr(host, actual)
        self.enabled = True
        scope = anyio.CancelScope()
        stopped = anyio.Event()
        self._scope, self._stopped = scope, stopped

        async def serve() -> None:
            try:
                with scope:
                    async with listener, anyio.create_task_group() as links:
                        await serve_connections(listener, self._handle, links, server=self.name)
            finally:
                stopped.set()

        tg.start_soon(serve, name=f"warren-proxy-{self.name}")

    async def stop(self) -> None:
        """Close the listener and every link normally (FIN); return once they are closed."""
        self.enabled = False
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
            assert self._stopped is not None
            await self._stopped.wait()
        self.links.clear()

    async def _handle(self, client: SocketStream) -> None:
        host, port = split_addr(self.upstream)
        try:
            upstream = await anyio.connect_tcp(host, port)
        except OSError:
            await client.aclose()
            return
        link = _Link(self, client, upstream)
        self.links.add(link)
        try:
            await link.run()
        finally:
            self.links.discard(link)

    def add_toxic(self, toxic: Toxic) -> None:
        self.toxics[toxic.name] = toxic
        for link in list(self.links):
            link.toxic_added(toxic)

    def remove_toxic(self, name: str) -> Toxic:
        toxic = self.toxics.pop(name)
        for link in list(self.links):
            link.toxic_removed(toxic)
        return toxic

    def bites(self, toxic: Toxic) -> bool:
        return toxic.toxicity >= 1.0 or self._rng.random() < toxic.toxicity


class _Link:
    """One proxied connection."""

    def __init__(self, proxy: FaultProxy, client: SocketStream, upstream: SocketStream) -> None:
        self._proxy = proxy
        self._client = client
        self._upstream = upstream
        self._bitten: set[str] = set()
        self._timers: dict[str, anyio.CancelScope] = {}
        self._sent: dict[tuple[str, str], int] = {}  # (toxic, stream) -> bytes, for limit_data
        self._tg: TaskGroup | None = None
        self._reset = False

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for toxic in list(self._proxy.toxics.values()):
                    self.toxic_added(toxic)
                tg.start_soon(self._pump, self._client, self._upstream, "upstream")
                tg.start_soon(self._pump, self._upstream, self._client, "downstream")
        finally:
            with anyio.CancelScope(shield=True):
                if self._reset:
                    _set_linger_zero(self._client)
                    _set_linger_zero(self._upstream)
                await self._client.aclose()
                await self._upstream.aclose()

    def close(self, *, reset: bool = False) -> None:
        """End the link: FIN both ways, or RST with ``reset``."""
        self._reset = self._reset or reset
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def toxic_added(self, toxic: Toxic) -> None:
        if not self._proxy.bites(toxic):
            return
        self._bitten.add(toxic.name)
        delay_ms = toxic.attributes.get("timeout", 0)
        if toxic.type in ("timeout", "reset_peer") and (delay_ms > 0 or toxic.type == "reset_peer"):
            self._start_timer(toxic, delay_ms / 1000, reset=toxic.type == "reset_peer")

    def toxic_removed(self, toxic: Toxic) -> None:
        if toxic.name not in self._bitten:
            return
        self._bitten.discard(toxic.name)
        timer = self._timers.pop(toxic.name, None)
        if timer is not None:
            timer.cancel()
        if toxic.type == "timeout":
            self.close()  # as Toxiproxy: removing a timeout toxic closes what it held

    def _start_timer(self, toxic: Toxic, seconds: float, *, reset: bool) -> None:
        assert self._tg is not None
        scope = anyio.CancelScope()
        self._timers[toxic.name] = scope

        async def fire() -> None:
            with scope:
                await anyio.sleep(seconds)
                self.close(reset=reset)

        self._tg.start_soon(fire)

    def _active(self, stream: str) -> list[Toxic]:
        return [
            t for t in self._proxy.toxics.values() if t.stream == stream and t.name in self._bitten
        ]

    async def _pump(self, src: SocketStream, dst: SocketStream, stream: str) -> None:
        try:
            async for chunk in src:
                await self._forward(chunk, dst, stream)
        except _PUMP_ERRORS:
            pass
        for toxic in self._active(stream):
            if toxic.type == "slow_close":
                await anyio.sleep(toxic.attr("delay") / 1000)
        self.close()

    async def _forward(self, chunk: bytes, dst: SocketStream, stream: str) -> None:
        pieces = [chunk]
        rate = 0
        slice_delay = 0.0
        for toxic in self._active(stream):
            kind = toxic.type
            if kind == "timeout":
                return  # bytes vanish; the sockets stay open
            if kind == "latency":
                jitter = toxic.attr("jitter")
                delay = toxic.attr("latency") + (
                    self._proxy._rng.randint(-jitter, jitter) if jitter else 0
                )
                await anyio.sleep(max(0, delay) / 1000)
            elif kind == "bandwidth":
                rate = toxic.attr("rate")
            elif kind == "slicer":
                pieces = [p for whole in pieces for p in self._slice(whole, toxic)]
                slice_delay = toxic.attr("delay") / 1_000_000
            elif kind == "limit_data":
                limit = toxic.attr("bytes")
                key = (toxic.name, stream)
                room = max(0, limit - self._sent.get(key, 0))
                total = sum(map(len, pieces))
                if total >= room:
                    pieces = _truncate(pieces, room)
                    for piece in pieces:
                        await dst.send(piece)
                    self.close()
                    return
                self._sent[key] = self._sent.get(key, 0) + total
        if rate:
            # as Toxiproxy: at most 100 ms worth of bytes at a time, each waited for first
            # (its KB is 1,000 bytes)
            step = max(1, rate * 1000 // 10)
            pieces = [p[i : i + step] for p in pieces for i in range(0, len(p), step)]
        for piece in pieces:
            if rate:
                await anyio.sleep(len(piece) / (rate * 1000))
            await dst.send(piece)
            if slice_delay:
                await anyio.sleep(slice_delay)

    def _slice(self, data: bytes, toxic: Toxic) -> list[bytes]:
        average = toxic.attr("average_size")
        if average <= 0:
            return [data]
        variation = toxic.attr("size_variation")
        out, i = [], 0
        while i < len(data):
            size = max(
                1, average + (self._proxy._rng.randint(-variation, variation) if variation else 0)
            )
            out.append(data[i : i + size])
            i += size
        return out


async def _listen(host: str, port: int) -> MultiListener[SocketStream]:
    """Port 0 picks a free port below the ephemeral range: a client that keeps dialing a
    disabled proxy could otherwise be given the proxy's own port as its source port, connect
    to itself and keep the port from the proxy when it is enabled again."""
    if port == 0:
        try:
            return await anyio.create_tcp_listener(local_host=host, local_port=free_port(host))
        except OSError:  # taken in between: any free port will do
            pass
    return await anyio.create_tcp_listener(local_host=host, local_port=port)


def _truncate(pieces: list[bytes], room: int) -> list[bytes]:
    out = []
    for piece in pieces:
        if room <= 0:
            break
        out.append(piece[:room])
        room -= len(out[-1])
    return out


def _set_linger_zero(stream: SocketStream) -> None:
    """Make the next close send RST instead of FIN."""
    try:
        raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, anyio.TypedAttributeLookupError):
        pass
