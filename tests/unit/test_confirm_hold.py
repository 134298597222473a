"""The confirm hold's decisions, with no broker or timer: random sequences of holds, timer
firings and reports.

Every job held is taken exactly once and in the order held; a hold reports as soon as it
holds a quarter window; and at most one timer is armed at a time.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warren._amqp.confirm_hold import ConfirmHold
from warren._job import Job

pytestmark = pytest.mark.timeout(60)


def make_jobs(start: int, n: int) -> list[Job]:
    return [Job(body=b"", exchange="", routing_key="q", message_id=f"m{i}", submitted_at=0.0,
                wire=(b"", b"")) for i in range(start, start + n)]  # fmt: skip


Step = tuple[str, int]
steps = st.lists(
    st.tuples(st.sampled_from(["add", "add", "add", "fire", "take"]), st.integers(0, 7)),
    max_size=60,
)


@given(window=st.integers(1, 40), steps=steps)
def test_every_held_job_is_taken_once_in_order(window: int, steps: list[Step]) -> None:
    hold = ConfirmHold(window)
    upto = max(1, window // 4)
    added: list[Job] = []
    taken: list[Job] = []
    timer_armed = False
    for action, n in steps:
        if action == "add":
            jobs = make_jobs(len(added), n)
            added += jobs
            verdict = hold.add(jobs)
            if len(hold.jobs) >= upto:
                assert verdict == "report"
                taken += hold.take()
            else:
                assert verdict == ("wait" if timer_armed else "arm")
                timer_armed = True
        elif action == "fire" and timer_armed:  # a timer fires only if one was armed
            taken += hold.timer_fired()
            timer_armed = False
        elif action == "take":  # another event is reported: what is held goes first
            taken += hold.take()
        assert len(hold.jobs) < upto, "a full hold is reported at once"
        assert taken + hold.jobs == added
    taken += hold.take()
    assert taken == added
    assert len(set(map(id, taken))) == len(taken)


def test_a_quarter_window_is_reported_without_a_timer() -> None:
    hold = ConfirmHold(1000)
    assert hold.add(make_jobs(0, 249)) == "arm"
    assert hold.add(make_jobs(249, 0)) == "wait"
    assert hold.add(make_jobs(249, 1)) == "report"
    assert len(hold.take()) == 250
    assert hold.timer_fired() == []
    assert hold.add(make_jobs(250, 1)) == "arm", "the next hold arms its own timer"


def test_a_window_of_one_reports_every_confirm() -> None:
    hold = ConfirmHold(1)
    assert hold.add(make_jobs(0, 1)) == "report"
