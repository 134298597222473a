"""Consumer throughput: drain N pre-filled messages with a no-op handler, prefetch 100, each
acked; Warren Consumer vs raw pika BlockingConnection.basic_consume vs aio-pika."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import anyio
import pika
from prometheus_client import CollectorRegistry

from bench import amqplib_peer
from bench.publish import parameters
from warren import (
    ConnectionConfig,
    Consumer,
    ConsumerConfig,
    Message,
    Metrics,
    RedisDedupStore,
    TlsConfig,
)

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
PREFETCH = 100
QUEUE = "warren.bench.consume"


def fill(n: int, size: int, *, url: str = URL, quorum: bool = False) -> None:
    """A fresh queue (a new name each round) holding ``n`` messages (filled over plain
    AMQP: the broker's port for it is ``url``)."""
    global QUEUE
    cleanup(url)
    QUEUE = f"warren.bench.consume.{uuid.uuid4().hex[:6]}"
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"} if quorum else None)
    body = b"x" * size
    props = pika.BasicProperties(delivery_mode=2)
    for i in range(n):
        props.message_id = str(i)
        ch.basic_publish("", QUEUE, body, props)
    deadline = time.monotonic() + 60
    while ch.queue_declare(QUEUE, passive=True).method.message_count < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{QUEUE} never held {n} messages")
        time.sleep(0.05)
    conn.close()


def cleanup(url: str = URL) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    suffixes = ("", ".dlq", *(f".retry.{ms}ms" for ms in (1000, 2000, 4000, 8000)))
    for suffix in suffixes:
        ch.queue_delete(QUEUE + suffix)
    conn.close()


cpu_us: list[float] = []  # CPU (user + sys, every thread) per message of the last drain


def _cpu_per_message(cpu_start: float, n: int) -> None:
    cpu_us.append((time.process_time() - cpu_start) / n * 1e6)


def amqplib(n: int) -> float:
    """Node's amqplib, prefetch 100, each acked (a child process; its own CPU)."""
    rate, cpu = amqplib_peer.consume(QUEUE, n)
    cpu_us.append(cpu)
    return rate


REDIS_URL = "redis://127.0.0.1:6379/0"
dedup_round_trips_per_message: list[float] = []  # filled by warren_dedup: the bench reports it


def warren_dedup(n: int) -> float:
    """The same, with every message claimed and marked in Redis (RedisDedupStore)."""
    store = RedisDedupStore(REDIS_URL, prefix=f"warren:bench:{uuid.uuid4().hex[:6]}:")
    rate = warren(n, store=store)
    dedup_round_trips_per_message.append(store.round_trips / n)
    return rate


def warren(
    n: int,
    *,
    url: str = URL,
    quorum: bool = False,
    store: RedisDedupStore | None = None,
    tls: TlsConfig | None = None,
) -> float:
    async def run() -> float:
        done = anyio.Event()
        count = 0

        async def noop(_message: Message) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        config = ConsumerConfig(
            connection=ConnectionConfig(urls=url, tls=tls or TlsConfig()),
            queue=QUEUE,
            prefetch=PREFETCH,
            concurrency=PREFETCH,
            queue_type="quorum" if quorum else "classic",
        )
        async with Consumer(config, noop, metrics=Metrics(CollectorRegistry()),
                            dedup=store) as consumer:  # fmt: skip
            await consumer.wait_connected()
            start, cpu_start = time.perf_counter(), time.process_time()
            await done.wait()
            while consumer.statistics().outcomes["ack"] < n:  # noqa: ASYNC110 - bench
                await anyio.sleep(0.001)
            rate = n / (time.perf_counter() - start)
            _cpu_per_message(cpu_start, n)
        if store is not None:
            await store.aclose()
        return rate

    return anyio.run(run)


def raw_pika(n: int, *, url: str = URL, tls: TlsConfig | None = None) -> float:
    conn = pika.BlockingConnection(parameters(url, tls))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=PREFETCH)
    state = {"count": 0}

    def on_message(channel: Any, method: Any, _props: Any, _body: bytes) -> None:
        channel.basic_ack(method.delivery_tag)
        state["count"] += 1
        if state["count"] == n:
            channel.stop_consuming()

    ch.basic_consume(QUEUE, on_message)
    start, cpu_start = time.perf_counter(), time.process_time()
    ch.start_consuming()
    elapsed = time.perf_counter() - start
    _cpu_per_message(cpu_start, n)
    conn.close()
    return n / elapsed


def aio_pika(n: int) -> float:
    import aio_pika as ap

    async def run() -> float:
        conn = await ap.connect_robust(URL)
        async with conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=PREFETCH)
            queue = await ch.declare_queue(QUEUE, durable=True)
            count = 0
            start, cpu_start = time.perf_counter(), time.process_time()
            async with queue.iterator() as it:
                async for message in it:
                    await message.ack()
                    count += 1
                    if count == n:
                        break
            rate = n / (time.perf_counter() - start)
            _cpu_per_message(cpu_start, n)
            return rate

    return asyncio.run(run())
