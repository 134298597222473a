"""select() overhead per item vs a bare receive(), on both backends."""

from __future__ import annotations

import math
import time
from typing import Any

import anyio

from warren import Received, select

N = 200_000


async def _bare() -> float:
    tx, rx = anyio.create_memory_object_stream[int](math.inf)
    with tx, rx:
        for i in range(N):
            tx.send_nowait(i)
        start = time.perf_counter()
        for _ in range(N):
            await rx.receive()
        return (time.perf_counter() - start) / N * 1e9


async def _select() -> float:
    tx, rx = anyio.create_memory_object_stream[int](math.inf)
    etx, erx = anyio.create_memory_object_stream[Any](math.inf)
    with tx, rx, etx, erx:
        for i in range(N):
            tx.send_nowait(i)
        start = time.perf_counter()
        for _ in range(N):
            result = await select(jobs=rx, events=erx)
            assert isinstance(result, Received)
        return (time.perf_counter() - start) / N * 1e9


def measure() -> dict[str, tuple[float, float]]:
    """backend -> (bare ns/item, select ns/item), best of 3 each."""
    out = {}
    for backend in ("asyncio", "trio"):
        bare = min(anyio.run(_bare, backend=backend) for _ in range(3))
        sel = min(anyio.run(_select, backend=backend) for _ in range(3))
        out[backend] = (bare, sel)
    return out
