"""One fault-injecting TCP proxy: a listener, its live links, and the toxics on them.

Each accepted connection becomes a ``_Link`` to the upstream with two directions
(``upstream``: client to server, ``downstream``: server to client), each a reader, a chain
of stubs (a noop first, then the direction's toxics in the order added) and a writer, as in
Toxiproxy's ``link.go``. Adding, updating or removing a toxic acts on live connections at
once, through the same interrupt-and-rerun steps Toxiproxy takes (so toxicity is rolled
again, pending latency is flushed, a timeout's timer restarts, exactly where it does there).
Disabling the proxy closes its links normally (FIN) and its listener (new connections are
refused). An EOF is passed on as one (a half-close): the other direction flows until it
ends too, so a client that shuts its sending side after a request still gets the reply.
"""

from __future__ import annotations

import logging
import socket
import struct
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute

from warren._http.accept import serve_connections
from warren.testing._proxy_net import Dialer, bind, split_addr
from warren.testing._toxic_pipes import BUFFER_SIZE, PIPES, new_state, noop
from warren.testing._toxic_stub import Chan, Chunk, Pulse, Stub

if TYPE_CHECKING:
    import random

    from anyio.abc import SocketStream, TaskGroup
    from anyio.streams.stapled import MultiListener

    from warren.testing._toxics import Stream, Toxic

log = logging.getLogger("warren.proxy")

_PUMP_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class FaultProxy:
    """A named proxy from ``listen`` to ``upstream`` (both ``host:port``)."""

    def __init__(
        self,
        name: str,
        listen: str,
        upstream: str,
        *,
        rng: random.Random,
        dialer: Dialer | None = None,
    ) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        split_addr(listen)
        split_addr(upstream)
        self.enabled = False
        self.toxics: dict[str, Toxic] = {}
        # per direction, in the order added (Toxiproxy's chain, without its leading noop)
        self.chains: dict[Stream, list[Toxic]] = {"upstream": [], "downstream": []}
        self.links: set[_Link] = set()
        self._rng = rng
        self.dialer = dialer or Dialer()  # the server's: it sees loops through its proxies
        self._lock = anyio.Lock()  # one toxic change at a time (Toxiproxy's collection lock)
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "Logger": {},  # Toxiproxy shows its Proxy struct's logger field, as an empty object
            "toxics": [t.to_json() for t in self.ordered_toxics()],
        }

    def ordered_toxics(self) -> list[Toxic]:
        """Upstream toxics first, then downstream, each in the order added (Toxiproxy's)."""
        return self.chains["upstream"] + self.chains["downstream"]

    async def start(self, tg: TaskGroup) -> None:
        """Open the listener (port 0 picks one; ``listen`` then shows it) and serve.

        Raises:
            OSError: the listener cannot open (Go's words); the proxy is left as it was.
        """
        if self.enabled:
            return
        self.listen, listener = await bind(self.listen)
        self._serve(tg, listener)

    async def move(self, tg: TaskGroup, listen: str, upstream: str) -> None:
        """New addresses. As Toxiproxy, a live proxy closes its connections and listens
        again; unlike it, if the new address cannot listen, the proxy is left as it was.

        Raises:
            OSError: the new listener cannot open (Go's words).
        """
        if not self.enabled:
            self.listen, self.upstream = listen, upstream
            return
        if split_addr(listen)[1] != split_addr(self.listen)[1]:
            bound, listener = await bind(listen)  # first, so a failure changes nothing
            await self.stop()
        else:  # the same port: our own listener may be in the way, so it goes first
            await self.stop()
            try:
                bound, listener = await bind(listen)
            except OSError:
                await self.start(tg)  # back where it was: the port was ours a moment ago
                raise
        self.listen, self.upstream = bound, upstream
        self._serve(tg, listener)

    def _serve(self, tg: TaskGroup, listener: MultiListener[SocketStream]) -> None:
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
        upstream: SocketStream | None = None
        try:
            passed = await self.dialer.passed(client)
            if self in passed:
                # the upstream leads back here: dialing again would do so forever, one more
                # pair of descriptors each time; closing this one unwinds the whole loop
                log.warning("proxy.loop proxy=%s upstream=%s", self.name, self.upstream)
                return
            host, port = split_addr(self.upstream)
            with suppress(OSError):
                upstream = await self.dialer.connect(host, port, passed | {self})
        finally:
            if upstream is None:
                await anyio.aclose_forcefully(client)
        if upstream is not None:
            await _Link(self, client, upstream).run()

    def wrapper(self, stream: Stream, index: int) -> Toxic | None:
        """The toxic at ``index`` of a direction's stubs (0: the leading noop, None)."""
        return self.chains[stream][index - 1] if index else None

    def run_stub(self, tg: TaskGroup, stub: Stub, toxic: Toxic | None) -> None:
        """Run ``toxic`` on ``stub``, or a noop if its toxicity roll says so (rolled on every
        run, as Toxiproxy's ToxicStub.Run)."""

        async def run() -> None:
            stub.running(True)
            try:
                if toxic is not None and self._rng.random() < toxic.toxicity:
                    await PIPES[toxic.type](stub, toxic, self._rng)
                else:
                    await noop(stub)
            finally:
                stub.running(False)

        tg.start_soon(run)

    async def _each_link(self, stream: Stream, change: str, toxic: Toxic, index: int) -> None:
        async with anyio.create_task_group() as tg:
            for link in list(self.links):
                tg.start_soon(getattr(link.directions[stream], change), toxic, index)

    async def add_toxic(self, toxic: Toxic) -> None:
        """Append ``toxic`` to its direction's chain, on every live connection too."""
        async with self._lock:
            chain = self.chains[toxic.stream]
            chain.append(toxic)
            self.toxics[toxic.name] = toxic
            await self._each_link(toxic.stream, "add", toxic, len(chain))

    async def toxic_updated(self, toxic: Toxic) -> None:
        """Run ``toxic`` again on every live connection, with its new attributes."""
        async with self._lock:
            index = self.chains[toxic.stream].index(toxic) + 1
            await self._each_link(toxic.stream, "update", toxic, index)

    async def remove_toxic(self, name: str) -> Toxic:
        async with self._lock:
            toxic = self.toxics.pop(name)
            chain = self.chains[toxic.stream]
            index = chain.index(toxic) + 1
            chain.remove(toxic)
            await self._each_link(toxic.stream, "remove", toxic, index)
            return toxic


