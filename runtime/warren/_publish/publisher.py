"""The side-effect publisher: a worker whose loop selects over jobs and connection events.

``submit()`` puts a job in a bounded buffer and returns at once; the worker loop takes jobs
from it only while the connection can take them, and a lost connection is just another case
of that loop. A job leaves the buffer only when the broker acks it; nacked jobs and jobs in
flight when the connection died are sent again (same ``message_id``: at-least-once). Every
accepted job ends up confirmed, returned (unroutable) or counted as dropped with a reason:
``submitted == confirmed + returned + dropped(after accept) + depth`` at all times.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final, final

import anyio
from anyio import ClosedResourceError

from warren._amqp import (
    Blocked,
    ChannelClosed,
    Confirmed,
    ConnectionEvent,
    Declared,
    Nacked,
    PublishEncoder,
    Returned,
    Topology,
    Unblocked,
    amqp_link_factory,
)
from warren._common.backoff import Backoff
from warren._config import PublisherConfig
from warren._exceptions import (
    BufferFull,
    ConfigError,
    InvalidJob,
    JobDropped,
    JobReturned,
    OutboxError,
    PublisherClosed,
)
from warren._job import Job, MessageIds, Outcome, encode_body
from warren._outbox.outbox import Outbox
from warren._publish.ledger import Ledger
from warren._select.select import Closed, Default, Received, Timeout, select
from warren._worker.statistics import LatencyHistogram, PublisherStatistics
from warren._worker.worker import Wake, Worker

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Mapping

    from warren._amqp import LinkFactory
    from warren._ops.metrics import Metrics

_CANCEL_CHECK_EVERY = 64
log = logging.getLogger("warren.publisher")

_NO_DEADLINE: Final = math.inf
_NO_ROUTE: Final = 312
# A job returned unroutable to a route its topology declares is re-sent after the topology
# is declared again, up to this many times (a queue deleted again and again, or a policy
# that removes it, must not keep a job forever); then it is returned like any other.
_MAX_REROUTES: Final = 3
_REDECLARE_INTERVAL: Final = 1.0  # seconds: at most one re-declaration per interval


@final
class Publisher(Worker):
    """Buffers side-effect jobs and publishes them with confirms across any number of outages.

    Use as ``async with Publisher(config, metrics=Metrics(registry), name="api") as pub``.
    Leaving the block flushes what is buffered (up to ``config.flush_timeout``), closes the
    connection cleanly, and counts what could not be flushed as dropped (reason
    ``shutdown``). Not thread-safe: call it from the event loop it runs in.

    Raises (out of the ``async with``):
        ConnectionGaveUp: reconnect attempts ran out; carries the number of jobs lost.
        AccessRefused: the broker refused the credentials (not retried).
    """

    def __init__(
        self,
        config: PublisherConfig | None = None,
        *,
        metrics: Metrics,
        name: str = "publisher",
        topology: Topology | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        connection: LinkFactory | None = None,
    ) -> None:
        self._config = config or PublisherConfig()
        self._events_tx, self._events_rx = anyio.create_memory_object_stream[
            ConnectionEvent | Wake
        ](math.inf)
        super().__init__(name, clock, self._events_tx, log)
        # The job memory-stream is the buffer's FIFO; the ledger enforces the capacity over
        # it, the jobs in flight and the jobs waiting to be re-sent.
        self._jobs_tx, self._jobs_rx = anyio.create_memory_object_stream[Job](math.inf)
        self._ledger = Ledger(
            self._config.buffer_size,
            (self._jobs_tx, self._jobs_rx),
            max_bytes=self._config.buffer_max_bytes,
        )
        self._backoff = backoff or Backoff(
            base=self._config.backoff_base, cap=self._config.backoff_cap
        )
        connect = connection or amqp_link_factory(self._config, self._backoff)
        self._topology = topology or Topology()
        self._conn = connect(self._events_tx, name=name, topology=self._topology)
        # Declaring the topology again after a job for a declared route came back
        # unroutable: due (rate-limited), then in progress until the link reports Declared.
        # Sending pauses meanwhile (those jobs would only come back too).
        self._declare_due: float | None = None
        self._declaring = False
        self._last_declare = -math.inf
        self._redeclared = 0
        self._returned_in_a_row = 0  # returned for good since the last confirm
        # After a nack the broker is refusing (e.g. a full queue with reject-publish): wait
        # before re-sending, longer each time, instead of hammering it.
        self._nack_streak = 0
        self._resend_at = -math.inf
        # Up to twice max_in_flight jobs are handed to the connection: the I/O thread keeps
        # max_in_flight unconfirmed at the broker and queues the rest, so it can refill its
        # window on every ack without a round trip through this loop.
        self._handoff_limit = 2 * self._config.max_in_flight
        # ... and refills that queue only when it has room for at least half a window (or
        # holds less than one): handing over a few jobs per ack costs a wake-up of each
        # thread for a handful of jobs, and caps throughput at the cross-thread round trips.
        self._refill_below = self._handoff_limit - max(1, self._config.max_in_flight // 2)
        self._blocked = False
        self._deadline = _NO_DEADLINE
        self._last_confirm: float | None = None
        self._room = anyio.Event()
        self._full_reported = False
        self._flushed = anyio.Event()
        self._drained = anyio.Event()  # set while the buffer is empty
        self._confirm_latency = LatencyHistogram()
        self._new_id = MessageIds()
        self._calls = 0
        self._encode = PublishEncoder(persistent=self._config.persistent)
        self._metrics = metrics
        self._outbox: Outbox | None = None
        if self._config.outbox is not None:
            self._outbox = Outbox(self._config.outbox, synchronous=self._config.outbox_sync)

    # -- lifecycle ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop accepting, flush (up to ``flush_timeout``), close the connection cleanly.

        Returns within ``flush_timeout`` plus a short close grace whatever the link is doing;
        at once for a publisher that was never started.
        """
        self._begin_close()
        if self._stack is None:  # never entered: nothing buffered, no connection
            self._close_streams()
            return
        with anyio.CancelScope(shield=True):
            await self._flushed.wait()

    async def _prepare(self) -> None:
        if self._outbox is not None:
            try:
                found = await self._outbox.open()
            except OutboxError as exc:  # the configured path: say so (exit code 2)
                raise ConfigError("outbox", str(exc)) from None
            log.info("outbox.opened worker=%s path=%s jobs_to_recover=%d", self._name,
                     self._outbox.path, found)  # fmt: skip

    def _register(self) -> None:
        self._metrics.add_publisher(self._name, self.statistics, running=lambda: self._running)

    def _on_close_begun(self) -> None:
        self._deadline = self._clock() + self._config.flush_timeout
        self._jobs_tx.close()
        self._room.set()

    # -- submitting ----------------------------------------------------------------------

    def submit(
        self,
        payload: object,
        *,
        routing_key: str,
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """Accept a job into the buffer and return its ``message_id`` at once.

        ``payload`` is bytes (sent as is) or anything JSON-serializable; ``content_type``
        overrides the one Warren sets (``application/octet-stream`` or ``application/json``).

        Raises:
            InvalidJob: the payload is not serializable or over ``max_job_bytes``.
            BufferFull: the buffer is full and the policy is ``drop-newest`` or ``block``
                (with ``block``, ``await enqueue()`` waits for room instead).
            PublisherClosed: shutdown has begun.
        """
        if self._outbox is not None:
            raise OutboxError(
                "submit() cannot wait for the disk: with an outbox, use await enqueue() or"
                " await publish() (they return once the job is durable)"
            )
        job = self._make_job(payload, routing_key, exchange, headers, message_id, content_type)
        self._offer(job)
        return job.message_id

    async def enqueue(
        self,
        payload: object,
        *,
        routing_key: str,
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        transaction: Callable[[sqlite3.Connection], object] | None = None,
    ) -> str:
        """Like ``submit``, but under the ``block`` policy wait for room instead of refusing.

        A scheduling point only when it waits; a cancellation point then, and at least once
        every 64 calls (not on every call: that check is costly, see ``_wait_for_room``).

        With an outbox it returns once the job is on disk, and ``transaction(db)``, if given,
        runs in the same SQLite transaction as the job's row (on the outbox's thread): an
        application's own row and its side effect are stored together or not at all.
        """
        job = self._make_job(payload, routing_key, exchange, headers, message_id, content_type)
        await self._wait_for_room(job)
        if self._outbox is None:
            _no_transaction(transaction)
            self._offer(job)
        else:
            await self._offer_durably(job, self._outbox, transaction)
        return job.message_id

    async def publish(
        self,
        payload: object,
        *,
        routing_key: str,
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        transaction: Callable[[sqlite3.Connection], object] | None = None,
    ) -> str:
        """Enqueue, then wait until the broker confirmed the job; return its ``message_id``.

        Raises:
            JobReturned: unroutable. JobDropped: evicted, or unflushed at shutdown.
            plus what ``enqueue`` raises. Cancelling the wait does not withdraw the job.
        """
        job = self._make_job(payload, routing_key, exchange, headers, message_id, content_type)
        await self._wait_for_room(job)
        job.waiter = outcome = Outcome()
        if self._outbox is None:
            _no_transaction(transaction)
            self._offer(job)
        else:
            await self._offer_durably(job, self._outbox, transaction)
        await outcome.wait()
        return job.message_id

    async def _wait_for_room(self, job: Job) -> None:
        # A scheduling point only when it must wait: a full yield per job halves throughput
        # for producers that enqueue in a tight loop, and the bounded buffer guarantees such a
        # loop waits (and so yields) within buffer_size jobs. A cancellation point every
        # _CANCEL_CHECK_EVERY calls: asking the backend per call was a seventh of the loop's
        # time in the publish benchmark.
        self._calls = (self._calls + 1) % _CANCEL_CHECK_EVERY
        if not self._calls:
            await anyio.lowlevel.checkpoint_if_cancelled()
        if self._config.overflow == "block":
            while not self._ledger.fits(job) and not self._closing:
                await self._room.wait()

    def _offer(self, job: Job) -> None:
        """Apply the overflow policy, then accept ``job``."""
        self._make_room(job)
        self._accept(job)

    async def _offer_durably(
        self,
        job: Job,
        outbox: Outbox,
        transaction: Callable[[sqlite3.Connection], object] | None,
    ) -> None:
        """Apply the overflow policy, hold room for ``job`` while it is written to the outbox
        (with ``transaction``), then accept it: accepted means durable."""
        self._make_room(job)
        ledger = self._ledger
        ledger.reserve(job)
        if self._drained.is_set():
            self._drained = anyio.Event()
        try:
            await outbox.write(job, transaction)
        except BaseException:
            if job.outbox_id is None:  # not stored: not accepted
                ledger.unreserve(job)
                ledger.refuse()
                self._settled()
            else:  # cancelled after its commit: accepted all the same (see Outbox.write)
                self._accept_durable(job, outbox)
            raise
        self._accept_durable(job, outbox)

    def _accept_durable(self, job: Job, outbox: Outbox) -> None:
        """Accept a reserved job that is on disk. If the stop began while it was written,
        it stays there for the next start (counted as kept): it is never taken back, since
        a transaction of the caller's may have committed with it."""
        ledger = self._ledger
        try:
            ledger.accept_reserved(job)
        except ClosedResourceError:
            ledger.keep_reserved(job)
            self._settled()
            if job.waiter is not None:
                job.waiter.fail(PublisherClosed(
                    f"stopped before the broker confirmed {job.message_id!r}; it stays in"
                    f" the outbox {outbox.path!r} and the next start sends it"
                ))  # fmt: skip
            log.warning("outbox.kept worker=%s jobs=1 reason=shutdown path=%s", self._name,
                        outbox.path)  # fmt: skip

    def _make_room(self, job: Job) -> None:
        """The overflow policy, when ``job`` does not fit: evict older jobs, or refuse it."""
        ledger = self._ledger
        if not ledger.fits(job):
            policy = self._config.overflow
            if not self._full_reported:
                # once per episode, not once per refused job: a long outage must not flood logs
                self._full_reported = True
                log.warning(
                    "buffer.full worker=%s capacity=%d bytes=%d max_bytes=%d policy=%s"
                    " connected=%s",
                    self._name, self._config.buffer_size, ledger.bytes, ledger.max_bytes,
                    policy, self._link.connected,
                )  # fmt: skip
            if policy == "drop-oldest" and ledger.evictable():
                while not ledger.fits(job) and ledger.evictable():  # large: several evictions
                    self._settle_dropped([ledger.evict_oldest()], "evicted")
            if not ledger.fits(job):  # drop-newest, block, or only jobs still being written
                ledger.refuse()
                hint = f" or {ledger.max_bytes:,} bytes"
                hint += "; await enqueue() waits for room" if policy == "block" else ""
                raise BufferFull(self._config.buffer_size, hint)

    def _make_job(
        self,
        payload: object,
        routing_key: str,
        exchange: str | None,
        headers: Mapping[str, Any] | None,
        message_id: str | None,
        content_type: str | None = None,
    ) -> Job:
        if self._closing:
            raise PublisherClosed(f"publisher {self._name!r} is closed to new jobs")
        # 63 characters are at most 252 UTF-8 bytes: encode only longer keys to measure them
        if message_id is not None and (not isinstance(message_id, str) or not message_id):
            raise InvalidJob("message_id must be a non-empty str")
        body, encoded_as = encode_body(payload, max_bytes=self._config.max_job_bytes)
        content_type = content_type or encoded_as
        exchange = self._config.exchange if exchange is None else exchange
        message_id = message_id or self._new_id()
        # (exchange, routing key, message id, content type, headers, body size) -> wire
        wire = self._encode(exchange, routing_key, message_id, content_type, headers, len(body))
        return Job(body, exchange, routing_key, message_id, self._clock(), wire)

    def _accept(self, job: Job) -> None:
        try:
            self._ledger.accept(job)
        except ClosedResourceError:
            raise PublisherClosed(f"publisher {self._name!r} is closed to new jobs") from None
        if self._drained.is_set():
            self._drained = anyio.Event()

    # -- state ---------------------------------------------------------------------------

    def statistics(self) -> PublisherStatistics:
        """Counters and state now; cheap enough to call from a health check."""
        books = self._ledger
        link = self._link
        now = self._clock()
        since = None if self._last_confirm is None else now - self._last_confirm
        return PublisherStatistics(
            connected=link.connected,
            node=link.node,
            blocked=self._blocked,
            buffer_depth=books.depth,
            buffer_capacity=books.capacity,
            buffer_bytes=books.bytes,
            buffer_max_bytes=books.max_bytes,
            in_flight=len(books.inflight),
            submitted=books.submitted,
            confirmed=books.confirmed,
            returned=books.returned,
            dropped=dict(books.dropped),
            nacked=books.nacked,
            rerouted=books.rerouted,
            redeclared=self._redeclared,
            returned_in_a_row=self._returned_in_a_row,
            kept=books.kept,
            outbox_jobs=0 if self._outbox is None else self._outbox.rows,
            outbox_bytes=0 if self._outbox is None else self._outbox.disk_bytes,
            outbox_recovered=0 if self._outbox is None else self._outbox.recovered,
            reconnects=link.reconnects,
            last_error=link.last_error,
            seconds_since_confirm=since,
            confirm_seconds=self._confirm_latency.snapshot(),
            oldest_job_age=self._oldest_job_age(now),
            disconnected_seconds=link.disconnected_seconds(),
            confirm_timeouts=link.confirm_timeouts,
            failed=link.failed,
        )

    def _oldest_job_age(self, now: float) -> float:
        # A scrape from another thread may race the loop; then this scrape reads 0.
        try:
            oldest = self._ledger.oldest()
        except (RuntimeError, IndexError, StopIteration):
            return 0.0
        return 0.0 if oldest is None else max(0.0, now - oldest.submitted_at)

    async def wait_flushed(self) -> None:
        """Return once the buffer is empty (every accepted job settled)."""
        while self._ledger.depth:
            await self._drained.wait()

    # -- the worker loop -----------------------------------------------------------------

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
                    await self._room.wait()
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
            if self._declare_due is not None and self._link.connected:
                wait = self._declare_due - self._clock()
                if wait <= 0:
                    self._declare_again()
                else:  # rate-limited: the last re-declaration was moments ago
                    match await select(events=self._events_rx, timeout=min(wait, remaining)):
                        case Received(_, event):
                            self._on_event(event)
                    continue
            can_send = (
                self._link.connected
                and not self._blocked
                and not self._declaring
                and self._declare_due is None
                and len(books.inflight) <= refill_below
            )
            if can_send and books.resend and (wait := self._resend_at - self._clock()) > 0:
                # paused after a nack; new jobs wait too, so order is kept
                match await select(events=self._events_rx, timeout=min(wait, remaining)):
                    case Received(_, event):
                        self._on_event(event)
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
                self._on_confirmed(session, jobs)
            case Nacked(session, jobs):
                requeue = self._ledger.nacked_now(jobs)
                self._nack_streak += 1
                self._resend_at = self._clock() + self._backoff.delay(self._nack_streak)
                log.warning("publish.nacked worker=%s jobs=%d", self._name, len(requeue))
            case Returned(session, job, code, text):
                self._on_returned(job, code, text)
            case Declared(session):
                if session == self._session and self._declaring:
                    self._declaring = False
                    self._redeclared += 1
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
        if (
            code == _NO_ROUTE
            and job.returns < _MAX_REROUTES
            and self._topology.routes(job.exchange, job.routing_key)
        ):
            if self._ledger.rerouted_now(job):
                job.returns += 1
                if not self._declaring and self._declare_due is None:
                    self._declare_due = max(self._clock(), self._last_declare + _REDECLARE_INTERVAL)
            return
        if self._ledger.returned_now(job):
            self._returned_in_a_row += 1
            if self._outbox is not None:
                self._outbox.forget(job)
            self._settled()
            if job.waiter is not None:
                job.waiter.fail(JobReturned(job.message_id, code, text))
            log.warning(
                "publish.returned worker=%s exchange=%r routing_key=%r reply=%d %s",
                self._name, job.exchange, job.routing_key, code, text,
            )  # fmt: skip

    def _declare_again(self) -> None:
        self._declare_due = None
        self._last_declare = self._clock()
        if self._conn.declare(self._session):  # else that connection is going: reconnecting
            self._declaring = True  # declares the topology anyway
            log.warning(
                "topology.redeclaring worker=%s reason=a job for a declared route came back"
                " unroutable (NO_ROUTE) jobs_to_resend=%d",
                self._name, len(self._ledger.resend),
            )  # fmt: skip

    def _on_confirmed(self, session: int, jobs: tuple[Job, ...]) -> None:
        settled = self._ledger.confirmed_now(jobs)
        if not settled:
            return
        now = self._clock()
        observe = self._confirm_latency.observe
        for job in settled:
            observe(now - job.submitted_at)
            if job.waiter is not None:
                job.waiter.confirm()
        if self._outbox is not None:
            forget = self._outbox.forget
            for job in settled:
                forget(job)
        self._nack_streak = 0
        self._returned_in_a_row = 0
        self._last_confirm = now
        self._settled()

    def _on_lost(self) -> dict[str, int]:
        self._blocked = False
        self._declaring = False  # the next connection declares the topology on connect
        self._declare_due = None
        in_flight = self._ledger.lost()
        return {"in_flight": in_flight, "buffered": self._ledger.depth}

    def _abandon_work(self) -> int:
        if self._outbox is not None:
            self._keep_in_outbox(self._outbox, "gave_up")
            return 0  # nothing lost: the next start sends them
        jobs = self._ledger.drop_all("gave_up")
        self._settle_dropped(jobs, "gave_up")
        return len(jobs)

    def _keep_in_outbox(self, outbox: Outbox, why: str) -> None:
        """Stopping with jobs unsettled: they stay on disk, and the next start sends them."""
        jobs = self._ledger.keep_all()
        for job in jobs:
            if job.waiter is not None:
                job.waiter.fail(PublisherClosed(
                    f"stopped ({why}) before the broker confirmed {job.message_id!r}; it stays"
                    f" in the outbox {outbox.path!r} and the next start sends it"
                ))  # fmt: skip
        if jobs:
            self._settled()
            log.warning("outbox.kept worker=%s jobs=%d reason=%s path=%s", self._name,
                        len(jobs), why, outbox.path)  # fmt: skip

    def _settled(self) -> None:
        """Jobs left the buffer: wake who waits for room or for an empty buffer."""
        depth = self._ledger.depth
        # hysteresis: an evict-then-accept cycle at capacity must not log twice per job
        cap = self._config.buffer_size
        if self._full_reported and depth < cap - max(1, cap // 10):
            self._full_reported = False
            log.info("buffer.room worker=%s depth=%d", self._name, depth)
        if depth == 0:
            self._drained.set()
        if not self._room.is_set():
            self._room.set()
            self._room = anyio.Event()

    def _settle_dropped(self, jobs: list[Job], reason: str) -> None:
        for job in jobs:
            if job.waiter is not None:
                job.waiter.fail(JobDropped(job.message_id, reason))
            if self._outbox is not None:
                self._outbox.forget(job)
        if jobs:
            self._settled()

    def _drop_unflushed(self) -> None:
        if self._outbox is not None:
            self._keep_in_outbox(self._outbox, "shutdown")
            return
        jobs = self._ledger.drop_all("shutdown")
        self._settle_dropped(jobs, "shutdown")
        log.error(
            "shutdown.unflushed worker=%s jobs_dropped=%d flush_timeout=%.1fs",
            self._name, len(jobs), self._config.flush_timeout,
        )  # fmt: skip


def _no_transaction(transaction: object) -> None:
    if transaction is not None:
        raise InvalidJob("transaction= needs an outbox: PublisherConfig(outbox=path)")
