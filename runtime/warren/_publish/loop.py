"""The publisher's worker loop: it selects over jobs and connection events.

The loop takes jobs from the buffer only while the connection can take them (connected, not
blocked, no re-declaration pending, no pause after a nack, room in the hand-off window) and
applies what the connection reports; a lost connection is just another case of that loop.
``Publisher`` adds what callers use (``submit``/``enqueue``/``publish``) on top of it; the
plain parts it drives live in their own modules (``ledger``, ``settlement``, ``overflow``,
``redeclare``).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Final

import anyio
from anyio import ClosedResourceError

from warren._amqp import (
    Blocked,
    ChannelClosed,
    Confirmed,
    ConnectionEvent,
    Declared,
    Nacked,
    Returned,
    Topology,
    Unblocked,
    amqp_link_factory,
)
from warren._common.backoff import Backoff
from warren._exceptions import PublisherClosed
from warren._job import Job
from warren._outbox.outbox import Outbox
from warren._publish.ledger import Ledger
from warren._publish.overflow import OverflowPolicy
from warren._publish.redeclare import Redeclare
from warren._publish.settlement import Settlement
from warren._select.select import Closed, Default, Received, Timeout, select
from warren._worker.worker import Wake, Worker

if TYPE_CHECKING:
    from collections.abc import Callable

    from warren._amqp import LinkFactory
    from warren._config import PublisherConfig

log = logging.getLogger("warren.publisher")

_NO_DEADLINE: Final = math.inf


class PublishLoop(Worker):
    """Base of ``Publisher``: its buffer, its connection and the loop between them."""

    def __init__(
        self,
        config: PublisherConfig,
        name: str,
        topology: Topology | None,
        backoff: Backoff | None,
        clock: Callable[[], float],
        connection: LinkFactory | None,
    ) -> None:
        self._config = config
        self._events_tx, self._events_rx = anyio.create_memory_object_stream[
            ConnectionEvent | Wake
        ](math.inf)
        super().__init__(name, clock, self._events_tx, log)
        # The job memory-stream is the buffer's FIFO; the ledger enforces the capacity over
        # it, the jobs in flight and the jobs waiting to be re-sent.
        self._jobs_tx, self._jobs_rx = anyio.create_memory_object_stream[Job](math.inf)
        self._ledger = Ledger(
            config.buffer_size, (self._jobs_tx, self._jobs_rx), max_bytes=config.buffer_max_bytes
        )
        self._backoff = backoff or Backoff(
            base=config.connection.backoff_base, cap=config.connection.backoff_cap
        )
        connect = connection or amqp_link_factory(config, self._backoff)
        topology = topology or Topology()
        self._conn = connect(self._events_tx, name=name, topology=topology)
        self._redeclare = Redeclare(topology)
        self._outbox: Outbox | None = None
        if config.outbox is not None:
            self._outbox = Outbox(config.outbox, synchronous=config.outbox_sync)
        self._overflow = OverflowPolicy(self._ledger, config.overflow, name)
        self._settle = Settlement(self._ledger, self._overflow, self._outbox,
                                  backoff=self._backoff, clock=clock, name=name)  # fmt: skip
        # Up to twice max_in_flight jobs are handed to the connection: the I/O thread keeps
        # max_in_flight unconfirmed at the broker and queues the rest, so it can refill its
        # window on every ack without a round trip through this loop.
        self._handoff_limit = 2 * config.max_in_flight
        # ... and refills that queue only when it has room for at least half a window (or
        # holds less than one): handing over a few jobs per ack costs a wake-up of each
        # thread for a handful of jobs, and caps throughput at the cross-thread round trips.
        self._refill_below = self._handoff_limit - max(1, config.max_in_flight // 2)
        self._blocked = False
        self._deadline = _NO_DEADLINE  # set when a close begins: flush until then
        self._flushed = anyio.Event()  # the loop ended and everything is closed

    async def _run(self) -> None:
        outbox = self._outbox
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._conn.run, name=f"warren-amqp-{self._name}")
                async with anyio.create_task_group() as disk:
                    if outbox is not None:
                        disk.start_soon(outbox.run, name=f"warren-outbox-{self._name}")
                        disk.start_soon(self._recover, outbox)
                    await self._serve()
                    disk.cancel_scope.cancel()
                await self._conn.aclose()
        finally:
            self._link.closed()
            if self._ledger.depth > self._ledger.reserved:  # cancelled (a forced stop)
                self._drop_unflushed()
            if outbox is not None:
                await outbox.aclose()  # shielded: commits the settled jobs' deletes
            self._close_streams()
            self._flushed.set()

    async def _recover(self, outbox: Outbox) -> None:
        """Hand the jobs found in the outbox at start back to the buffer, oldest first, as
        room allows (new jobs compete for the same room)."""
        ledger = self._ledger
        while jobs := await outbox.recover_page(self._clock):
            for job in jobs:
                while not ledger.fits(job):
                    if self._closing:
                        return  # the rest stay on disk for the next start
                    await self._settle.room.wait()
                try:
                    self._accept(job)
                except PublisherClosed:
                    return
        if outbox.recovered:
            log.info("outbox.recovered worker=%s jobs=%d", self._name, outbox.recovered)

    def _close_streams(self) -> None:
        for end in (self._jobs_tx, self._jobs_rx, self._events_tx, self._events_rx):
            end.close()

    async def _serve(self) -> None:
        refill_below = self._refill_below
        books = self._ledger
        heal = self._redeclare
        settle = self._settle
        jobs_open = True
        while True:
            if self._closing:
                if books.depth == books.reserved:  # (a reserved job is never accepted now)
                    return
                remaining = self._deadline - self._clock()
                if remaining <= 0:
                    self._drop_unflushed()
                    return
            else:
                remaining = math.inf
            if heal.due is not None and self._link.connected:
                wait = heal.due - self._clock()
                if wait <= 0:
                    self._declare_again()
                else:  # rate-limited: the last re-declaration was moments ago
                    await self._pause(min(wait, remaining))
                    continue
            can_send = (
                self._link.connected
                and not self._blocked
                and not heal.declaring
                and heal.due is None
                and len(books.inflight) <= refill_below
            )
            if can_send and books.resend and (wait := settle.resend_at - self._clock()) > 0:
                # paused after a nack; new jobs wait too, so order is kept
                await self._pause(min(wait, remaining))
                continue
            if can_send and books.resend:
                match await select(events=self._events_rx, default=True):
                    case Default():
                        self._send_batch(None)
                    case Received(_, event):
                        self._on_event(event)
                continue
            timeout = None if remaining == math.inf else remaining
            if can_send and jobs_open:
                result = await select(events=self._events_rx, jobs=self._jobs_rx, timeout=timeout)
            else:
                result = await select(events=self._events_rx, timeout=timeout)
            match result:
                case Received("jobs", job):
                    self._send_batch(job)
                case Received("events", event):
                    self._on_event(event)
                case Closed("jobs"):
                    jobs_open = False
                case Timeout():
                    pass
                case _:  # pragma: no cover - the events stream is never closed while we run
                    raise AssertionError(f"unexpected select result {result!r}")

    async def _pause(self, seconds: float) -> None:
        """Send nothing for up to ``seconds``; an event that comes meanwhile is
        handled (and ends the pause: the loop looks again)."""
        match await select(events=self._events_rx, timeout=seconds):
            case Received(_, event):
                self._on_event(event)

    def _send_batch(self, first: Job | None) -> None:
        books = self._ledger
        batch = books.take(first, self._handoff_limit - len(books.inflight))
        self._conn.publish(self._session, batch)
        # If that connection is already gone, a ConnectionLost for it is on its way and the
        # batch goes back to the front of the queue then.

    def _on_event(self, event: ConnectionEvent | Wake) -> None:
        if self._apply_link_event(event):
            return
        match event:
            case Confirmed(session, jobs):
                self._settle.confirmed(jobs)
            case Nacked(session, jobs):
                self._settle.nacked(jobs)
            case Returned(session, job, code, text):
                self._on_returned(job, code, text)
            case Declared(session):
                if session == self._session and self._redeclare.done():
                    log.info("topology.redeclared worker=%s jobs_to_resend=%d", self._name,
                             len(self._ledger.resend))  # fmt: skip
            case Blocked(_, reason):
                self._blocked = True
                log.warning("connection.blocked worker=%s reason=%s", self._name, reason)
            case Unblocked():
                self._blocked = False
                log.info("connection.unblocked worker=%s", self._name)
            case ChannelClosed(_, code, text):
                self._link.last_error = f"channel closed by broker: {code} {text}"
                log.error("channel.closed worker=%s reply=%d %s", self._name, code, text)
            case _:  # pragma: no cover - deliveries go to consumers only
                raise AssertionError(f"unexpected event for a publisher: {event!r}")

    def _on_returned(self, job: Job, code: int, text: str) -> None:
        """Unroutable. To a route the topology declares (a queue deleted under us): re-send
        it once the topology is declared again. Otherwise it is returned, for good."""
        if not self._redeclare.reroutes(job, code):
            self._settle.returned(job, code, text)
        elif self._ledger.rerouted_now(job):
            self._redeclare.rerouted(job, self._clock())

    def _declare_again(self) -> None:
        now = self._clock()
        # not taken: that connection is going, and reconnecting declares the topology anyway
        taken = self._conn.declare(self._session)
        self._redeclare.begin(now, taken=taken)
        if taken:
            log.warning(
                "topology.redeclaring worker=%s reason=a job for a declared route came back"
                " unroutable (NO_ROUTE) jobs_to_resend=%d",
                self._name, len(self._ledger.resend),
            )  # fmt: skip

    def _on_lost(self) -> dict[str, int]:
        self._blocked = False
        self._redeclare.lost()  # the next connection declares the topology on connect
        in_flight = self._ledger.lost()
        return {"in_flight": in_flight, "buffered": self._ledger.depth}

    def _abandon_work(self) -> int:
        if self._outbox is not None:
            self._settle.keep_all("gave_up", self._outbox)
            return 0  # nothing lost: the next start sends them
        return len(self._settle.drop_all("gave_up"))

    def _drop_unflushed(self) -> None:
        if self._outbox is not None:
            self._settle.keep_all("shutdown", self._outbox)
            return
        jobs = self._settle.drop_all("shutdown")
        log.error(
            "shutdown.unflushed worker=%s jobs_dropped=%d flush_timeout=%.1fs",
            self._name, len(jobs), self._config.flush_timeout,
        )  # fmt: skip

    def _accept(self, job: Job) -> None:
        try:
            self._ledger.accept(job)
        except ClosedResourceError:
            raise PublisherClosed(f"publisher {self._name!r} is closed to new jobs") from None
        if self._settle.drained.is_set():
            self._settle.filling()
