"""At scale: how fast 100,000 buffered jobs flush once the link heals."""

from __future__ import annotations

import time
import uuid

import anyio
import pika
from prometheus_client import CollectorRegistry

from warren import ConnectionConfig, Metrics, Publisher, PublisherConfig, Queue, Topology
from warren.testing import AsyncToxiproxyClient, FaultProxyServer

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def heal_flush(n: int, size: int) -> tuple[float, float]:
    """``n`` jobs buffered while the link is down; after it comes back: (seconds from the
    heal until the broker confirmed them all, jobs/s of that flush)."""
    queue = f"warren.bench.heal.{uuid.uuid4().hex[:6]}"

    async def run() -> float:
        server = FaultProxyServer("127.0.0.1", 0)
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            client = AsyncToxiproxyClient(server.api_url)
            info = await client.create_proxy("bench-heal", "127.0.0.1:5672")
            cfg = PublisherConfig(
                connection=ConnectionConfig(
                    urls=f"amqp://guest:guest@127.0.0.1:{info.port}/%2F",
                    backoff_base=0.05,
                    backoff_cap=0.2,
                ),
                buffer_size=n,
                buffer_max_bytes=1 << 31,
                flush_timeout=120,
            )
            topology = Topology(queues=(Queue(name=queue, durable=False),))
            metrics = Metrics(CollectorRegistry())
            async with Publisher(cfg, metrics=metrics, topology=topology) as pub:
                await pub.wait_connected()
                await client.set_enabled("bench-heal", False)  # closed, and refused after
                while pub.statistics().connected:  # noqa: ASYNC110 - polled
                    await anyio.sleep(0.01)
                body = b"x" * size
                for _ in range(n):
                    pub.submit(body, routing_key=queue)
                healed = time.perf_counter()
                await client.set_enabled("bench-heal", True)
                await pub.wait_flushed()
                elapsed = time.perf_counter() - healed
                assert pub.statistics().confirmed == n
            tg.cancel_scope.cancel()
        return elapsed

    try:
        elapsed = anyio.run(run)
    finally:
        conn = pika.BlockingConnection(pika.URLParameters(URL))
        conn.channel().queue_delete(queue)
        conn.close()
    return elapsed, n / elapsed
