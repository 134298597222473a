"""Healing a route deleted under a running publisher: re-send the job, declare again.

A job returned unroutable (``NO_ROUTE``) to a route the publisher's topology declares means
its queue was deleted under it (an operator, a policy, a broker that lost it). Such a job
goes back to be re-sent once the topology is declared again, at most ``MAX_REROUTES`` times
(a queue deleted again and again, or a policy that removes it, must not keep a job forever;
then it is returned like any other), and the topology is declared again at most once per
``REDECLARE_INTERVAL``. Sending pauses while a declaration is due or in progress: the jobs
sent meanwhile would only come back too.

Plain state, no I/O: the loop asks the connection to declare and reports what it said.
Invariant (``tests/unit/test_redeclare.py``): a declaration is never both due and in
progress, two start at least ``REDECLARE_INTERVAL`` apart, and no job is re-sent for a
deleted route more than ``MAX_REROUTES`` times.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from warren._amqp import Topology
    from warren._job import Job

NO_ROUTE: Final = 312
MAX_REROUTES: Final = 3
REDECLARE_INTERVAL: Final = 1.0  # seconds: at most one re-declaration per interval


@final
class Redeclare:
    """Whether a declaration is due (and when) or in progress. Not thread-safe."""

    __slots__ = ("_last", "_topology", "declaring", "due", "redeclared")

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self.due: float | None = None  # declare again at this time (rate-limited), or None
        self.declaring = False  # the connection took the request; until it says Declared
        self._last = -math.inf  # when the last declaration began
        self.redeclared = 0  # declarations finished on a live connection

    def reroutes(self, job: Job, code: int) -> bool:
        """Whether ``job``, returned with reply ``code``, goes back to be re-sent."""
        return (
            code == NO_ROUTE
            and job.returns < MAX_REROUTES
            and self._topology.routes(job.exchange, job.routing_key)
        )

    def rerouted(self, job: Job, now: float) -> None:
        """``job`` went back to be re-sent: a declaration is due, unless one already is."""
        job.returns += 1
        if not self.declaring and self.due is None:
            self.due = max(now, self._last + REDECLARE_INTERVAL)

    def begin(self, now: float, *, taken: bool) -> None:
        """The loop asked the connection to declare at ``now``; ``taken`` is its answer (not
        taken: that connection is going, and the next one declares on connect)."""
        self.due = None
        self._last = now
        self.declaring = taken

    def done(self) -> bool:
        """The connection declared the topology: True if that finished ours in progress."""
        if not self.declaring:
            return False
        self.declaring = False
        self.redeclared += 1
        return True

    def lost(self) -> None:
        """The connection died: the next one declares the topology on connect."""
        self.declaring = False
        self.due = None
