"""Publish-throughput runners: each returns confirmed msgs/s for ``n`` messages."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import anyio
import pika
from prometheus_client import CollectorRegistry

from warren import Metrics, Publisher, PublisherConfig, Queue, Topology

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUEUE = "warren.bench"
WINDOW = 1000


def purge(queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.queue_declare(queue, durable=False)
    ch.queue_purge(queue)
    conn.close()


def warren(n: int, size: int) -> float:
    body = b"x" * size

    async def run() -> float:
        cfg = PublisherConfig(urls=URL, max_in_flight=WINDOW)
        topo = Topology(queues=(Queue(name=QUEUE, durable=False),))
        async with Publisher(cfg, metrics=Metrics(CollectorRegistry()), topology=topo) as pub:
            await pub.wait_connected()
            start = time.perf_counter()
            for _ in range(n):
                await pub.enqueue(body, routing_key=QUEUE)
            await pub.wait_flushed()
            elapsed = time.perf_counter() - start
            assert pub.statistics().confirmed == n
        return n / elapsed

    return anyio.run(run)


def raw_pika(n: int, size: int) -> float:
    """Raw pika sending what Warren sends: a message_id per message, mandatory flag."""
    return _raw_pika(n, size, same_message=True)


def raw_pika_minimal(n: int, size: int) -> float:
    """Raw pika at its fastest: one shared properties object, no ids, no mandatory flag."""
    return _raw_pika(n, size, same_message=False)


def _raw_pika(n: int, size: int, *, same_message: bool) -> float:
    body = b"x" * size
    shared = pika.BasicProperties(delivery_mode=2)
    state: dict[str, Any] = {"sent": 0, "acked": 0, "start": 0.0, "end": 0.0}

    def on_open(conn: Any) -> None:
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch: Any) -> None:
        state["ch"] = ch
        ch.confirm_delivery(ack_nack_callback=on_ack, callback=lambda _f: start())

    def start() -> None:
        state["start"] = time.perf_counter()
        fill()

    def fill() -> None:
        ch = state["ch"]
        while state["sent"] < n and state["sent"] - state["acked"] < WINDOW:
            if same_message:
                props = pika.BasicProperties(
                    message_id=uuid.uuid4().hex,
                    delivery_mode=2,
                    content_type="application/octet-stream",
                )
                ch.basic_publish("", QUEUE, body, props, mandatory=True)
            else:
                ch.basic_publish("", QUEUE, body, shared)
            state["sent"] += 1

    def on_ack(frame: Any) -> None:
        tag = frame.method.delivery_tag
        state["acked"] = tag if frame.method.multiple else max(state["acked"], tag)
        if state["acked"] >= n:
            state["end"] = time.perf_counter()
            conn.close()
        else:
            fill()

    conn = pika.SelectConnection(
        pika.URLParameters(URL),
        on_open_callback=on_open,
        on_close_callback=lambda c, _r: c.ioloop.stop(),
    )
    conn.ioloop.start()
    return float(n / (state["end"] - state["start"]))


def aio_pika(n: int, size: int) -> float:
    import aio_pika as ap

    async def run() -> float:
        conn = await ap.connect_robust(URL)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            sem = asyncio.Semaphore(WINDOW)
            body = b"x" * size

            async def one() -> None:
                async with sem:
                    await ch.default_exchange.publish(
                        ap.Message(
                            body,
                            delivery_mode=ap.DeliveryMode.PERSISTENT,
                            message_id=uuid.uuid4().hex,
                        ),
                        routing_key=QUEUE,
                        mandatory=True,
                    )

            start = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for _ in range(n):
                    tg.create_task(one())
            return n / (time.perf_counter() - start)

    return asyncio.run(run())