class _Link:
    """One proxied connection: two directions over the same two sockets."""

    def __init__(self, proxy: FaultProxy, client: SocketStream, upstream: SocketStream) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.directions: dict[Stream, _Direction] = {}

    async def run(self) -> None:
        proxy = self.proxy
        try:
            async with anyio.create_task_group() as tg:
                if any(t.type == "reset_peer" for t in proxy.toxics.values()):
                    self.reset_on_close()  # as Toxiproxy: set when the link starts
                up = _Direction(self, tg, "upstream", self.client, self.upstream)
                down = _Direction(self, tg, "downstream", self.upstream, self.client)
                self.directions = {"upstream": up, "downstream": down}
                proxy.links.add(self)
                await up.ended.wait()
                await down.ended.wait()
                tg.cancel_scope.cancel()  # stubs left blocked upstream of a closed stub
        finally:
            proxy.links.discard(self)
            for direction in self.directions.values():
                direction.pulse.stop()
            proxy.dialer.forget(self.upstream)
            with anyio.CancelScope(shield=True):
                await self.client.aclose()
                await self.upstream.aclose()

    def reset_on_close(self) -> None:
        """Make both sockets' close send RST instead of FIN (SO_LINGER 0)."""
        _set_linger_zero(self.client)
        _set_linger_zero(self.upstream)


