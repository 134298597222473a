"""The overflow policy: what a full buffer does with one more job, and when to say so.

``drop-oldest`` evicts the oldest unsettled jobs until the new one fits (several, for a
large one; never one still being written to the outbox, which is not accepted yet);
``drop-newest`` and ``block`` refuse it (``block`` callers of ``enqueue``/``publish``
waited for room before they got here). A full buffer is reported once per *episode*: after
``buffer.full`` it says ``buffer.room`` only once the depth fell a tenth of the capacity
below it, so an evict-then-accept cycle at capacity, or a long outage, does not log per job.

Plain code, no I/O: the caller settles the victims and raises the refusal.
Invariant (``tests/unit/test_overflow.py``): after ``make_room`` the job fits, or the policy
refuses it, or nothing evictable is left; only ``drop-oldest`` evicts, oldest first, and
never more than it must.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

from warren._exceptions import BufferFull

if TYPE_CHECKING:
    from warren._config import Overflow
    from warren._job import Job
    from warren._publish.ledger import Ledger

log = logging.getLogger("warren.publisher")


@final
class OverflowPolicy:
    """Applies ``policy`` to the jobs that do not fit ``ledger``. Not thread-safe."""

    __slots__ = ("_ledger", "_name", "_room_below", "full", "policy")

    def __init__(self, ledger: Ledger, policy: Overflow, name: str) -> None:
        self._ledger = ledger
        self._name = name
        self.policy = policy
        capacity = ledger.capacity
        # hysteresis: an evict-then-accept cycle at capacity must not log twice per job
        self._room_below = capacity - max(1, capacity // 10)
        self.full = False  # a full buffer was reported and room not yet

    def make_room(self, job: Job, *, connected: bool) -> list[Job]:
        """``job`` does not fit: report the episode, evict under ``drop-oldest``, and return
        the victims (the caller settles them, then calls ``refuse`` if it still does not fit)."""
        ledger = self._ledger
        if not self.full:
            # once per episode, not once per refused job: a long outage must not flood logs
            self.full = True
            log.warning(
                "buffer.full worker=%s capacity=%d bytes=%d max_bytes=%d policy=%s"
                " connected=%s",
                self._name, ledger.capacity, ledger.bytes, ledger.max_bytes, self.policy,
                connected,
            )  # fmt: skip
        victims: list[Job] = []
        if self.policy == "drop-oldest":
            while not ledger.fits(job) and ledger.evictable():  # large: several evictions
                victims.append(ledger.evict_oldest())
        return victims

    def refuse(self) -> BufferFull:
        """Count the job refused (drop-newest, block, or only jobs still being written to
        evict) and return the error to raise."""
        ledger = self._ledger
        ledger.refuse()
        hint = f" or {ledger.max_bytes:,} bytes"
        hint += "; await enqueue() waits for room" if self.policy == "block" else ""
        return BufferFull(ledger.capacity, hint)

    def eased(self, depth: int) -> None:
        """Jobs left the buffer: end the episode once ``depth`` is well below capacity."""
        if self.full and depth < self._room_below:
            self.full = False
            log.info("buffer.room worker=%s depth=%d", self._name, depth)
