"""Settling jobs: what follows once the broker (or a stop) decided a job's fate.

The ledger moves jobs between its books; this does the rest, in one place for every
ending: it tells whoever awaits a job what became of it (confirmed, or failed with
``JobReturned``, ``JobDropped`` or ``PublisherClosed``), forgets its outbox row, and wakes
who waits for room or for an empty buffer. It also keeps what the broker's verdicts say
about the route: jobs returned for good since the last confirm (sustained, the publisher is
unready), the confirm latency, and the pause after nacks: a broker that refuses (a full
queue with ``reject-publish``) is not hammered; each nack in a row waits longer before the
re-send (``Backoff``), and a confirm ends the streak.

Plain code, no I/O (an outbox row is forgotten in memory; its next batch deletes it), one
call per frame from the broker, not per job. Invariant (``tests/unit/test_settlement.py``):
every job that leaves the books has its waiter resolved exactly once, with the error that
says how it ended, and its outbox row forgotten; the room and drained events agree with
the ledger's depth.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, final

import anyio

from warren._exceptions import JobDropped, JobReturned, PublisherClosed
from warren._worker.statistics import LatencyHistogram

if TYPE_CHECKING:
    from collections.abc import Callable

    from warren._common.backoff import Backoff
    from warren._job import Job
    from warren._outbox.outbox import Outbox
    from warren._publish.ledger import Ledger
    from warren._publish.overflow import OverflowPolicy

log = logging.getLogger("warren.publisher")


@final
class Settlement:
    """Settles the jobs ``ledger`` lets go of. Not thread-safe: the publisher's loop owns it."""

    __slots__ = (
        "_backoff",
        "_clock",
        "_ledger",
        "_name",
        "_outbox",
        "_overflow",
        "drained",
        "last_confirm",
        "latency",
        "nack_streak",
        "resend_at",
        "returned_in_a_row",
        "room",
    )

    def __init__(
        self,
        ledger: Ledger,
        overflow: OverflowPolicy,
        outbox: Outbox | None,
        *,
        backoff: Backoff,
        clock: Callable[[], float],
        name: str,
    ) -> None:
        self._ledger = ledger
        self._overflow = overflow
        self._outbox = outbox
        self._backoff = backoff
        self._clock = clock
        self._name = name
        self.room = anyio.Event()  # set (and replaced) whenever jobs leave the buffer
        self.drained = anyio.Event()  # set while the buffer is empty
        self.latency = LatencyHistogram()  # submit to confirm, seconds
        self.last_confirm: float | None = None
        self.returned_in_a_row = 0  # returned for good since the last confirm
        self.nack_streak = 0  # nacks since the last confirm
        self.resend_at = -math.inf  # after a nack, re-send (and send) nothing before this

    # -- the broker's verdicts -------------------------------------------------------------

    def confirmed(self, jobs: tuple[Job, ...]) -> None:
        """The broker acked ``jobs`` (stale confirms, for jobs no longer in flight, are ignored)."""
        settled = self._ledger.confirmed_now(jobs)
        if not settled:
            return
        now = self._clock()
        observe = self.latency.observe
        for job in settled:
            observe(now - job.submitted_at)
            if job.waiter is not None:
                job.waiter.confirm()
        if self._outbox is not None:
            forget = self._outbox.forget
            for job in settled:
                forget(job)
        self.nack_streak = 0
        self.returned_in_a_row = 0
        self.last_confirm = now
        self.freed()

    def nacked(self, jobs: tuple[Job, ...]) -> None:
        """The broker nacked ``jobs``: they are re-sent first, after a pause."""
        requeue = self._ledger.nacked_now(jobs)
        self.nack_streak += 1
        self.resend_at = self._clock() + self._backoff.delay(self.nack_streak)
        log.warning("publish.nacked worker=%s jobs=%d", self._name, len(requeue))

    def returned(self, job: Job, code: int, text: str) -> None:
        """The broker returned ``job`` unroutable, for good."""
        if not self._ledger.returned_now(job):
            return
        self.returned_in_a_row += 1
        if self._outbox is not None:
            self._outbox.forget(job)
        self.freed()
        if job.waiter is not None:
            job.waiter.fail(JobReturned(job.message_id, code, text))
        log.warning(
            "publish.returned worker=%s exchange=%r routing_key=%r reply=%d %s",
            self._name, job.exchange, job.routing_key, code, text,
        )  # fmt: skip

    # -- endings of our own ----------------------------------------------------------------

    def dropped(self, jobs: list[Job], reason: str) -> None:
        """``jobs`` left the books as dropped with ``reason`` (evicted, shutdown, gave_up)."""
        outbox = self._outbox
        for job in jobs:
            if job.waiter is not None:
                job.waiter.fail(JobDropped(job.message_id, reason))
            if outbox is not None:
                outbox.forget(job)
        if jobs:
            self.freed()

    def drop_all(self, reason: str) -> list[Job]:
        """Drop every unsettled job (no outbox to keep them in) and return them."""
        jobs = self._ledger.drop_all(reason)
        self.dropped(jobs, reason)
        return jobs

    def keep_all(self, why: str, outbox: Outbox) -> None:
        """Stopping (``why``) with jobs unsettled: they stay on disk, the next start sends
        them."""
        self._kept(self._ledger.keep_all(), outbox, why, f" ({why})")

    def keep_reserved(self, job: Job, outbox: Outbox) -> None:
        """A reserved job reached the disk after the stop began: it is never taken back (a
        transaction of the caller's may have committed with it), so it stays there."""
        self._ledger.keep_reserved(job)
        self._kept([job], outbox, "shutdown", "")

    def _kept(self, jobs: list[Job], outbox: Outbox, why: str, said: str) -> None:
        for job in jobs:
            if job.waiter is not None:
                job.waiter.fail(PublisherClosed(
                    f"stopped{said} before the broker confirmed {job.message_id!r}; it stays"
                    f" in the outbox {outbox.path!r} and the next start sends it"
                ))  # fmt: skip
        if jobs:
            self.freed()
            log.warning("outbox.kept worker=%s jobs=%d reason=%s path=%s", self._name,
                        len(jobs), why, outbox.path)  # fmt: skip

    def not_stored(self, job: Job) -> None:
        """A reserved job did not reach the disk: it was never accepted, and is refused."""
        ledger = self._ledger
        ledger.unreserve(job)
        ledger.refuse()
        self.freed()

    # -- waking ----------------------------------------------------------------------------

    def freed(self) -> None:
        """Jobs left the buffer: wake who waits for room or for an empty buffer."""
        depth = self._ledger.depth
        self._overflow.eased(depth)
        if depth == 0:
            self.drained.set()
        if not self.room.is_set():
            self.room.set()
            self.room = anyio.Event()

    def filling(self) -> None:
        """A job was accepted into an empty buffer: it is not drained any more."""
        self.drained = anyio.Event()
