"""A producer process for the outbox crash tests: enqueues jobs with an outbox until killed,
printing ``accepted <message_id>`` for each job once ``enqueue`` returned (it is durable).

    python -m tests.support.outbox_child OUTBOX URL QUEUE BACKEND [JOBS] [RUN]

Message ids are ``RUN-i`` (``RUN`` defaults to ``job``): unique across runs on one queue.
"""

from __future__ import annotations

import sys

import anyio
from prometheus_client import CollectorRegistry

from warren import ConnectionConfig, Metrics, OutboxError, Publisher, PublisherConfig


async def main(outbox: str, url: str, queue: str, jobs: int, run: str) -> None:
    config = PublisherConfig(
        connection=ConnectionConfig(urls=url, backoff_base=0.05, backoff_cap=0.2, heartbeat=2),
        outbox=outbox,
        flush_timeout=0.2,
        max_job_bytes=4096,
        buffer_max_bytes=64 * 1024 * 1024,
    )
    # (the test declared the queue)
    async with Publisher(config, metrics=Metrics(CollectorRegistry()), name="child") as pub:
        print("ready", flush=True)

        async def produce(worker: int) -> None:
            for i in range(worker, jobs, 10):
                try:
                    mid = await pub.enqueue({"i": i, "pad": "x" * 200}, routing_key=queue,
                                            message_id=f"{run}-{i}")  # fmt: skip
                except OutboxError as exc:
                    print(f"refused {run}-{i} {exc}", flush=True)
                    continue
                print(f"accepted {mid}", flush=True)

        async with anyio.create_task_group() as tg:
            for worker in range(10):
                tg.start_soon(produce, worker)
        print("done", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    outbox, url, queue, backend = sys.argv[1:5]
    jobs = int(sys.argv[5]) if len(sys.argv) > 5 else 10**9
    run = sys.argv[6] if len(sys.argv) > 6 else "job"
    anyio.run(main, outbox, url, queue, jobs, run, backend=backend)
