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
import time
from typing import TYPE_CHECKING, Any, final

import anyio
from anyio import ClosedResourceError

from warren._config import PublisherConfig
from warren._exceptions import ConfigError, InvalidJob, OutboxError
from warren._job import Job, Outcome
from warren._publish.job_maker import JobMaker
from warren._publish.loop import PublishLoop
from warren._publish.snapshot import publisher_statistics

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Mapping

    from warren._amqp import LinkFactory, Topology
    from warren._common.backoff import Backoff
    from warren._ops.metrics import Metrics
    from warren._outbox.outbox import Outbox
    from warren._worker.statistics import PublisherStatistics

_CANCEL_CHECK_EVERY = 64
log = logging.getLogger("warren.publisher")


@final
class Publisher(PublishLoop):
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
        config = config or PublisherConfig()
        super().__init__(config, name, topology, backoff, clock, connection)
        self._jobs = JobMaker(config, name, clock)
        self._make_job = self._jobs.make  # bound once: called per job
        self._calls = 0
        self._metrics = metrics

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
        self._jobs.closed = True
        self._deadline = self._clock() + self._config.flush_timeout
        self._jobs_tx.close()
        self._settle.room.set()

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
                await self._settle.room.wait()

    def _offer(self, job: Job) -> None:
        """Apply the overflow policy, then accept ``job``."""
        if not self._ledger.fits(job):
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
        if not self._ledger.fits(job):
            self._make_room(job)
        self._ledger.reserve(job)
        if self._settle.drained.is_set():
            self._settle.filling()
        try:
            await outbox.write(job, transaction)
        except BaseException:
            if job.outbox_id is None:  # not stored: not accepted
                self._settle.not_stored(job)
            else:  # cancelled after its commit: accepted all the same (see Outbox.write)
                self._accept_durable(job, outbox)
            raise
        self._accept_durable(job, outbox)

    def _accept_durable(self, job: Job, outbox: Outbox) -> None:
        """Accept a reserved job that is on disk. If the stop began while it was written,
        it stays there for the next start (counted as kept)."""
        try:
            self._ledger.accept_reserved(job)
        except ClosedResourceError:
            self._settle.keep_reserved(job, outbox)

    def _make_room(self, job: Job) -> None:
        """The overflow policy, as ``job`` does not fit: evict older jobs, or refuse it."""
        victims = self._overflow.make_room(job, connected=self._link.connected)
        if victims:
            self._settle.dropped(victims, "evicted")
        if not self._ledger.fits(job):  # drop-newest, block, or only jobs still being written
            raise self._overflow.refuse()

    # -- state ---------------------------------------------------------------------------

    def statistics(self) -> PublisherStatistics:
        """Counters and state now; cheap enough to call from a health check."""
        return publisher_statistics(
            self._ledger, self._link, self._settle, self._redeclare.redeclared,
            self._outbox, blocked=self._blocked, now=self._clock(),
        )  # fmt: skip

    async def wait_flushed(self) -> None:
        """Return once the buffer is empty (every accepted job settled)."""
        while self._ledger.depth:
            await self._settle.drained.wait()


def _no_transaction(transaction: object) -> None:
    if transaction is not None:
        raise InvalidJob("transaction= needs an outbox: PublisherConfig(outbox=path)")