class _Direction:
    """One direction of a link: reader -> stubs (noop, then the toxics) -> writer, as
    Toxiproxy's ToxicLink, with its Add/Update/RemoveToxic steps."""

    def __init__(
        self, link: _Link, tg: TaskGroup, stream: Stream, src: SocketStream, dst: SocketStream
    ) -> None:
        self._link = link
        self._proxy = link.proxy
        self._tg = tg
        self._stream: Stream = stream
        self.pulse = Pulse()
        self.ended = anyio.Event()
        wrappers = [None, *self._proxy.chains[stream]]
        self._input = last = Chan(self.pulse, 0)
        self.stubs: list[Stub] = []
        for i, toxic in enumerate(wrappers):
            after = wrappers[i + 1] if i + 1 < len(wrappers) else None
            nxt = Chan(self.pulse, BUFFER_SIZE.get(after.type, 0) if after else 0)
            stub = Stub(self.pulse, last, nxt)
            stub.state = new_state(toxic)
            self.stubs.append(stub)
            last = nxt
        self._output = last
        tg.start_soon(self._read, src)
        for stub, toxic in zip(self.stubs, wrappers, strict=True):
            self._run(stub, toxic)
        tg.start_soon(self._write, dst)

    async def _read(self, src: SocketStream) -> None:
        try:
            async for data in src:
                await self._input.send(Chunk(data, anyio.current_time()))
        except _PUMP_ERRORS:
            self._input.close()
        else:
            self._input.close(eof=True)

    async def _write(self, dst: SocketStream) -> None:
        half_closed = False
        try:
            while (chunk := await self._output.take()) is not None:
                if chunk.data:
                    await dst.send(chunk.data)
            if self._output.eof:
                # the sender's EOF came through the chain: pass it on, and let the other
                # direction run until it ends too (the reply to a half-closed request)
                await dst.send_eof()
                half_closed = True
        except _PUMP_ERRORS:
            pass
        finally:
            if not half_closed:
                # closing one socket ends the other direction's reader: the link drains,
                # then closes the other socket too (Toxiproxy's ToxicLink.write)
                with anyio.CancelScope(shield=True):
                    await dst.aclose()
            self.ended.set()

    async def add(self, toxic: Toxic, index: int) -> None:
        last = self.stubs[-1]
        new = Stub(self.pulse, Chan(self.pulse, BUFFER_SIZE.get(toxic.type, 0)), last.output)
        self.stubs.append(new)
        if await last.interrupt():
            last.output = new.input
            new.state = new_state(toxic)
            if toxic.type == "reset_peer":
                # Toxiproxy sets SO_LINGER only on links opened while the toxic exists (a
                # live link closes with FIN); Warren resets, as the toxic's name says
                self._link.reset_on_close()
            self._run(new, toxic)
            self._run(last, self._proxy.wrapper(self._stream, index - 1))
        else:
            new.output = new.input  # the link is closing: close the new stub's end too
            new.close()

    async def update(self, toxic: Toxic, index: int) -> None:
        stub = self.stubs[index]
        if await stub.interrupt():
            self._run(stub, toxic)

    async def remove(self, toxic: Toxic, index: int) -> None:
        """Take the stub out of the chain, passing on what it held (without its effect)."""
        stub = self.stubs[index]
        if not await stub.interrupt():
            return
        if toxic.type == "timeout":
            stub.close()  # as Toxiproxy's TimeoutToxic.Cleanup: what it held closes
            return
        before = self.stubs[index - 1]
        outcome: list[bool] = []

        async def stop_before() -> None:
            outcome.append(await before.interrupt())
            self.pulse.fire()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_before)
            # pass on what the stub before still sends while it reaches its interrupt
            while not (outcome and outcome[0]):
                if stub.input.ready():
                    chunk = stub.input.take_nowait()
                    if chunk is None:
                        stub.close_after_input()
                        return
                    await stub.output.send(chunk, within=5)
                elif self.pulse.dead:
                    return
                else:
                    await self.pulse.wait()
        while stub.input.buffered():
            chunk = stub.input.take_nowait()
            assert chunk is not None
            await stub.output.send(chunk, within=5)
        before.output = stub.output
        del self.stubs[index]
        self._run(before, self._proxy.wrapper(self._stream, index - 1))

    def _run(self, stub: Stub, toxic: Toxic | None) -> None:
        if not self.pulse.dead:  # else the link has ended and its task group with it
            self._proxy.run_stub(self._tg, stub, toxic)


def _set_linger_zero(stream: SocketStream) -> None:
    """Make the next close send RST instead of FIN."""
    try:
        raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, anyio.TypedAttributeLookupError):
        pass
