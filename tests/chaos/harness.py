"""The chaos harness: steady load through the real publisher, an independent consumer on a
direct connection counting message ids, and a sampler watching the publisher's metrics.

Every scenario ends with ``Outcome.check()``: no accepted job lost, duplicates only of ids
that were accepted, the buffer back to 0, drops equal to what the metrics say.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pika
from prometheus_client import CollectorRegistry

from tests.support.helpers import connection_settings
from warren import (
    BufferFull,
    ConnectionConfig,
    Metrics,
    Publisher,
    PublisherConfig,
    Queue,
    Topology,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

HEARTBEAT = 1
DETECT_WITHIN = HEARTBEAT + 1.0  # the promise: a dead link is noticed this fast
FLUSH_WITHIN = 15.0  # after the fault ends, the buffer is empty within this


class DirectConsumer:
    """Counts message ids on a queue over its own connection (reconnecting), in a thread."""

    def __init__(
        self, url: str | list[str], queue: str, arguments: dict[str, Any] | None = None
    ) -> None:
        self.urls = [url] if isinstance(url, str) else url  # tried in turn (a cluster's nodes)
        self.queue = queue
        self.arguments = arguments
        self.ids: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"consumer-{queue}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.ids)

    def _run(self) -> None:
        run_reconnecting(self.urls, self._stop, self._consume)

    def _consume(self, ch: Any) -> None:
        ch.queue_declare(self.queue, durable=True, arguments=self.arguments)
        # manual acks: with auto-ack, what a broker restart catches on its way to this
        # socket is gone, and the harness would report Warren's loss
        for method, props, _body in ch.consume(self.queue, inactivity_timeout=0.1):
            if self._stop.is_set():
                break
            if method is not None:
                with self._lock:
                    self.ids[str(props.message_id)] += 1
                ch.basic_ack(method.delivery_tag)


def connect(urls: list[str]) -> pika.BlockingConnection:
    """A blocking connection to the first of ``urls`` that answers (a cluster's nodes)."""
    params = [pika.URLParameters(u) for u in urls]
    for p in params:
        p.connection_attempts, p.socket_timeout, p.blocked_connection_timeout = 1, 2, 5
    return pika.BlockingConnection(params)


def run_reconnecting(urls: list[str], stop: threading.Event, session: Any) -> None:
    """``session(channel)`` on a connection to one of ``urls``, again on a new connection
    whenever one fails, until ``stop`` is set: a test's own independent client."""
    while not stop.is_set():
        try:
            conn = connect(urls)
        except pika.exceptions.AMQPError:
            time.sleep(0.2)
            continue
        try:
            session(conn.channel())
        except pika.exceptions.AMQPError:
            time.sleep(0.2)
        finally:
            if conn.is_open:
                with contextlib.suppress(pika.exceptions.AMQPError):
                    conn.close()


@dataclass
class Outcome:
    accepted: set[str] = field(default_factory=set)
    refused: int = 0
    received: Counter[str] = field(default_factory=Counter)
    max_depth: int = 0
    detected_after: float | None = None  # seconds from fault start to connection_up == 0
    flushed_after: float | None = None  # seconds from fault end to depth == 0
    stats: Any = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def missing(self) -> set[str]:
        return self.accepted - set(self.received)

    @property
    def duplicates(self) -> int:
        return sum(self.received.values()) - len(self.received)

    def check(self, *, reconnect: bool = True, detect: bool = True) -> None:
        s = self.stats
        # only evicted jobs (drop-oldest) may be missing; an evicted one may still have arrived
        assert len(self.missing) <= s.dropped["evicted"], f"{len(self.missing)} jobs lost"
        assert self.metrics["evicted"] == s.dropped["evicted"]
        assert set(self.received) <= self.accepted, "a message arrived that was never accepted"
        assert s.buffer_depth == 0, f"buffer not flushed: {s.buffer_depth}"
        assert self.max_depth > 0, "the buffer never rose during the fault"
        assert self.max_depth <= s.buffer_capacity, "memory unbounded: buffer over capacity"
        assert self.metrics["depth"] == 0
        assert self.metrics["refused"] == self.refused == s.dropped["refused"]
        if reconnect:
            assert s.reconnects >= 1 and self.metrics["reconnects"] == s.reconnects
        if detect:
            assert self.detected_after is not None, "the fault was never noticed"
            assert self.detected_after <= DETECT_WITHIN, f"noticed after {self.detected_after:.1f}s"
        assert self.flushed_after is not None and self.flushed_after <= FLUSH_WITHIN


class Chaos:
    """One scenario: publisher through ``url``, load, sampler, consumer on ``direct_url``."""

    def __init__(
        self,
        url: str | list[str],
        direct_url: str | list[str],
        queue: str,
        *,
        queue_arguments: dict[str, Any] | None = None,
        **config: Any,
    ) -> None:
        config.setdefault("heartbeat", HEARTBEAT)
        config.setdefault("backoff_base", 0.1)
        config.setdefault("backoff_cap", 1.0)
        config.setdefault("connect_timeout", 2.0)
        link = ConnectionConfig(urls=url, **connection_settings(config))
        self.config = PublisherConfig(connection=link, **config)
        self.registry = CollectorRegistry()
        self.queue = queue
        self.queue_arguments = queue_arguments
        self.consumer = DirectConsumer(direct_url, queue, queue_arguments)
        self.outcome = Outcome()
        self.pub: Publisher | None = None
        self._fault_started: float | None = None
        self._fault_ended: float | None = None
        self._reconnects_before = 0  # at the fault's start

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {"worker": "chaos", **labels})
        return 0.0 if value is None else value

    @asynccontextmanager
    async def running(self, *, rate: float = 200.0) -> AsyncIterator[Publisher]:
        """Publisher + load + sampler; on exit: stop load, flush, collect the outcome."""
        topo = Topology(
            queues=(Queue(name=self.queue, durable=True, arguments=self.queue_arguments),)
        )
        self.consumer.start()
        try:
            async with Publisher(self.config, metrics=Metrics(self.registry), name="chaos",
                                 topology=topo) as pub:  # fmt: skip
                self.pub = pub
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._load, pub, rate)
                    tg.start_soon(self._sample, pub)
                    yield pub
                    tg.cancel_scope.cancel()
                with anyio.fail_after(FLUSH_WITHIN + 5):
                    await pub.wait_flushed()
                self._note_flushed(pub)
            await self._collect(pub)
        finally:
            await anyio.to_thread.run_sync(self.consumer.stop)

    @asynccontextmanager
    async def fault(self) -> AsyncIterator[None]:
        """Mark the fault window (the scenario injects the fault inside)."""
        self._fault_started = anyio.current_time()
        self._reconnects_before = self.pub.statistics().reconnects if self.pub else 0
        try:
            yield
        finally:
            self._fault_ended = anyio.current_time()

    async def _load(self, pub: Publisher, rate: float) -> None:
        seq = 0
        interval = 1.0 / rate
        while True:
            try:
                self.outcome.accepted.add(pub.submit({"seq": seq}, routing_key=self.queue))
            except BufferFull:
                self.outcome.refused += 1
            seq += 1
            await anyio.sleep(interval)

    async def _sample(self, pub: Publisher) -> None:
        while True:
            s = pub.statistics()
            now = anyio.current_time()
            self.outcome.max_depth = max(self.outcome.max_depth, s.buffer_depth)
            # noticed: disconnected now, or already reconnected (to another node, a cluster's
            # reconnect can be quicker than this sampler's period)
            gone = not s.connected or s.reconnects > self._reconnects_before
            if self._fault_started is not None and self.outcome.detected_after is None and gone:
                self.outcome.detected_after = now - self._fault_started
            self._note_flushed(pub)
            await anyio.sleep(0.02)

    def _note_flushed(self, pub: Publisher) -> None:
        if (self._fault_ended is not None and self.outcome.flushed_after is None
                and pub.statistics().buffer_depth == 0):  # fmt: skip
            self.outcome.flushed_after = anyio.current_time() - self._fault_ended

    async def _collect(self, pub: Publisher) -> None:
        o = self.outcome
        o.stats = pub.statistics()
        with anyio.fail_after(30):
            # every confirmed job reaches the independent consumer
            while len(set(o.received) & o.accepted) < o.stats.confirmed:
                await anyio.sleep(0.1)
                o.received = self.consumer.snapshot()
        o.metrics = {
            "depth": self.metric("warren_buffer_depth"),
            "refused": self.metric("warren_jobs_dropped_total", reason="refused"),
            "evicted": self.metric("warren_jobs_dropped_total", reason="evicted"),
            "reconnects": self.metric("warren_reconnects_total"),
        }


async def wait_for(predicate: Any, within: float = 20.0) -> None:
    """Poll with a deadline for publisher state that has no event of its own."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - polling with a deadline, see docstring
            await anyio.sleep(0.02)
