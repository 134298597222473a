"""Confirms reported in batches: when the I/O thread holds them and when it reports them.

The broker acks every few messages; a report for each woke the event loop, and through it the
producers waiting for room, once per handful of jobs, which cost more CPU than the jobs
themselves. So confirmed jobs are held while more are on their way, and reported after at
most ``HOLD_CONFIRMS_FOR`` (one timer per hold) or once a quarter of ``max_in_flight`` jobs are
held: the event loop refills the I/O thread's queue when it has room for half a window by its
count, which runs this far behind. The session reports the last confirm of a window (nothing
left unconfirmed) at once, so a lone publish waits for nothing, and reports what is held
before any other event, so order is kept. Plain decisions with no I/O: every held job is
taken exactly once, in the order it was held (``tests/unit/test_confirm_hold.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, final

if TYPE_CHECKING:
    from warren._job import Job

HOLD_CONFIRMS_FOR = 0.001  # seconds a confirm may wait to share the loop's wake-up


@final
class ConfirmHold:
    """Confirmed jobs not yet reported. Not thread-safe."""

    __slots__ = ("_timer", "_upto", "jobs")

    def __init__(self, max_in_flight: int) -> None:
        self.jobs: list[Job] = []  # held, in the order confirmed
        self._timer = False  # a timer is armed
        self._upto = max(1, max_in_flight // 4)

    def add(self, jobs: list[Job]) -> Literal["report", "arm", "wait"]:
        """Hold ``jobs``. Then ``report``: take() and report them now (the hold is full);
        ``arm``: start a timer of ``HOLD_CONFIRMS_FOR`` that calls ``timer_fired``;
        ``wait``: a timer is armed already."""
        held = self.jobs
        held += jobs
        if len(held) >= self._upto:
            return "report"
        if self._timer:
            return "wait"
        self._timer = True
        return "arm"

    def timer_fired(self) -> list[Job]:
        """The timer ran out: what is held now, to report (may be empty)."""
        self._timer = False
        return self.take()

    def take(self) -> list[Job]:
        """Everything held, oldest first; the hold is empty after."""
        held, self.jobs = self.jobs, []
        return held
