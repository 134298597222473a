"""Toxiproxy's toxic chain, in anyio: chunks, channels and the stubs toxics run on.

Toxiproxy runs every toxic of a connection's direction as a goroutine between two Go
channels (``toxics/toxic.go``, ``link.go``): the reader puts timestamped chunks in, each
toxic passes them on, the writer takes them out. Adding, updating or removing a toxic
*interrupts* the stubs it touches and runs them again. Timing (latency measured from each
chunk's arrival), back-pressure (unbuffered channels), what an interrupt flushes and when
toxicity is rolled all follow from that structure, so Warren keeps the structure.

Go's ``select`` is rendered with one ``Pulse`` per direction: every change (a chunk put or
taken, a channel closed, an interrupt asked or taken, a run ended) wakes the direction's few
waiting tasks, which re-check what they wait for. Nothing is ever cancelled mid-hand-off,
so no chunk can be lost to a race (STYLE.md 8).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import anyio


@dataclass(slots=True)
class Chunk:
    """Bytes read from a socket, stamped with when they were read (Go's StreamChunk)."""

    data: bytes
    stamp: float  # anyio.current_time()


class Woken(enum.Enum):
    """Why a stub's wait ended without a chunk."""

    INTERRUPTED = "interrupted"
    TIMED_OUT = "timed out"


class Pulse:
    """Wakes every task waiting in one direction of a link when its state changes."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.dead = False  # the link has ended: nothing will change any more

    def fire(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    def stop(self) -> None:
        self.dead = True
        self.fire()

    async def wait(self, deadline: float | None = None) -> None:
        """Until the next change, or ``deadline`` (anyio.current_time()) if given."""
        if deadline is None:
            await self._event.wait()
            return
        with anyio.move_on_after(deadline - anyio.current_time()):
            await self._event.wait()


class Chan:
    """A Go channel of chunks: FIFO, ``capacity`` buffered (0: a send waits until its chunk is
    taken), closable; a closed channel gives its buffered chunks, then None. ``eof`` tells a
    close that passes on the sender's EOF (a half-close) from one that ends the connection."""

    def __init__(self, pulse: Pulse, capacity: int) -> None:
        self._pulse = pulse
        self._items: deque[Chunk] = deque()
        self._capacity = capacity
        self._put = 0
        self._taken = 0
        self.closed = False
        self.eof = False

    def ready(self) -> bool:
        """A take would not block."""
        return bool(self._items) or self.closed

    def buffered(self) -> int:
        return len(self._items)

    def take_nowait(self) -> Chunk | None:
        """The next chunk, or None if the channel is closed and empty (call when ready())."""
        if not self._items:
            return None
        self._taken += 1
        self._pulse.fire()
        return self._items.popleft()

    async def take(self) -> Chunk | None:
        while not self.ready():
            if self._pulse.dead:
                return None
            await self._pulse.wait()
        return self.take_nowait()

    async def send(self, chunk: Chunk, *, within: float | None = None) -> bool:
        """Put ``chunk``; wait while more than ``capacity`` chunks up to it are untaken.

        Returns False if ``within`` seconds passed first or the link ended; the chunk stays
        queued either way (Go's timed-out WriteOutput drops it: delivered late beats lost)."""
        if self.closed:
            return False  # Go would panic; the chain never sends on a closed channel
        self._items.append(chunk)
        self._put += 1
        mine = self._put
        self._pulse.fire()
        deadline = None if within is None else anyio.current_time() + within
        while mine - self._taken > self._capacity and not self.closed:
            if self._pulse.dead or (deadline is not None and anyio.current_time() >= deadline):
                return False
            await self._pulse.wait(deadline)
        return True

    def close(self, *, eof: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.eof = eof
            self._pulse.fire()


class Stub:
    """Where one toxic runs for one direction of one connection (Go's ToxicStub)."""

    def __init__(self, pulse: Pulse, input: Chan, output: Chan) -> None:
        self.input = input
        self.output = output
        self.state: dict[str, int] | None = None  # per-connection toxic state (limit_data)
        self._pulse = pulse
        self._closed = False
        self._asked = False  # an interrupt waits to be taken
        self._running = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, *, eof: bool = False) -> None:
        """End this stub and close its output: the chain after it drains and the writer
        closes its socket (Go's ToxicStub.Close); with ``eof`` (the input ended: the sender
        half-closed), the writer only shuts its socket's sending side."""
        if not self._closed:
            self._closed = True
            self.output.close(eof=eof)
            self._pulse.fire()

    def close_after_input(self) -> None:
        """The input has ended: close, passing its EOF on if it was one."""
        self.close(eof=self.input.eof)

    def running(self, flag: bool) -> None:
        self._running = flag
        self._pulse.fire()

    async def interrupt(self) -> bool:
        """Stop the toxic running here once it reaches a point where it can be interrupted;
        True when it has stopped, False if the stub is (or becomes) closed first."""
        if self._gone():
            return False
        self._asked = True
        self._pulse.fire()
        while self._asked:
            if self._gone():
                self._asked = False
                return False
            await self._pulse.wait()
        while self._running and not self._pulse.dead:
            await self._pulse.wait()
        return not self._pulse.dead

    def _gone(self) -> bool:
        return self._closed or self._pulse.dead

    def interrupted(self) -> bool:
        """Take a pending interrupt (the toxic must then return)."""
        if not self._asked:
            return False
        self._asked = False
        self._pulse.fire()
        return True

    async def take(self, within: float | None = None) -> Chunk | Woken | None:
        """Go's ``select { <-Interrupt; c := <-Input [; <-time.After(within)] }``: the next
        chunk, None once the input is closed, or why the wait ended."""
        deadline = None if within is None else anyio.current_time() + within
        while True:
            if self.interrupted():
                return Woken.INTERRUPTED
            if self.input.ready():
                return self.input.take_nowait()
            if self._pulse.dead:
                return None
            if deadline is not None and anyio.current_time() >= deadline:
                return Woken.TIMED_OUT
            await self._pulse.wait(deadline)

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless interrupted first (then True)."""
        deadline = anyio.current_time() + seconds
        while True:
            if self.interrupted():
                return True
            if anyio.current_time() >= deadline or self._pulse.dead:
                return False
            await self._pulse.wait(deadline)
