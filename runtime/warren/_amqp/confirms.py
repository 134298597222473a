"""Which publishes await the broker's confirm, as plain books with no I/O.

The channel is in confirm mode: the broker numbers a channel's publishes 1, 2, 3, ...
(delivery tags) and answers each with a ``basic.ack`` or ``basic.nack`` for one tag or, with
``multiple``, for every tag up to it. A ``basic.return`` (unroutable, mandatory flag) carries no
tag but comes before its publish's ack, so it is matched to the oldest unconfirmed, not yet
returned publish with the same id, exchange and routing key. The tracker numbers jobs as they
are sent and settles them as answers come, so at every moment::

    unconfirmed == {tag: job for every tag sent and not yet covered by an answer}
    every tag in unconfirmed is in [lowest_tag, next_tag); each job is settled at most once

and every job an ack settles is reported as returned if a return was matched to it, else as
confirmed. Per batch of sends it also keeps the last tag and the send time, so the watchdog
can see how long the oldest publish has waited (``tests/unit/test_confirms.py``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from warren._job import Job

    Return = tuple[Job, int, str]  # a publish the broker returned: reply code and text


@final
class ConfirmTracker:
    """Delivery tag -> job for one confirming channel. Not thread-safe."""

    __slots__ = ("_batches", "_returned", "lowest_tag", "next_tag", "unconfirmed")

    def __init__(self) -> None:
        self.unconfirmed: dict[int, Job] = {}  # in tag order
        self.lowest_tag = 1  # no unconfirmed tag is lower
        self.next_tag = 1  # the tag of the next publish
        self._batches: deque[tuple[int, float]] = deque()  # (last tag, sent at)
        self._returned: dict[int, tuple[int, str]] = {}  # tag -> reply, until its ack

    def sent(self, jobs: list[Job], now: float) -> None:
        """``jobs`` were published at ``now``, in order: they get the next tags."""
        if not jobs:
            return
        tag = self.next_tag
        self.next_tag = end = tag + len(jobs)
        self.unconfirmed.update(zip(range(tag, end), jobs, strict=True))
        self._batches.append((end - 1, now))

    def settle(
        self, tag: int, multiple: bool, *, nack: bool
    ) -> tuple[list[Job], list[Return] | None]:
        """The broker answered ``tag`` (or every tag up to it, ``multiple``).

        Returns the jobs the answer settles, oldest first, and the returned ones. For an ack
        the first list holds the confirmed jobs only and the second the returned ones, or
        None when no return was pending at all (the common case). For a nack the first list
        holds every job it settles (returned or not) and the second is None.
        """
        tags: range | tuple[int] = range(self.lowest_tag, tag + 1) if multiple else (tag,)
        unconfirmed = self.unconfirmed
        replies = self._returned
        if not replies:
            settled = [job for t in tags if (job := unconfirmed.pop(t, None)) is not None]
            self._advance()
            return settled, None
        pairs = [(t, job) for t in tags if (job := unconfirmed.pop(t, None)) is not None]
        self._advance()
        if nack:
            for t, _ in pairs:
                replies.pop(t, None)
            return [job for _, job in pairs], None
        confirmed: list[Job] = []
        returned: list[Return] = []
        for t, job in pairs:
            reply = replies.pop(t, None)
            if reply is None:
                confirmed.append(job)
            else:
                returned.append((job, reply[0], reply[1]))
        return confirmed, returned

    def returned(self, key: tuple[str, str, str], reply_code: int, reply_text: str) -> bool:
        """A ``basic.return`` for ``key`` (message id, exchange, routing key): matched to the
        oldest unconfirmed, not yet returned publish with that key (two jobs that share a
        caller-chosen id are told apart by that order). False if none matches."""
        for tag, job in self.unconfirmed.items():
            if tag not in self._returned and (job.message_id, job.exchange, job.routing_key) == key:
                self._returned[tag] = (reply_code, reply_text)
                return True
        return False

    def oldest_sent_at(self) -> float | None:
        """When the oldest batch with a publish still unconfirmed was sent (None: none)."""
        return self._batches[0][1] if self._batches else None

    def restart_clock(self, now: float) -> None:
        """Count every unconfirmed publish's wait from ``now`` (the broker blocked us, so
        the confirms waited because of its alarm)."""
        self._batches = deque((tag, now) for tag, _ in self._batches)

    def _advance(self) -> None:
        unconfirmed = self.unconfirmed
        while self.lowest_tag < self.next_tag and self.lowest_tag not in unconfirmed:
            self.lowest_tag += 1
        batches = self._batches
        while batches and batches[0][0] < self.lowest_tag:
            batches.popleft()
