"""Memory per buffered job while the broker is unreachable."""

from __future__ import annotations

import gc
import socket
import tracemalloc

import anyio
from prometheus_client import CollectorRegistry

from warren import ConnectionConfig, Metrics, Publisher, PublisherConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(n: int, size: int) -> float:
    """Bytes per job: tracemalloc delta of ``n`` buffered jobs / n."""

    async def run() -> float:
        url = f"amqp://guest:guest@127.0.0.1:{_free_port()}/%2F"
        cfg = PublisherConfig(
            connection=ConnectionConfig(urls=url),
            buffer_size=n,
            buffer_max_bytes=1 << 31,
            flush_timeout=0,
        )
        async with Publisher(cfg, metrics=Metrics(CollectorRegistry())) as pub:
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                # a distinct payload per job, as real jobs are
                pub.submit(i.to_bytes(8, "big") * (size // 8), routing_key="bench")
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            assert pub.statistics().buffer_depth == n
        return (after - before) / n

    return anyio.run(run)
