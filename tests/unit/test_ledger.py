"""The buffer's books, with no broker: random sequences of everything that can happen to
accepted jobs, the invariant checked after every step.

``submitted == confirmed + returned + dropped + depth`` (refused jobs were never accepted),
per-reason drop counts match what happened, no job is settled twice, and the buffer never
holds more than its capacity.
"""

from __future__ import annotations

import math
from collections import Counter

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from warren._job import Job
from warren._publish.ledger import Ledger

pytestmark = pytest.mark.timeout(60)


def make_job(n: int, size: int = 1) -> Job:
    return Job(
        body=b"x" * size,
        exchange="",
        routing_key="q",
        message_id=f"job-{n}",
        submitted_at=float(n),
        wire=(b"", b""),
    )


class Books(RuleBasedStateMachine):
    """The model: which jobs are unsettled, and how each settled one ended."""

    def __init__(self) -> None:
        super().__init__()
        tx, rx = anyio.create_memory_object_stream[Job](math.inf)
        self.tx, self.rx = tx, rx
        # 8 jobs, or 4 KiB: whichever binds first (bodies of up to 1,500 bytes)
        self.ledger = Ledger(capacity=8, waiting=(tx, rx), max_bytes=4096)
        self.next = 0
        self.unsettled: list[Job] = []  # accepted, not settled, in accept order
        self.ever_sent: list[Job] = []  # every job ever handed to a connection
        self.ended: dict[Job, str] = {}  # settled job -> how
        self.refused = 0
        self.reserved: list[Job] = []  # room held while being written to an outbox

    def teardown(self) -> None:
        self.tx.close()
        self.rx.close()

    def _draw_sent(self, data: st.DataObject) -> list[Job]:
        """Jobs the broker settles in one frame: in the order they were sent (tag order)."""
        picked = data.draw(st.sets(st.integers(0, len(self.ever_sent) - 1), max_size=6))
        return list(dict.fromkeys(self.ever_sent[i] for i in sorted(picked)))

    def _settle(self, jobs: list[Job], how: str) -> None:
        for job in jobs:
            assert job not in self.ended, f"{job} settled twice ({self.ended[job]}, then {how})"
            assert job in self.unsettled, f"{job} settled but never accepted"
            self.unsettled.remove(job)
            self.ended[job] = how

    @rule(evict=st.booleans(), size=st.integers(0, 1500))
    def submit(self, evict: bool, size: int) -> None:
        job = make_job(self.next, size)
        self.next += 1
        if self._make_room(job, evict):
            self.ledger.accept(job)
            self.unsettled.append(job)

    def _make_room(self, job: Job, evict: bool) -> bool:
        if not self.ledger.fits(job):
            if not evict or not self.ledger.evictable():
                self.ledger.refuse()
                self.refused += 1
                return False
            while not self.ledger.fits(job) and self.ledger.evictable():  # several, if large
                victim = self.ledger.evict_oldest()
                assert victim in self.unsettled
                self._settle([victim], "evicted")
            if not self.ledger.fits(job):  # only reserved jobs left to evict
                self.ledger.refuse()
                self.refused += 1
                return False
        return True

    @rule(evict=st.booleans(), size=st.integers(0, 1500))
    def reserve_for_the_outbox(self, evict: bool, size: int) -> None:
        job = make_job(self.next, size)
        self.next += 1
        if self._make_room(job, evict):
            self.ledger.reserve(job)
            self.reserved.append(job)

    @precondition(lambda self: self.reserved)
    @rule(data=st.data(), ending=st.sampled_from(["accepted", "refused", "kept"]))
    def outbox_write_ends(self, data: st.DataObject, ending: str) -> None:
        job = self.reserved.pop(data.draw(st.integers(0, len(self.reserved) - 1)))
        if ending == "accepted":
            self.ledger.accept_reserved(job)
            self.unsettled.append(job)
        elif ending == "kept":  # on disk, but the stop began: left for the next start
            self.ledger.keep_reserved(job)
            self.ended[job] = "kept"
        else:  # the disk refused it: never accepted
            self.ledger.unreserve(job)
            self.ledger.refuse()
            self.refused += 1

    @rule(room=st.integers(1, 6), receive_first=st.booleans())
    def hand_to_connection(self, room: int, receive_first: bool) -> None:
        first = None
        if receive_first:
            try:
                first = self.rx.receive_nowait()
            except anyio.WouldBlock:
                first = None
        batch = self.ledger.take(first, room)
        assert len(batch) <= room
        assert len(set(batch)) == len(batch)
        self.ever_sent += batch

    @precondition(lambda self: self.ever_sent)
    @rule(data=st.data())
    def broker_confirms(self, data: st.DataObject) -> None:
        # any jobs ever sent: stale confirms (evicted, re-queued) included
        jobs = self._draw_sent(data)
        expected = [j for j in jobs if j in self.ledger.inflight]
        settled = self.ledger.confirmed_now(tuple(jobs))
        assert settled == expected
        self._settle(settled, "confirmed")

    @precondition(lambda self: self.ever_sent)
    @rule(data=st.data())
    def broker_nacks(self, data: st.DataObject) -> None:
        jobs = self._draw_sent(data)
        expected = [j for j in jobs if j in self.ledger.inflight]
        requeued = self.ledger.nacked_now(tuple(jobs))
        assert requeued == expected
        assert list(self.ledger.resend)[: len(requeued)] == requeued  # re-sent first, in order

    @precondition(lambda self: self.ever_sent)
    @rule(data=st.data())
    def broker_returns(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self.ever_sent))
        was_in_flight = job in self.ledger.inflight
        assert self.ledger.returned_now(job) == was_in_flight
        if was_in_flight:
            self._settle([job], "returned")

    @precondition(lambda self: self.ever_sent)
    @rule(data=st.data())
    def broker_returns_to_a_declared_route(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self.ever_sent))
        was_in_flight = job in self.ledger.inflight
        assert self.ledger.rerouted_now(job) == was_in_flight
        if was_in_flight:
            assert self.ledger.resend[-1] is job  # not settled: to be re-sent

    @rule()
    def connection_lost(self) -> None:
        in_flight = list(self.ledger.inflight)
        assert self.ledger.lost() == len(in_flight)
        assert not self.ledger.inflight
        assert list(self.ledger.resend)[: len(in_flight)] == in_flight

    @rule(reason=st.sampled_from(["shutdown", "gave_up"]))
    def drop_everything(self, reason: str) -> None:
        dropped = self.ledger.drop_all(reason)
        assert set(dropped) == set(self.unsettled)
        self._settle(dropped, reason)
        assert self.ledger.depth == len(self.reserved)

    @rule()
    def stop_keeping_everything_in_the_outbox(self) -> None:
        kept = self.ledger.keep_all()
        assert set(kept) == set(self.unsettled)
        self._settle(kept, "kept")
        assert self.ledger.depth == len(self.reserved)

    @invariant()
    def books_balance(self) -> None:
        ledger = self.ledger
        ledger.check()
        ended = Counter(self.ended.values())
        assert ledger.confirmed == ended["confirmed"]
        assert ledger.returned == ended["returned"]
        for reason in ("evicted", "shutdown", "gave_up"):
            assert ledger.dropped[reason] == ended[reason], reason
        assert ledger.kept == ended["kept"]
        assert ledger.dropped["refused"] == self.refused
        assert ledger.depth == len(self.unsettled) + len(self.reserved)
        assert ledger.submitted == len(self.unsettled) + len(self.ended)
        holding = [*self.unsettled, *self.reserved]
        assert ledger.bytes == sum(len(j.body) + 512 for j in holding) <= 4096
        # the age gauge reads the oldest job at the head of each queue: one that is unsettled
        oldest = ledger.oldest()
        assert (oldest is None) == (not self.unsettled)
        assert oldest is None or oldest in self.unsettled


# 200 runs of up to 50 steps: thousands of steps, a few seconds
Books.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
test_books_balance_after_every_step = Books.TestCase
