"""A consumer replica in its own process, for the kill -9 test: it claims every message in
Redis and hangs in the handler on the one whose body is ``block`` (printing ``claimed``)."""

from __future__ import annotations

import sys

import anyio
from prometheus_client import CollectorRegistry

from warren import ConnectionConfig, Consumer, ConsumerConfig, Message, Metrics, RedisDedupStore


async def main(url: str, queue: str, redis_url: str, prefix: str) -> None:
    async def handler(message: Message) -> None:
        if message.body == b"block":
            print("claimed", flush=True)
            await anyio.sleep_forever()

    config = ConsumerConfig(
        connection=ConnectionConfig(urls=url),
        queue=queue,
        handler_timeout=3.0,
        retry_base=0.2,
        concurrency=1,
        prefetch=1,
    )
    store = RedisDedupStore(redis_url, prefix=prefix)
    async with Consumer(config, handler, metrics=Metrics(CollectorRegistry()), dedup=store):
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])
