"""`make chaos`: a randomized soak. Random faults every few seconds under steady load,
through the fault proxy, against the real broker; prints a summary and exits non-zero if any
accepted job was lost.

    python -m tests.chaos.soak --minutes 5 [--seed N] [--rate 200]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import anyio
import pika

from tests.chaos.harness import Chaos, wait_for
from warren.testing import ProxyHandle, ToxiproxyClient, fault_proxy_in_thread

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from warren import Publisher

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _faults(proxy: ProxyHandle, rng: random.Random) -> dict[str, Callable[[], Awaitable[None]]]:
    c = proxy.client

    def add_blackhole(stream: str) -> None:
        c.add_toxic(proxy.name, "timeout", name=f"bh_{stream}", stream=stream, timeout=0)

    async def blackhole() -> None:
        for stream in ("upstream", "downstream"):
            await anyio.to_thread.run_sync(add_blackhole, stream)
        await anyio.sleep(rng.uniform(1, 6))
        for stream in ("upstream", "downstream"):
            await anyio.to_thread.run_sync(c.remove_toxic, proxy.name, f"bh_{stream}")

    async def reset_peer() -> None:
        await anyio.to_thread.run_sync(
            lambda: c.add_toxic(proxy.name, "reset_peer", name="rst", timeout=0)
        )
        await anyio.sleep(rng.uniform(0.2, 2))
        await anyio.to_thread.run_sync(c.remove_toxic, proxy.name, "rst")

    async def link_down() -> None:
        await anyio.to_thread.run_sync(c.set_enabled, proxy.name, False)
        await anyio.sleep(rng.uniform(0.5, 4))
        await anyio.to_thread.run_sync(c.set_enabled, proxy.name, True)

    async def slow_link() -> None:
        await anyio.to_thread.run_sync(
            lambda: c.add_toxic(proxy.name, "latency", name="lat", latency=300, jitter=100)
        )
        await anyio.sleep(rng.uniform(1, 4))
        await anyio.to_thread.run_sync(c.remove_toxic, proxy.name, "lat")

    return {"blackhole": blackhole, "reset_peer": reset_peer, "link_down": link_down,
            "slow_link": slow_link}  # fmt: skip


async def soak(api_url: str, minutes: float, rate: float, seed: int) -> int:
    rng = random.Random(seed)
    client = ToxiproxyClient(api_url)
    name = f"soak-{uuid.uuid4().hex[:6]}"
    info = client.create_proxy(name, "127.0.0.1:5672")
    proxy = ProxyHandle(client, name, "127.0.0.1", info.port)
    queue = f"warren.soak.{uuid.uuid4().hex[:8]}"
    chaos = Chaos(proxy.amqp_url(), BROKER, queue, buffer_size=5000, overflow="drop-oldest")
    faults = _faults(proxy, rng)
    injected: Counter[str] = Counter()
    worst_recovery = 0.0
    deadline = time.monotonic() + minutes * 60
    pub: Publisher
    async with chaos.running(rate=rate) as pub:
        await pub.wait_connected()
        while time.monotonic() < deadline:
            await anyio.sleep(rng.uniform(2, 5))
            kind = rng.choice(list(faults))
            injected[kind] += 1
            async with chaos.fault():
                await faults[kind]()
            ended = time.monotonic()
            await wait_for(lambda: pub.statistics().connected and
                           pub.statistics().buffer_depth < 2 * rate, within=60)  # fmt: skip
            worst_recovery = max(worst_recovery, time.monotonic() - ended)
            print(f"  {kind:<10} recovered in {time.monotonic() - ended:4.1f}s  "
                  f"depth max so far {chaos.outcome.max_depth}", flush=True)  # fmt: skip
    client.delete_proxy(name)
    conn = pika.BlockingConnection(pika.URLParameters(BROKER))
    conn.channel().queue_delete(queue)
    conn.close()

    o = chaos.outcome
    s = o.stats
    lost = max(0, len(o.missing) - s.dropped["evicted"])
    print()
    print(f"soak: {minutes:g} min, seed {seed}, {rate:g} jobs/s offered, faults {dict(injected)}")
    print(f"  accepted   {len(o.accepted):>8}")
    print(f"  confirmed  {s.confirmed:>8}")
    print(f"  dropped    {sum(s.dropped.values()):>8}  {dict(s.dropped)}")
    print(f"  lost       {lost:>8}")
    print(f"  duplicates {o.duplicates:>8}  (re-sent in-flight jobs, same message_id)")
    print(f"  reconnects {s.reconnects:>8}")
    print(f"  max buffer depth      {o.max_depth}")
    print(f"  worst recovery        {worst_recovery:.1f}s (fault end -> connected, backlog < 2 s)")
    return 1 if lost else 0


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos.soak")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--verbose", action="store_true", help="show the workers' own logs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")  # fmt: skip
    if not args.verbose:
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    with fault_proxy_in_thread() as server:
        return anyio.run(soak, server.api_url, args.minutes, args.rate, args.seed)


if __name__ == "__main__":
    sys.exit(main())
