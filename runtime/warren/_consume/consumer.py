"""The consumer worker: a loop that selects over deliveries, handler results and connection
events, like the publisher's.

Deliveries come from the broker (at most ``prefetch`` unacked); up to ``concurrency``
handlers run at once, each under ``handler_timeout``. A delivery is acked only after its
handler returned, or after its failure was safely re-published (to a delay queue for a
retry, or to the dead-letter queue): nothing is acked early, so a crash or a lost connection
means redelivery, never loss (at-least-once: use ``Deduplicator`` in handlers).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypeVar, final

import anyio

from warren._amqp import ConnectionEvent, ConsumeSpec, Delivered, amqp_link_factory
from warren._common.backoff import Backoff
from warren._consume.message import Handler, Message, message_of
from warren._consume.outcome import Outcome
from warren._consume.requeue import Requeuer
from warren._consume.topology import consumer_topology
from warren._consume.work_queue import WorkQueue
from warren._dedup.gate import DedupGate
from warren._dedup.store import DedupStore, lease_for
from warren._select.select import Received, Timeout, select
from warren._worker.statistics import HANDLER_BUCKETS, ConsumerStatistics, LatencyHistogram
from warren._worker.worker import Wake, Worker

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.streams.memory import MemoryObjectReceiveStream

    from warren._amqp import LinkFactory, Topology
    from warren._config import ConsumerConfig
    from warren._ops.metrics import Metrics

log = logging.getLogger("warren.consumer")

_T = TypeVar("_T")


@final
class Deduplicator:
    """Remembers the last ``size`` message ids: ``seen(id)`` is True for a repeat.

    Redelivery after a lost connection is normal under at-least-once; a handler with a side
    effect checks ``seen`` first (per process; use a shared store across processes).
    """

    def __init__(self, size: int = 100_000) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def seen(self, message_id: str | None) -> bool:
        if message_id is None:
            return False
        if message_id in self._ids:
            self._ids.move_to_end(message_id)
            self.duplicates += 1
            return True
        self._ids[message_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return False


@final
class Consumer(Worker):
    """Consumes ``config.queue`` with ``handler``. Use as ``async with Consumer(...)``.

    Leaving the block stops taking deliveries, lets running handlers finish (up to
    ``shutdown_timeout``), acks what finished and leaves the rest to be redelivered.
    """

    def __init__(
        self,
        config: ConsumerConfig,
        handler: Handler,
        *,
        metrics: Metrics,
        name: str = "consumer",
        topology: Topology | None = None,
        clock: Callable[[], float] = time.monotonic,
        connection: LinkFactory | None = None,
        dedup: DedupStore | None = None,
    ) -> None:
        self._config = config
        self._handler = handler
        self._events_tx, self._events_rx = anyio.create_memory_object_stream[
            ConnectionEvent | Wake
        ](math.inf)
        super().__init__(name, clock, self._events_tx, log)
        queues = consumer_topology(config, topology)
        self.dead_letter_queue = queues.dead_letter_queue
        self.topology = queues.topology
        conn_config = config.requeue_config()
        self._deliveries_tx, self._deliveries_rx = anyio.create_memory_object_stream[Delivered](
            math.inf
        )
        self._done_tx, self._done_rx = anyio.create_memory_object_stream[tuple[Delivered, Outcome]](
            math.inf
        )
        connect = connection or amqp_link_factory(
            conn_config,
            Backoff(base=config.connection.backoff_base, cap=config.connection.backoff_cap),
        )
        self._conn = connect(
            self._events_tx,
            name=name,
            topology=self.topology,
            consume=ConsumeSpec(config.queue, config.prefetch),
            deliveries=self._deliveries_tx,
        )
        # re-publishes retries and dead letters, with confirms, before the original is acked
        self._requeue = Requeuer(
            conn_config,
            queues,
            max_attempts=config.max_attempts,
            metrics=metrics,
            name=name,
            connection=connection,
        )
        self._work = WorkQueue[Delivered]()  # to the pool of handler tasks
        self._held: set[tuple[int, int]] = set()  # (session, tag): claimed by another worker
        self._gate = None if dedup is None else self._dedup_gate(dedup)
        self._in_flight = 0
        self._outcomes = {"ack": 0, "retry": 0, "dead_letter": 0, "rejected": 0}
        if dedup is not None:
            self._outcomes.update(duplicate=0, claimed_elsewhere=0)
        self._latency = LatencyHistogram(HANDLER_BUCKETS)
        self._metrics = metrics

    def _dedup_gate(self, dedup: DedupStore) -> DedupGate:
        """Claims and marks in ``dedup`` between the loop and the handler pool."""
        config = self._config
        return DedupGate(
            dedup,
            vhost=config.connection.vhost,
            queue=config.queue,
            lease=lease_for(config.handler_timeout),
            retention=config.dedup_retention,
            on_error=config.dedup_on_error,
            name=self._name,
            admit=self._work.put,
            held=self._hold,
            settle=lambda delivery, outcome: self._done_tx.send_nowait((delivery, outcome)),
        )

    def _close_streams(self) -> None:
        for end in (
            self._events_tx,
            self._events_rx,
            self._deliveries_tx,
            self._deliveries_rx,
            self._done_tx,
            self._done_rx,
        ):
            end.close()
        if self._stack is None:  # never entered: neither was the re-publisher
            self._requeue.publisher._close_streams()

    def _register(self) -> None:
        self._metrics.add_consumer(self._name, self.statistics, running=lambda: self._running)

    def statistics(self) -> ConsumerStatistics:
        link = self._link
        return ConsumerStatistics(
            connected=link.connected,
            node=link.node,
            reconnects=link.reconnects,
            in_flight=self._in_flight,
            outcomes=dict(self._outcomes),
            dedup_unavailable=0 if self._gate is None else self._gate.unavailable,
            handler_seconds=self._latency.snapshot(),
            last_error=link.last_error,
            disconnected_seconds=link.disconnected_seconds(),
            failed=link.failed,
        )

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with anyio.create_task_group() as tg, self._requeue.publisher:
                tg.start_soon(self._conn.run, name=f"warren-amqp-{self._name}")
                # a pool of ``concurrency`` handler tasks, fed by the loop: no task per message
                async with anyio.create_task_group() as handlers:
                    for _ in range(self._config.concurrency):
                        handlers.start_soon(self._handle)
                    if self._gate is not None:
                        handlers.start_soon(self._gate.run)
                    await self._serve()
                    handlers.cancel_scope.cancel()  # past the shutdown deadline: not acked
                await self._conn.aclose()
        finally:
            self._link.closed()
            self._close_streams()

    async def _handle(self) -> None:
        """One task of the handler pool, until cancelled: handlers that succeed are settled
        in place; a failure (or timeout) leaves the fast path to be retried or dead-lettered."""
        while True:
            failed = await self._run_handlers()
            if failed is None:
                continue
            delivery, message, exc, started = failed
            if isinstance(exc, _ClaimedElsewhere):
                await self._requeue.retry(message, exc, 0.0, counted=False)
                self._done_tx.send_nowait((delivery, "claimed_elsewhere"))
                continue
            self._latency.observe(self._clock() - started)
            if self._gate is not None:
                await self._gate.release(delivery)  # so that the retry can run it
            outcome = await self._requeue.settle(message, exc)
            self._done_tx.send_nowait((delivery, outcome))

    async def _run_handlers(self) -> tuple[Delivered, Message, Exception, float] | None:
        """Run handlers until one fails (or times out) and return it.

        All handlers of this run share one cancel scope: entering a fresh scope per message
        (``fail_after``), or moving its deadline per message (a timer each time), costs more
        than a fast handler. The deadline is moved only when a handler starting now would
        outlive it, and then past that by a little slack (1% of ``handler_timeout``, within
        0.01-1 s), so a handler is cut off between ``handler_timeout`` and that plus the
        slack after it started, never sooner, and fast handlers re-arm the timer about once
        per slack. When the deadline passes during a handler, ``current`` is the delivery
        that ran out of time; when it passes while this task waits for work, nothing was
        running: a fresh scope starts.
        """
        timeout = self._config.handler_timeout
        slack = min(1.0, max(0.01, timeout / 100))
        max_attempts = self._config.max_attempts
        clock = self._clock
        now = time.monotonic  # the scope's own clock runs at its pace (clock may be a test's)
        armed_until = -math.inf
        current: tuple[Delivered, Message, float] | None = None
        work, held, gate = self._work, self._held, self._gate
        with anyio.CancelScope() as scope:
            while True:
                delivery = await work.get()
                message = message_of(delivery, max_attempts)
                started = clock()
                if held and (delivery.session, delivery.delivery_tag) in held:
                    held.discard((delivery.session, delivery.delivery_tag))
                    return delivery, message, _ClaimedElsewhere(), started  # runs elsewhere
                current = (delivery, message, started)
                if now() + timeout > armed_until:
                    armed_until = now() + timeout + slack
                    scope.deadline = anyio.current_time() + timeout + slack
                try:
                    await self._handler(message)
                except Exception as exc:  # the handler's failure, whatever it is
                    return delivery, message, exc, started
                current = None
                self._latency.observe(clock() - started)
                if gate is None:
                    self._done_tx.send_nowait((delivery, "ack"))
                else:
                    gate.succeeded(delivery)  # acked once marked done
                if scope.cancel_called:
                    # The handler swallowed its timeout's cancellation and returned: settled
                    # as a success; a fresh scope, so the next handler is not cut off for it.
                    return None
        if current is None:
            return None  # the deadline passed between handlers
        delivery, message, started = current
        return delivery, message, TimeoutError(f"handler did not finish within {timeout}s"), started

    def _hold(self, delivery: Delivered) -> None:
        """Another live worker holds its claim: a handler task sends it back for later."""
        self._held.add((delivery.session, delivery.delivery_tag))
        self._work.put(delivery)

    async def _serve(self) -> None:
        deadline = math.inf
        concurrency = self._config.concurrency
        while True:
            if self._closing:
                if deadline == math.inf:
                    deadline = self._clock() + self._config.shutdown_timeout
                    log.info(
                        "consumer.stopping worker=%s in_flight=%d", self._name, self._in_flight
                    )
                if self._in_flight == 0 or self._clock() >= deadline:
                    return
            cases: dict[str, Any] = {"events": self._events_rx, "done": self._done_rx}
            if not self._closing and self._in_flight < concurrency:
                cases["deliveries"] = self._deliveries_rx
            timeout = None if deadline == math.inf else max(0.0, deadline - self._clock())
            match await select(**cases, timeout=timeout):
                case Received("deliveries", delivery):
                    # take what else is waiting too: one select per burst, not per message
                    self._dispatch(delivery)
                    while self._in_flight < concurrency:
                        try:
                            delivery = self._deliveries_rx.receive_nowait()
                        except anyio.WouldBlock:
                            break
                        self._dispatch(delivery)
                case Received("done", first):
                    self._settle([first, *_drain(self._done_rx)])
                case Received("events", event):
                    self._on_event(event)
                case Timeout():
                    pass

    def _dispatch(self, delivery: Delivered) -> None:
        if delivery.session > self._session:
            # Its Connected event was emitted first but sits in the other stream (select
            # picks at random): take the events up to it now.
            self._catch_up(delivery.session)
        if delivery.session != self._session:
            return  # its connection is gone; the broker redelivers it
        self._in_flight += 1
        if self._gate is None:
            self._work.put(delivery)  # a worker is free: in_flight < concurrency
        else:
            self._gate.claim(delivery)  # then to the workers, unless it ran before

    def _settle(self, finished: list[tuple[Delivered, Outcome]]) -> None:
        """Ack a batch of finished deliveries, one hand-off per connection session."""
        self._in_flight -= len(finished)
        session = finished[0][0].session
        tags: list[int] = []
        outcomes: list[Outcome] = []
        for delivery, outcome in finished:
            if delivery.session != session:
                self._ack(session, tags, outcomes)
                session, tags, outcomes = delivery.session, [], []
            tags.append(delivery.delivery_tag)
            outcomes.append(outcome)
        self._ack(session, tags, outcomes)

    def _ack(self, session: int, tags: list[int], outcomes: list[Outcome]) -> None:
        if "rejected" in outcomes:  # rare: the last resort for a message nothing could settle
            rejects = [t for t, o in zip(tags, outcomes, strict=True) if o == "rejected"]
            if self._conn.reject(session, rejects):
                self._outcomes["rejected"] += len(rejects)
            tags = [t for t, o in zip(tags, outcomes, strict=True) if o != "rejected"]
            outcomes = [o for o in outcomes if o != "rejected"]
        if self._conn.ack(session, tags):
            for outcome in outcomes:
                self._outcomes[outcome] += 1
        # else: that connection died; the broker redelivers (at-least-once)

    def _catch_up(self, session: int) -> None:
        while self._session < session:
            try:
                event = self._events_rx.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return
            self._on_event(event)

    def _on_event(self, event: ConnectionEvent | Wake) -> None:
        self._apply_link_event(event)  # the rest (deliveries) comes on the deliveries stream

    def _on_lost(self) -> dict[str, int]:
        # unacked deliveries of that connection are the broker's to redeliver
        return {"in_flight": self._in_flight}

    def _abandon_work(self) -> int:
        return self._in_flight


class _ClaimedElsewhere(Exception):
    """Another live worker holds this message's claim: not run here, back after a delay."""

    def __init__(self) -> None:
        super().__init__("another worker holds its claim")


def _drain(stream: MemoryObjectReceiveStream[_T]) -> list[_T]:
    items: list[_T] = []
    while True:
        try:
            items.append(stream.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return items
