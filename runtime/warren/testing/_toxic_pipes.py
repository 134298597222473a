"""What each toxic does to the chunks passing its stub: Toxiproxy 2's ``toxics/*.go``, line
for line where it matters (timing, what an interrupt flushes, when a stub closes).

A pipe runs until it is interrupted (returns; the stub is run again or removed) or closes
its stub (the connection then closes). Attributes are read when used, so an update takes
effect on the run that follows its interrupt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from warren.testing._toxic_stub import Chunk, Woken

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable

    from warren.testing._toxic_stub import Stub
    from warren.testing._toxics import Toxic

    Pipe = Callable[[Stub, Toxic, random.Random], Awaitable[None]]

# the input channel's capacity before a toxic (Go's BufferedToxic); others are unbuffered
BUFFER_SIZE = {"latency": 1024}


def new_state(toxic: Toxic | None) -> dict[str, int] | None:
    """Per-connection state, made when the toxic meets a connection (Go's StatefulToxic):
    it survives updates, not removal."""
    return {"sent": 0} if toxic is not None and toxic.type == "limit_data" else None


async def _next(stub: Stub) -> Chunk | None:
    """The next chunk; None when the pipe must return: interrupted, or the input ended (the
    stub is then closed, as every Go toxic does on a closed input)."""
    chunk = await stub.take()
    if chunk is Woken.INTERRUPTED:
        return None
    if chunk is None or isinstance(chunk, Woken):
        stub.close_after_input()
        return None
    return chunk


async def noop(stub: Stub, toxic: Toxic | None = None, rng: random.Random | None = None) -> None:
    while True:
        chunk = await _next(stub)
        if chunk is None:
            return
        await stub.output.send(chunk)


async def latency(stub: Stub, toxic: Toxic, rng: random.Random) -> None:
    """Each chunk leaves ``latency ± jitter`` after it *arrived*, so chunks overlap their
    waits; an interrupt sends the held chunk at once (data is never dropped)."""
    while True:
        chunk = await _next(stub)
        if chunk is None:
            return
        jitter = toxic.attr("jitter")
        delay = toxic.attr("latency") + (rng.randrange(2 * jitter) - jitter if jitter > 0 else 0)
        sleep = delay / 1000 - (anyio.current_time() - chunk.stamp)
        if await stub.pause(sleep):
            await stub.output.send(chunk)
            return
        chunk.stamp += sleep
        await stub.output.send(chunk)


async def bandwidth(stub: Stub, toxic: Toxic, rng: random.Random) -> None:
    """``rate`` KB/s (1 KB = 1,000 bytes): a chunk waits its share of time; a chunk over 100
    ms worth goes out in 100 ms pieces. Rate 0 holds everything (as Toxiproxy's loop does)."""
    debt = 0.0  # seconds owed: grows per chunk, shrinks by what was slept
    while True:
        chunk = await _next(stub)
        if chunk is None:
            return
        rate = toxic.attr("rate")
        debt = 0.0 if rate <= 0 else debt + len(chunk.data) / (rate * 1000)
        step = max(0, rate) * 100
        data = chunk.data
        while len(data) > step:
            if await stub.pause(0.1):
                await stub.output.send(Chunk(data, chunk.stamp), within=5)
                return
            if step:
                await stub.output.send(Chunk(data[:step], chunk.stamp))
            data = data[step:]
            debt -= 0.1
        start = anyio.current_time()
        if await stub.pause(debt):
            await stub.output.send(Chunk(data, chunk.stamp), within=5)
            return
        debt -= anyio.current_time() - start
        await stub.output.send(Chunk(data, chunk.stamp))


async def timeout(stub: Stub, toxic: Toxic, rng: random.Random) -> None:
    """Swallow everything; with ``timeout`` > 0, close after that long without a chunk (the
    timer starts again with each chunk and each run, i.e. after any update)."""
    seconds = toxic.attr("timeout") / 1000
    while True:
        chunk = await stub.take(within=seconds if seconds > 0 else None)
        if chunk is Woken.INTERRUPTED:
            return
        if chunk is None:
            stub.close_after_input()
            return
        if chunk is Woken.TIMED_OUT:
            stub.close()
            return


async def reset_peer(stub: Stub, toxic: Toxic, rng: random.Random) -> None:
    """Wait for the first chunk (or the end), drop it and all after, then close after
    ``timeout``; the link resets (SO_LINGER 0) instead of closing normally."""
    chunk = await stub.take()
    if chunk is Woken.INTERRUPTED:
        return
    await anyio.sleep(toxic.attr("timeout") / 1000)  # not interruptible, as in Toxiproxy
    stub.close()


async def slow_close(stub: Stub, toxic: Toxic, rng: random.Random) -> None:
    """Pass data; once the input ends, wait ``delay`` before closing."""
    while True:
        chunk = await stub.take()
        if chunk is Woken.INTERRUPTED:
            return
        if chunk is None or isinstance(chunk, Woken):
            if await stub.pause(toxic.attr("delay") / 1000):
                return
            stub.close_after_input()
            return
        await stub.output.send(chunk)


async def limit_data(stub: Stub, toxic: Toxic, rng: random.Random) -> None:
    """Pass ``bytes`` in all (counted per connection since the toxic met it), then close."""
    state = stub.state if stub.state is not None else {"sent": 0}
    remaining = toxic.attr("bytes") - state["sent"]
    while True:
        chunk = await _next(stub)
        if chunk is None:
            return
        remaining = max(0, remaining)
        if remaining < len(chunk.data):
            chunk = Chunk(chunk.data[:remaining], chunk.stamp)
        if chunk.data:
            await stub.output.send(chunk)
            state["sent"] += len(chunk.data)
        remaining = toxic.attr("bytes") - state["sent"]
        if remaining <= 0:
            stub.close()
            return


def _cuts(size: int, average: int, variation: int, rng: random.Random) -> list[tuple[int, int]]:
    """Toxiproxy's slicer: halve (± variation) until a piece is within ``variation`` of
    ``average``; the pieces (start, end), in order, covering ``size`` bytes exactly once.

    Unlike Toxiproxy's, a cut falls strictly inside its piece (a ``size_variation`` over half
    a piece put it outside: bytes sent twice) and a single byte is not cut (``average_size``
    0 halved forever); and it loops instead of recursing, so no piece size can overflow the
    stack. The random draws are Toxiproxy's, in its order (depth first, left first)."""
    pieces: list[tuple[int, int]] = []
    todo = [(0, size)]
    while todo:
        start, end = todo.pop()
        if end - start - average <= variation or end - start < 2:
            pieces.append((start, end))
            continue
        mid = start + (end - start) // 2
        if variation > 0:
            mid += rng.randrange(2 * variation) - variation
        mid = min(max(mid, start + 1), end - 1)
        todo += [(mid, end), (start, mid)]
    return pieces


async def slicer(stub: Stub, toxic: Toxic, rng: random.Random) -> None:
    """Cut each chunk into pieces of about ``average_size`` bytes, ``delay`` µs apart."""
    while True:
        chunk = await _next(stub)
        if chunk is None:
            return
        data = chunk.data
        pieces = _cuts(len(data), toxic.attr("average_size"), toxic.attr("size_variation"), rng)
        for start, end in pieces:
            await stub.output.send(Chunk(data[start:end], chunk.stamp))
            if await stub.pause(toxic.attr("delay") / 1_000_000):
                await stub.output.send(Chunk(data[end:], chunk.stamp))
                return


PIPES: dict[str, Pipe] = {
    "noop": noop,
    "latency": latency,
    "bandwidth": bandwidth,
    "timeout": timeout,
    "reset_peer": reset_peer,
    "slow_close": slow_close,
    "limit_data": limit_data,
    "slicer": slicer,
}
