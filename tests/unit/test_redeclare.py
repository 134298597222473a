"""Re-routing and re-declaring, with no broker: random sequences of returns, clock ticks,
declarations and lost connections, the invariant checked after every step.

A declaration is never both due and in progress; two start at least ``REDECLARE_INTERVAL``
apart and never before they are due; no job is re-sent for a deleted route more than
``MAX_REROUTES`` times; ``redeclared`` counts the declarations that finished.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from warren import Queue, Topology
from warren._job import Job
from warren._publish.redeclare import MAX_REROUTES, NO_ROUTE, REDECLARE_INTERVAL, Redeclare

TOPOLOGY = Topology(queues=(Queue(name="declared"),))


def make_job(routing_key: str = "declared") -> Job:
    return Job(b"x", "", routing_key, "id", 0.0, (b"", b""))


def test_only_a_no_route_return_to_a_declared_route_is_rerouted() -> None:
    heal = Redeclare(TOPOLOGY)
    assert heal.reroutes(make_job(), NO_ROUTE)
    assert not heal.reroutes(make_job("nobody.declares.this"), NO_ROUTE)
    assert not heal.reroutes(make_job(), 313)  # NO_CONSUMERS: not a deleted queue
    job = make_job()
    for _ in range(MAX_REROUTES):
        heal.rerouted(job, 0.0)
    assert job.returns == MAX_REROUTES
    assert not heal.reroutes(job, NO_ROUTE)  # then it is returned like any other


def test_a_declaration_the_connection_did_not_take_is_not_in_progress() -> None:
    heal = Redeclare(TOPOLOGY)
    heal.rerouted(make_job(), 5.0)
    due = heal.due
    assert due == 5.0
    heal.begin(5.0, taken=False)
    assert (heal.due, heal.declaring, heal.done(), heal.redeclared) == (None, False, False, 0)


class Healing(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.heal = Redeclare(TOPOLOGY)
        self.now = 0.0
        self.starts: list[float] = []
        self.finished = 0
        self.jobs = [make_job() for _ in range(3)]

    @rule(index=st.integers(0, 2))
    def a_job_comes_back_unroutable(self, index: int) -> None:
        job = self.jobs[index]
        before = job.returns
        if self.heal.reroutes(job, NO_ROUTE):
            was_idle = not self.heal.declaring and self.heal.due is None
            self.heal.rerouted(job, self.now)
            assert job.returns == before + 1
            if was_idle:
                assert self.heal.due is not None
                assert self.heal.due >= self.now
        else:
            assert before == MAX_REROUTES

    @rule(seconds=st.floats(0.0, 2.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: self.heal.due is not None and self.heal.due <= self.now)
    @rule(taken=st.booleans())
    def the_loop_declares(self, taken: bool) -> None:
        self.heal.begin(self.now, taken=taken)
        self.starts.append(self.now)

    @rule()
    def the_connection_says_declared(self) -> None:
        if self.heal.done():
            self.finished += 1

    @rule()
    def the_connection_dies(self) -> None:
        self.heal.lost()
        assert self.heal.due is None
        assert not self.heal.declaring

    @invariant()
    def never_due_and_declaring(self) -> None:
        assert not (self.heal.declaring and self.heal.due is not None)
        gaps = [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]
        assert all(gap >= REDECLARE_INTERVAL for gap in gaps), gaps
        assert all(job.returns <= MAX_REROUTES for job in self.jobs)
        assert self.heal.redeclared == self.finished


Healing.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_healing_holds_after_every_step = Healing.TestCase
