"""A TCP forwarder whose connections the test can kill abruptly (RST, no close handshake).

Enough to reproduce "the socket died" for the core tests; the full fault proxy with
Toxiproxy's API is ``runtime.testing`` (its own issue)."""

from __future__ import annotations

import socket
import struct
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import SocketStream, TaskGroup


class KillableLink:
    def __init__(self, tg: TaskGroup, upstream_port: int) -> None:
        self._tg = tg
        self.upstream_port = upstream_port
        self._pairs: list[tuple[SocketStream, SocketStream]] = []
        self.accepted = 0
        self.port = 0
        self.blackhole = False  # True: bytes vanish both ways, sockets stay open (no FIN/RST)
        self.blackhole_upstream = False  # True: only client -> broker bytes vanish

    async def _handle(self, client: SocketStream) -> None:
        self.accepted += 1
        try:
            upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
        except OSError:
            await client.aclose()
            return
        pair = (client, upstream)
        self._pairs.append(pair)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump, client, upstream, True)
            tg.start_soon(self._pump, upstream, client, False)

    async def _pump(self, src: SocketStream, dst: SocketStream, upstream: bool) -> None:
        try:
            async for chunk in src:
                if not (self.blackhole or (upstream and self.blackhole_upstream)):
                    await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            await dst.aclose()

    async def kill_all(self) -> int:
        """Reset every live connection: SO_LINGER 0 then close sends RST, no FIN."""
        killed = 0
        pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                raw: socket.socket = s.extra(anyio.abc.SocketAttribute.raw_socket)
                try:
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    continue
                await s.aclose()
                killed += 1
        return killed


@asynccontextmanager
async def killable_link(upstream_port: int = 5672) -> AsyncIterator[KillableLink]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        link = KillableLink(tg, upstream_port)
        link.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.start_soon(listener.serve, link._handle)
        try:
            yield link
        finally:
            tg.cancel_scope.cancel()
