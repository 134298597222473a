"""demo-publisher: push a few thousand jobs through a Publisher and report what the broker
confirmed. The smallest end-to-end run of Warren against a real broker (``make demo``)."""

from __future__ import annotations

import time

import anyio

from warren import ConfigError, Publisher, Queue, Service, ServiceContext, Setting, Topology

QUEUE = "warren.demo"
# A bounded demo queue: repeated demos must not fill the broker's disk.
TOPOLOGY = Topology(queues=(Queue(name=QUEUE, arguments={"x-max-length": 100_000}),))


def _jobs_setting(ctx: ServiceContext) -> int:
    raw = ctx.env.get("WARREN_DEMO_JOBS", "5000")
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError("WARREN_DEMO_JOBS", f"must be a positive integer, got {raw!r}")
    return int(raw)


async def main(ctx: ServiceContext) -> None:
    total = _jobs_setting(ctx)
    started = time.perf_counter()
    async with (
        Publisher(ctx.publisher_config, metrics=ctx.metrics, name="demo", topology=TOPOLOGY) as pub,
        anyio.create_task_group() as tg,
    ):

        async def produce() -> None:
            for seq in range(total):
                await pub.enqueue({"seq": seq, "kind": "demo"}, routing_key=QUEUE)
            tg.cancel_scope.cancel()

        tg.start_soon(produce)
        await ctx.stopping.wait()  # SIGTERM: stop producing; leaving the block flushes
        tg.cancel_scope.cancel()
    elapsed = time.perf_counter() - started
    s = pub.statistics()
    dropped = sum(s.dropped.values())
    print(
        f"demo-publisher: submitted={s.submitted} confirmed={s.confirmed} "
        f"returned={s.returned} dropped={dropped} reconnects={s.reconnects} "
        f"in {elapsed:.2f}s ({s.confirmed / elapsed:,.0f} confirmed msgs/s) -> queue {QUEUE!r}",
        flush=True,
    )
    lost = s.submitted - s.confirmed - s.returned - dropped - s.buffer_depth
    assert lost == 0, f"{lost} jobs unaccounted for"


service = Service(
    name="demo-publisher",
    help="publish WARREN_DEMO_JOBS jobs, print what the broker confirmed, exit",
    main=main,
    settings=(Setting(env="WARREN_DEMO_JOBS", default="5000", help="jobs to publish"),),
)
