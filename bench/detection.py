"""How fast a silent partition is noticed: a publisher at heartbeat 5 behind the fault proxy,
idle or publishing, the link blackholed (no FIN, no RST) at a random moment; the time from
the cut until the publisher reports its connection lost."""

from __future__ import annotations

import random
import statistics
import uuid

import anyio
from prometheus_client import CollectorRegistry

from warren import ConnectionConfig, Metrics, Publisher, PublisherConfig, Queue, Topology
from warren.testing import AsyncToxiproxyClient, FaultProxyServer, ProxyHandle, partition

HEARTBEAT = 5
UPSTREAM = "127.0.0.1:5672"


async def _once(proxy: ProxyHandle, load: bool, rng: random.Random) -> float:
    queue = f"warren.bench.detect.{uuid.uuid4().hex[:6]}"
    config = PublisherConfig(
        connection=ConnectionConfig(
            urls=proxy.amqp_url(), heartbeat=HEARTBEAT, backoff_base=0.05, backoff_cap=0.2
        ),
        confirm_timeout=120,
    )
    topology = Topology(queues=(Queue(name=queue, durable=False, arguments={"x-expires": 60_000}),))
    async with (
        Publisher(
            config, metrics=Metrics(CollectorRegistry()), name="detect", topology=topology
        ) as pub,  # fmt: skip
        anyio.create_task_group() as tg,
    ):
        await pub.wait_connected()

        async def publishing() -> None:
            while True:  # 200 jobs/s, each confirmed while the link is up
                pub.submit({"x": 1}, routing_key=queue)
                await anyio.sleep(0.005)

        if load:
            tg.start_soon(publishing)
        await anyio.sleep(1 + rng.random() * HEARTBEAT)  # any phase of the heartbeats
        async with partition(proxy):
            cut = anyio.current_time()
            while pub.statistics().connected:  # noqa: ASYNC110 - polled, as a sampler would
                await anyio.sleep(0.01)
            noticed = anyio.current_time() - cut
        tg.cancel_scope.cancel()
        with anyio.fail_after(30):
            while not pub.statistics().connected:  # noqa: ASYNC110
                await anyio.sleep(0.05)
    return noticed


def measure(rounds: int = 3, seed: int = 7) -> dict[str, list[float]]:
    """Seconds from cut to noticed, per scenario (idle, publishing), ``rounds`` each."""

    async def run() -> dict[str, list[float]]:
        rng = random.Random(seed)
        out: dict[str, list[float]] = {"idle": [], "publishing": []}
        server = FaultProxyServer("127.0.0.1", 0)
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            client = AsyncToxiproxyClient(server.api_url)
            info = await client.create_proxy("bench-detect", UPSTREAM)
            proxy = ProxyHandle(client.sync, "bench-detect", "127.0.0.1", info.port)
            for _ in range(rounds):
                for scenario in out:
                    out[scenario].append(await _once(proxy, scenario == "publishing", rng))
                    print(f"detection {scenario:<10} {out[scenario][-1]:.2f} s", flush=True)
            tg.cancel_scope.cancel()
        return out

    return anyio.run(run)


def row(results: dict[str, list[float]]) -> str:
    parts = [f"{name}: median {statistics.median(xs):.2f} s, max {max(xs):.2f} s"
             for name, xs in results.items()]  # fmt: skip
    worst = max(max(xs) for xs in results.values())
    return (f"| silent partition noticed, heartbeat {HEARTBEAT} s ({'; '.join(parts)}) "
            f"| **{worst:.2f} s** worst | <= {HEARTBEAT + 1} s |")  # fmt: skip
