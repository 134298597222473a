"""The confirm books, with no broker: random sequences of publishes, acks and nacks (single
and ``multiple``, in any order), returns and blocked-broker clock restarts, checked against a
plain model after every step.

Every job sent is settled exactly once, by the first answer that covers its tag; an ack
reports a job the broker returned as returned, never as confirmed; a nack reports every job
it covers; and the oldest publish still waiting is the one the watchdog is shown.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from warren._amqp.confirms import ConfirmTracker
from warren._job import Job

pytestmark = pytest.mark.timeout(60)


def make_job(n: int, message_id: str | None = None, routing_key: str = "q") -> Job:
    return Job(body=b"x", exchange="", routing_key=routing_key,
               message_id=message_id or f"job-{n}", submitted_at=0.0, wire=(b"", b""))  # fmt: skip


class Books(RuleBasedStateMachine):
    """The model: each sent tag's job and send time, and how each settled job ended."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = ConfirmTracker()
        self.clock = 0.0
        self.jobs: dict[int, Job] = {}  # every tag sent
        self.sent_at: dict[int, float] = {}  # tag -> its batch's send time (restarts included)
        self.open: dict[int, Job] = {}  # tag -> job, not yet answered
        self.returned: dict[int, tuple[int, str]] = {}  # open tags the broker returned
        self.ended: dict[Job, str] = {}

    def _settle(self, jobs: list[Job], how: str) -> None:
        for job in jobs:
            assert job not in self.ended, f"{job.message_id} settled twice"
            self.ended[job] = how

    @rule(n=st.integers(0, 5), ids=st.lists(st.sampled_from(["a", "b", None]), max_size=5),
          advance=st.floats(0, 2))  # fmt: skip
    def send(self, n: int, ids: list[str | None], advance: float) -> None:
        self.clock += advance
        first = self.tracker.next_tag
        jobs = [make_job(first + i, ids[i] if i < len(ids) else None) for i in range(n)]
        self.tracker.sent(jobs, self.clock)
        for i, job in enumerate(jobs):
            self.jobs[first + i] = self.open[first + i] = job
            self.sent_at[first + i] = self.clock
        assert self.tracker.next_tag == first + n

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), multiple=st.booleans(), nack=st.booleans())
    def answer(self, data: st.DataObject, multiple: bool, nack: bool) -> None:
        tag = data.draw(st.sampled_from(sorted(self.jobs)))  # stale tags too
        covered = sorted(t for t in self.open if (t <= tag if multiple else t == tag))
        settled, returned = self.tracker.settle(tag, multiple, nack=nack)
        had_returns = bool(self.returned)
        replies = {t: self.returned.pop(t) for t in covered if t in self.returned}
        for t in covered:
            del self.open[t]
        if nack:
            assert settled == [self.jobs[t] for t in covered]
            assert returned is None
            self._settle(settled, "nacked")
            return
        assert settled == [self.jobs[t] for t in covered if t not in replies]
        if not had_returns:
            assert returned is None
        else:
            assert returned == [(self.jobs[t], *replies[t]) for t in covered if t in replies]
        self._settle(settled, "confirmed")
        self._settle([job for job, _, _ in returned or ()], "returned")

    @precondition(lambda self: self.open)
    @rule(data=st.data(), code=st.sampled_from([312, 313]))
    def broker_returns(self, data: st.DataObject, code: int) -> None:
        tag = data.draw(st.sampled_from(sorted(self.open)))
        job = self.open[tag]
        key = (job.message_id, job.exchange, job.routing_key)
        # the oldest open, not yet returned publish with the same key is the one
        same = [t for t in sorted(self.open) if t not in self.returned
                and (self.open[t].message_id, self.open[t].exchange,
                     self.open[t].routing_key) == key]  # fmt: skip
        assert self.tracker.returned(key, code, "NO_ROUTE") == bool(same)
        if same:
            self.returned[same[0]] = (code, "NO_ROUTE")

    @rule()
    def unknown_return(self) -> None:
        assert not self.tracker.returned(("nobody", "", "q"), 312, "NO_ROUTE")

    @rule(advance=st.floats(0, 2))
    def broker_unblocks(self, advance: float) -> None:
        self.clock += advance
        self.tracker.restart_clock(self.clock)
        for tag in self.open:
            self.sent_at[tag] = self.clock

    @invariant()
    def books_match(self) -> None:
        tracker = self.tracker
        assert tracker.unconfirmed == self.open
        assert list(tracker.unconfirmed) == sorted(tracker.unconfirmed), "tag order"
        assert all(tracker.lowest_tag <= t < tracker.next_tag for t in tracker.unconfirmed)
        assert set(self.ended) | set(self.open.values()) == set(self.jobs.values())
        assert not set(self.ended) & set(self.open.values())
        oldest = self.sent_at[min(self.open)] if self.open else None
        assert tracker.oldest_sent_at() == oldest


Books.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_confirm_books = Books.TestCase


def test_a_multiple_ack_settles_every_open_tag_up_to_it_once() -> None:
    tracker = ConfirmTracker()
    jobs = [make_job(i) for i in range(1, 7)]
    tracker.sent(jobs[:3], 1.0)
    tracker.sent(jobs[3:], 2.0)
    assert tracker.settle(2, False, nack=False) == ([jobs[1]], None)
    assert tracker.oldest_sent_at() == 1.0
    assert tracker.settle(4, True, nack=False) == ([jobs[0], jobs[2], jobs[3]], None)
    assert tracker.oldest_sent_at() == 2.0, "the first batch is done"
    assert tracker.settle(4, True, nack=False) == ([], None), "a repeated answer settles none"
    assert tracker.settle(6, True, nack=True) == ([jobs[4], jobs[5]], None)
    assert tracker.unconfirmed == {}
    assert tracker.oldest_sent_at() is None


def test_a_returned_job_is_reported_as_returned_by_its_ack_and_forgotten_by_a_nack() -> None:
    tracker = ConfirmTracker()
    same = [make_job(1, "dup"), make_job(2, "dup"), make_job(3, "dup")]
    tracker.sent(same, 0.0)
    assert tracker.returned(("dup", "", "q"), 312, "NO_ROUTE")  # the oldest: tag 1
    assert tracker.returned(("dup", "", "q"), 312, "NO_ROUTE")  # then tag 2
    assert tracker.settle(2, True, nack=False) == ([], [(same[0], 312, "NO_ROUTE"),
                                                        (same[1], 312, "NO_ROUTE")])  # fmt: skip
    assert tracker.returned(("dup", "", "q"), 312, "NO_ROUTE")  # tag 3
    assert tracker.settle(3, False, nack=True) == ([same[2]], None)
    fresh = make_job(4)
    tracker.sent([fresh], 0.0)
    assert tracker.settle(4, False, nack=False) == ([fresh], None), "no return left pending"
