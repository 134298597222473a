"""The publisher's buffer accounting, as plain code with no I/O.

Every accepted job is in exactly one place until it is settled: *waiting* (the job
memory-stream, oldest first), *in flight* (handed to a connection, unconfirmed) or *to
re-send* (its connection died, the broker nacked it, or it came back unroutable to a
route the topology declares, which is declared again). It leaves only by being settled:
confirmed, returned (unroutable), dropped with a reason, or *kept* (a stop with an outbox
leaves it on disk for the next start). A job being written to the outbox holds *reserved*
room before it is accepted. So, at every moment::

    submitted == confirmed + returned + dropped(evicted, shutdown, gave_up) + kept
                 + (depth - reserved)
    depth == waiting + in_flight + to_resend + reserved <= capacity
    bytes == the cost of those jobs (payload + JOB_OVERHEAD_BYTES each) <= max_bytes

Operations change the books and return what the worker loop must do (jobs to send, waiters
to wake or fail); the loop does the I/O. ``tests/unit/test_ledger.py`` drives random sequences of
them with hypothesis and checks the invariant after every step, with no broker.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final, final

from anyio import EndOfStream, WouldBlock

from warren._config import JOB_OVERHEAD_BYTES
from warren._select.streams import buffered

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from warren._job import Job

DROP_REASONS: Final = ("refused", "evicted", "shutdown", "gave_up")


@final
class Ledger:
    """Where each accepted job is, and how many ended which way. Not thread-safe."""

    __slots__ = (
        "_rx",
        "_tx",
        "bytes",
        "capacity",
        "confirmed",
        "depth",
        "dropped",
        "inflight",
        "kept",
        "max_bytes",
        "nacked",
        "rerouted",
        "resend",
        "reserved",
        "reserved_bytes",
        "returned",
        "submitted",
    )

    def __init__(
        self,
        capacity: int,
        waiting: tuple[MemoryObjectSendStream[Job], MemoryObjectReceiveStream[Job]],
        max_bytes: float = float("inf"),
    ) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._tx, self._rx = waiting  # an unbounded stream: capacity is enforced here
        self.depth = 0
        self.submitted = 0
        self.confirmed = 0
        self.returned = 0
        self.nacked = 0
        self.rerouted = 0
        self.kept = 0  # left in the outbox at a stop: the next start sends them
        # room taken by jobs being written to the outbox (not yet accepted)
        self.reserved = 0
        self.reserved_bytes = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        # handed to the connection and not yet settled, in hand-off order
        self.inflight: dict[Job, None] = {}
        self.resend: deque[Job] = deque()

    def fits(self, job: Job) -> bool:
        """Room for ``job``, in jobs and in bytes."""
        return self.depth < self.capacity and self.bytes + cost(job) <= self.max_bytes

    def accept(self, job: Job) -> None:
        """Take ``job`` in (the caller checked ``full`` and applied the overflow policy).

        Raises:
            anyio.ClosedResourceError: the job stream was closed (shutdown began).
        """
        self._tx.send_nowait(job)
        self.depth += 1
        self.bytes += cost(job)
        self.submitted += 1

    def reserve(self, job: Job) -> None:
        """Take room for ``job`` while it is made durable (the caller checked ``fits``)."""
        self.reserved += 1
        self.reserved_bytes += cost(job)
        self.depth += 1
        self.bytes += cost(job)

    def unreserve(self, job: Job) -> None:
        """Give back the room of a job that was not accepted after all."""
        self.reserved -= 1
        self.reserved_bytes -= cost(job)
        self.depth -= 1
        self.bytes -= cost(job)

    def accept_reserved(self, job: Job) -> None:
        """The reserved ``job`` is durable: accept it.

        Raises:
            anyio.ClosedResourceError: shutdown began meanwhile (it stays reserved).
        """
        self._tx.send_nowait(job)
        self.reserved -= 1
        self.reserved_bytes -= cost(job)
        self.submitted += 1

    def keep_reserved(self, job: Job) -> None:
        """A reserved job on disk that the stop will not accept: it is kept for the next
        start (accepted and kept at once)."""
        self.unreserve(job)
        self.submitted += 1
        self.kept += 1

    def evictable(self) -> bool:
        """Whether ``evict_oldest`` has a job to take (reserved ones are not yet accepted)."""
        return self.depth > self.reserved

    def refuse(self) -> None:
        """Count a job refused at the door (never accepted)."""
        self.dropped["refused"] += 1

    def evict_oldest(self) -> Job:
        """Drop the oldest unsettled job to make room, and return it (fail its waiter).

        Oldest first: waiting to be re-sent, then in flight (it may still reach the broker;
        a late confirm for it is ignored), then waiting in the stream.
        """
        if self.resend:
            victim = self.resend.popleft()
        elif self.inflight:
            victim = next(iter(self.inflight))
            del self.inflight[victim]
        else:
            victim = self._rx.receive_nowait()
        self.dropped["evicted"] += 1
        self.depth -= 1
        self.bytes -= cost(victim)
        return victim

    def take(self, first: Job | None, room: int) -> list[Job]:
        """Up to ``room`` jobs to hand to the connection now: ``first`` (already received from
        the stream), then those to re-send, then waiting ones. They are in flight from now."""
        batch: list[Job] = []
        if first is not None:
            batch.append(first)
            room -= 1
        resend = self.resend
        while room > 0 and resend:
            batch.append(resend.popleft())
            room -= 1
        receive = self._rx.receive_nowait
        while room > 0:
            try:
                batch.append(receive())
            except (WouldBlock, EndOfStream):
                break
            room -= 1
        inflight = self.inflight
        for job in batch:
            inflight[job] = None
        return batch

    def confirmed_now(self, jobs: tuple[Job, ...]) -> list[Job]:
        """The broker acked ``jobs``: the ones that were still in flight are settled and
        returned (stale confirms for evicted or re-queued jobs are ignored)."""
        pop = self.inflight.pop
        settled = [job for job in jobs if pop(job, 0) is None]
        if settled:
            self.confirmed += len(settled)
            self.depth -= len(settled)
            self.bytes -= sum(len(job.body) for job in settled) + JOB_OVERHEAD_BYTES * len(settled)
        return settled

    def nacked_now(self, jobs: tuple[Job, ...]) -> list[Job]:
        """The broker nacked ``jobs``: the ones still in flight go to the front of the re-send
        queue, in order, and are returned."""
        pop = self.inflight.pop
        requeue = [job for job in jobs if pop(job, 0) is None]
        self.resend.extendleft(reversed(requeue))
        self.nacked += len(requeue)
        return requeue

    def returned_now(self, job: Job) -> bool:
        """The broker returned ``job`` as unroutable: settled if it was still in flight."""
        if self.inflight.pop(job, 0) is not None:
            return False
        self.returned += 1
        self.depth -= 1
        self.bytes -= cost(job)
        return True

    def rerouted_now(self, job: Job) -> bool:
        """The broker returned ``job``, and it goes back to be re-sent (its route is being
        declared again): True if it was still in flight. Behind other jobs to re-send."""
        if self.inflight.pop(job, 0) is not None:
            return False
        self.resend.append(job)
        self.rerouted += 1
        return True

    def lost(self) -> int:
        """The connection died: everything in flight is re-sent first, in order."""
        pending = list(self.inflight)
        self.inflight.clear()
        self.resend.extendleft(reversed(pending))
        return len(pending)

    def drop_all(self, reason: str) -> list[Job]:
        """Drop every unsettled job (shutdown past its deadline, or gave up): return them."""
        jobs = self._take_all()
        self.dropped[reason] += len(jobs)
        self.depth -= len(jobs)
        self.bytes -= sum(cost(job) for job in jobs)
        return jobs

    def keep_all(self) -> list[Job]:
        """A stop with an outbox: every unsettled job stays on disk for the next start;
        they leave these books as ``kept`` (not dropped: nothing is lost)."""
        jobs = self._take_all()
        self.kept += len(jobs)
        self.depth -= len(jobs)
        self.bytes -= sum(cost(job) for job in jobs)
        return jobs

    def _take_all(self) -> list[Job]:
        jobs = list(self.resend) + list(self.inflight)
        self.inflight.clear()
        self.resend.clear()
        receive = self._rx.receive_nowait
        while True:
            try:
                jobs.append(receive())
            except (WouldBlock, EndOfStream):
                break
        return jobs

    def oldest(self) -> Job | None:
        """The unsettled job accepted first (for its age); None when the buffer is empty.

        Safe to call from a scrape on another thread racing the loop: it may miss, never
        raise anything but ``RuntimeError``/``IndexError``/``StopIteration``.
        """
        heads = [self.resend[0]] if self.resend else []
        if self.inflight:
            heads.append(next(iter(self.inflight)))
        waiting = buffered(self._rx)
        if waiting:
            heads.append(waiting[0])
        return min(heads, key=_submitted_at) if heads else None

    def check(self) -> None:
        """Assert the invariant (tests call this after every step)."""
        waiting = len(buffered(self._rx))
        dropped = self.dropped
        settled = self.confirmed + self.returned + self.kept
        settled += dropped["evicted"] + dropped["shutdown"] + dropped["gave_up"]
        accepted = self.depth - self.reserved
        assert self.submitted == settled + accepted, (self.submitted, settled, accepted)
        assert accepted == waiting + len(self.inflight) + len(self.resend)
        assert not set(self.inflight) & set(self.resend)
        assert 0 <= self.depth <= self.capacity, (self.depth, self.capacity)
        unsettled = [*buffered(self._rx), *self.inflight, *self.resend]
        assert self.bytes == self.reserved_bytes + sum(cost(job) for job in unsettled), self.bytes
        assert self.bytes <= self.max_bytes, (self.bytes, self.max_bytes)


def _submitted_at(job: Job) -> float:
    return job.submitted_at


def cost(job: Job) -> int:
    """What holding ``job`` costs the buffer, in bytes."""
    return len(job.body) + JOB_OVERHEAD_BYTES
