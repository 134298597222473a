"""Publish-throughput runners: each returns confirmed msgs/s for ``n`` messages."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from typing import Any

import anyio
import pika
from prometheus_client import CollectorRegistry

from warren import (
    ConnectionConfig,
    Metrics,
    OutboxSync,
    Publisher,
    PublisherConfig,
    Queue,
    TlsConfig,
    Topology,
)

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUEUE = "warren.bench"
WINDOW = 1000
QUORUM = {"x-queue-type": "quorum"}
cpu_us: list[
    float
] = []  # CPU (user + sys, every thread) per message of the last run that counts it


def parameters(url: str = URL, tls: TlsConfig | None = None) -> Any:
    """pika's parameters for ``url``; over TLS with the same SSL context Warren uses (the
    same CA, the same verification), so the peers pay the same TLS costs."""
    params = pika.URLParameters(url)
    if tls is not None:
        params.ssl_options = pika.SSLOptions(tls.context, server_hostname=tls.server_name)
    return params


def purge(queue: str, *, url: str = URL, tls: TlsConfig | None = None) -> None:
    conn = pika.BlockingConnection(parameters(url, tls))
    ch = conn.channel()
    ch.queue_declare(queue, durable=False)
    ch.queue_purge(queue)
    conn.close()


def warren(
    n: int,
    size: int,
    *,
    url: str = URL,
    queue: str = QUEUE,
    quorum: bool = False,
    tls: TlsConfig | None = None,
) -> float:
    body = b"x" * size
    link = ConnectionConfig(urls=url, tls=tls or TlsConfig())

    async def run() -> float:
        cfg = PublisherConfig(connection=link, max_in_flight=WINDOW)
        declared = Queue(name=queue, durable=quorum, arguments=QUORUM if quorum else None)
        topo = Topology(queues=(declared,))
        async with Publisher(cfg, metrics=Metrics(CollectorRegistry()), topology=topo) as pub:
            await pub.wait_connected()
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                await pub.enqueue(body, routing_key=queue)
            await pub.wait_flushed()
            elapsed = time.perf_counter() - start
            cpu_us.append((time.process_time() - cpu) / n * 1e6)
            assert pub.statistics().confirmed == n
        return n / elapsed

    return anyio.run(run)


PRODUCERS = 100


def warren_concurrent(
    n: int, size: int, *, outbox: bool = False, sync: OutboxSync = "full"
) -> float:
    """``PRODUCERS`` tasks enqueue concurrently (an API's requests); with ``outbox``, each
    job is on disk (``sync``: SQLite's synchronous setting) before its enqueue returns."""
    body = b"x" * size

    async def run() -> float:
        folder = tempfile.mkdtemp(prefix="warren-bench-")
        cfg = PublisherConfig(
            connection=ConnectionConfig(urls=URL),
            max_in_flight=WINDOW,
            outbox_sync=sync,
            outbox=f"{folder}/outbox.sqlite3" if outbox else None,
        )
        topo = Topology(queues=(Queue(name=QUEUE, durable=False),))
        async with Publisher(cfg, metrics=Metrics(CollectorRegistry()), topology=topo) as pub:
            await pub.wait_connected()

            async def produce(count: int) -> None:
                for _ in range(count):
                    await pub.enqueue(body, routing_key=QUEUE)

            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(PRODUCERS):
                    tg.start_soon(produce, n // PRODUCERS)
            await pub.wait_flushed()
            elapsed = time.perf_counter() - start
            assert pub.statistics().confirmed == n // PRODUCERS * PRODUCERS
        shutil.rmtree(folder)
        return n / elapsed

    return anyio.run(run)


def warren_outbox(n: int, size: int) -> float:
    return warren_concurrent(n, size, outbox=True)


def warren_outbox_normal(n: int, size: int) -> float:
    return warren_concurrent(n, size, outbox=True, sync="normal")


def outbox_recovery(n: int, size: int) -> float:
    """Seconds for a publisher that starts on an outbox holding ``n`` jobs (left by a stop
    that could not reach the broker) to have the broker confirm them all."""
    body = b"x" * size
    folder = tempfile.mkdtemp(prefix="warren-bench-")
    path = f"{folder}/outbox.sqlite3"
    big: dict[str, Any] = {
        "buffer_size": n,
        "buffer_max_bytes": n * (size + 1024),
        "max_in_flight": WINDOW,
    }

    async def fill() -> None:
        nowhere = PublisherConfig(
            connection=ConnectionConfig(urls="amqp://guest:guest@127.0.0.1:1/%2F"),
            outbox=path,
            flush_timeout=0.1,
            **big,
        )
        pub = Publisher(nowhere, metrics=Metrics(CollectorRegistry()))
        async with pub, anyio.create_task_group() as tg:
            for _ in range(PRODUCERS):

                async def produce() -> None:
                    for _ in range(n // PRODUCERS):
                        await pub.enqueue(body, routing_key=QUEUE)

                tg.start_soon(produce)
        assert pub.statistics().kept == n

    async def recover() -> float:
        cfg = PublisherConfig(connection=ConnectionConfig(urls=URL), outbox=path, **big)
        topo = Topology(queues=(Queue(name=QUEUE, durable=False),))
        start = time.perf_counter()
        async with Publisher(cfg, metrics=Metrics(CollectorRegistry()), topology=topo) as pub:
            # recovery hands jobs over a page at a time, so the buffer can be empty before
            # the last page is in: poll the count (a benchmark's 10 ms granularity is fine)
            while pub.statistics().confirmed < n:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        return time.perf_counter() - start

    anyio.run(fill)
    took = anyio.run(recover)
    shutil.rmtree(folder)
    return took


def raw_pika(
    n: int, size: int, *, url: str = URL, queue: str = QUEUE, tls: TlsConfig | None = None
) -> float:
    """Raw pika sending what Warren sends: a message_id per message, mandatory flag."""
    return _raw_pika(n, size, same_message=True, url=url, queue=queue, tls=tls)


def raw_pika_minimal(n: int, size: int) -> float:
    """Raw pika at its fastest: one shared properties object, no ids, no mandatory flag."""
    return _raw_pika(n, size, same_message=False)


def _raw_pika(
    n: int,
    size: int,
    *,
    same_message: bool,
    url: str = URL,
    queue: str = QUEUE,
    tls: TlsConfig | None = None,
) -> float:
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
        state["cpu"] = time.process_time()
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
                ch.basic_publish("", queue, body, props, mandatory=True)
            else:
                ch.basic_publish("", queue, body, shared)
            state["sent"] += 1

    def on_ack(frame: Any) -> None:
        tag = frame.method.delivery_tag
        state["acked"] = tag if frame.method.multiple else max(state["acked"], tag)
        if state["acked"] >= n:
            state["end"] = time.perf_counter()
            cpu_us.append((time.process_time() - state["cpu"]) / n * 1e6)
            conn.close()
        else:
            fill()

    conn = pika.SelectConnection(
        parameters(url, tls),
        on_open_callback=on_open,
        on_close_callback=lambda c, _r: c.ioloop.stop(),
    )
    conn.ioloop.start()
    return float(n / (state["end"] - state["start"]))


def amqplib(n: int, size: int) -> float:
    """Node's amqplib, a confirm channel with 1,000 unconfirmed publishes (a child process)."""
    from bench import amqplib_peer

    rate, cpu = amqplib_peer.publish(QUEUE, n, size)
    cpu_us.append(cpu)
    return rate


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
