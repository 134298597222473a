"""The fault proxy's addresses and sockets: ``host:port`` as Toxiproxy reads and reports it,
opening a proxy's listener, and dialing its upstream without ever looping into itself.

A proxy whose upstream leads back to a proxy the connection already passed (itself, or
A -> B -> A) would dial itself once per connection it accepts, until the process has no
descriptor left. The API refuses the case it can see (``leads_to_itself``); the ``Dialer``
catches every loop among one server's proxies on the first connection that comes back.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute

from warren.testing._rabbit_node import free_port

if TYPE_CHECKING:
    from anyio.abc import SocketStream
    from anyio.streams.stapled import MultiListener


def split_addr(addr: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ValueError if malformed."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {addr!r} is not host:port")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def join_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve_listen(addr: str) -> str:
    """``host:port`` as Toxiproxy reports a listener bound there: a host name becomes the
    address it binds (IPv4 first, as Go's listener: ``localhost`` -> ``127.0.0.1``), IPv6 in
    brackets. Raises OSError if the name does not resolve."""
    host, port = split_addr(addr)
    return join_addr(await _bind_host(host), port)


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


async def bind(listen: str) -> tuple[str, MultiListener[SocketStream]]:
    """Open a listener at ``listen``; returns the address bound (Toxiproxy's ``listen``: a
    port 0 becomes the port picked) and the listener.

    Raises:
        OSError: with Go's words for it (``listen tcp 127.0.0.1:80: bind: permission
            denied``, ``listen tcp: lookup nowhere: no such host``) as its only argument.
    """
    host, port = split_addr(listen)
    try:
        host = await _bind_host(host)  # one address, reported as bound: Toxiproxy's listen
    except OSError:
        raise OSError(f"listen tcp: lookup {host}: no such host") from None
    try:
        listener = await _listen(host, port)
    except OSError as exc:
        if not exc.strerror:
            raise OSError(f"listen tcp: {exc}") from None
        reason = exc.strerror[0].lower() + exc.strerror[1:]
        raise OSError(f"listen tcp {join_addr(host, port)}: bind: {reason}") from None
    return join_addr(host, listener.extra(SocketAttribute.local_port)), listener


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


async def leads_to_itself(listen: str, upstream: str) -> bool:
    """``upstream`` is an address the listener at ``listen`` accepts on (the same address, or
    a loopback one when ``listen`` is on every interface): each connection would dial the
    proxy itself. False when either does not resolve (a lookup is not refused here)."""
    listen_host, listen_port = split_addr(listen)
    upstream_host, upstream_port = split_addr(upstream)
    if listen_port != upstream_port or listen_port == 0:
        return False
    try:
        bound = ipaddress.ip_address(await _bind_host(listen_host))
        target = ipaddress.ip_address(await _bind_host(upstream_host))
    except (OSError, ValueError):
        return False
    if bound == target or target.is_unspecified:
        return True
    return bound.is_unspecified and target.is_loopback


_Address = tuple[str, int]
_Route = tuple[_Address, _Address]  # (from, to): a connection, the same seen from either end


def _address(stream: SocketStream, attribute: Any) -> _Address:
    raw = stream.extra(attribute)
    host = str(raw[0]).removeprefix("::ffff:")  # an IPv4 peer of a dual-stack listener
    return host, int(raw[1])


def _dialed(stream: SocketStream) -> _Route:
    local = _address(stream, SocketAttribute.local_address)
    return local, _address(stream, SocketAttribute.remote_address)


def _accepted(stream: SocketStream) -> _Route:
    local = _address(stream, SocketAttribute.local_address)
    return _address(stream, SocketAttribute.remote_address), local


class Dialer:
    """Dials the upstreams of one server's proxies and remembers, for each connection it
    opened, the proxies it passed, so a connection that comes back to one of them is told
    apart before it dials again.

    A connection can be accepted before the dial that opened it has returned; ``passed``
    then waits for the dials still under way to that port (never for others).
    """

    def __init__(self) -> None:
        self._opened: dict[_Route, frozenset[object]] = {}  # connection -> proxies passed
        self._routes: dict[int, _Route] = {}  # id() of an open dialed stream -> its route
        self._dialing: dict[int, int] = {}  # port -> dials under way
        self._settled: anyio.Event | None = None  # made when first waited on (in a loop)

    async def connect(self, host: str, port: int, passed: frozenset[object]) -> SocketStream:
        """Dial ``host:port`` for a connection that has ``passed`` these proxies."""
        self._dialing[port] = self._dialing.get(port, 0) + 1
        try:
            stream = await anyio.connect_tcp(host, port)
            try:
                route = _dialed(stream)
            except OSError:  # reset already: nobody will come back on it
                await anyio.aclose_forcefully(stream)
                raise
            self._opened[route] = passed
            self._routes[id(stream)] = route
            return stream
        finally:
            self._settle(port)  # with the route known, in the same step: nothing waits between

    def forget(self, stream: SocketStream) -> None:
        """``stream``, dialed here, is closing (its peer may be gone: the route is kept)."""
        route = self._routes.pop(id(stream), None)
        if route is not None:
            del self._opened[route]

    async def passed(self, accepted: SocketStream) -> frozenset[object]:
        """The proxies a connection just accepted has passed already (empty for a client's)."""
        route = _accepted(accepted)
        port = route[1][1]
        while route not in self._opened and self._dialing.get(port):
            if self._settled is None:
                self._settled = anyio.Event()
            await self._settled.wait()
        return self._opened.get(route, frozenset())

    def _settle(self, port: int) -> None:
        self._dialing[port] -= 1
        if not self._dialing[port]:
            del self._dialing[port]
        if self._settled is not None:
            self._settled.set()
            self._settled = None
