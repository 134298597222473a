"""A fake broker connection for the workers' ``connection=`` seam: the test plays the broker.

``FakeLink`` does what ``AmqpConnection`` does from a worker's point of view (numbered
sessions, jobs handed over per session, events on the worker's stream) and nothing else, so
a test can put a real ``Publisher`` through any sequence of connects, losses, confirms,
nacks and returns, with no broker and no sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from warren._amqp import (
    Confirmed,
    Connected,
    ConnectionLost,
    Declared,
    Delivered,
    GaveUp,
    Nacked,
    Returned,
)

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from warren._amqp import ConnectionEvent, ConsumeSpec, Link, Topology
    from warren._job import Job


class FakeLink:
    """One worker's fake connection. The worker calls ``publish``/``ack``/``reject``/
    ``declare`` as it would on a real one; the test answers by calling ``connect``, ``lose``,
    ``confirm``, ``nack``, ``return_one``, ``deliver``, ``declared`` or ``give_up``, each of
    which puts the event a broker would cause on the worker's stream. ``unconfirmed`` holds
    the jobs handed over on the live session and not yet answered, oldest first."""

    def __init__(
        self,
        events: MemoryObjectSendStream[ConnectionEvent],
        deliveries: MemoryObjectSendStream[Delivered] | None = None,
    ) -> None:
        self._events = events
        self._deliveries = deliveries
        self.acked: list[int] = []
        self.rejected: list[int] = []
        self.session = 0  # the live session, 0 while down
        self._last = 0
        self.unconfirmed: list[Job] = []  # handed over on the live session, in order
        self.handed_over = 0
        self.declare_requests = 0
        self.closed = anyio.Event()

    # -- what the worker calls -----------------------------------------------------------

    async def run(self) -> None:
        await self.closed.wait()

    def publish(self, session: int, jobs: list[Job]) -> bool:
        if session != self.session or not self.session:
            return False
        self.unconfirmed += jobs
        self.handed_over += len(jobs)
        return True

    def ack(self, session: int, tags: list[int]) -> bool:
        if session != self.session or not self.session:
            return False
        self.acked += tags
        return True

    def reject(self, session: int, tags: list[int]) -> bool:
        if session != self.session or not self.session:
            return False
        self.rejected += tags
        return True

    def declare(self, session: int) -> bool:
        if session != self.session or not self.session:
            return False
        self.declare_requests += 1
        return True

    async def aclose(self) -> None:
        self.closed.set()

    # -- what the test (the broker) does -------------------------------------------------

    def connect(self) -> None:
        """A new session comes up (the worker hands its jobs to it)."""
        if self.session:
            raise RuntimeError("FakeLink.connect: a session is already up; lose() it first")
        self._last += 1
        self.session = self._last
        self._events.send_nowait(Connected(self.session, "amqp://fake/"))

    def lose(self) -> None:
        if self.session:
            self._events.send_nowait(ConnectionLost(self.session, "stream_lost", "cut", False))
            self.session = 0
            self.unconfirmed.clear()

    def confirm(self, n: int) -> list[Job]:
        _check_count("confirm", n)
        jobs, self.unconfirmed = self.unconfirmed[:n], self.unconfirmed[n:]
        if jobs:
            self._events.send_nowait(Confirmed(self.session, tuple(jobs)))
        return jobs

    def nack(self, n: int) -> list[Job]:
        _check_count("nack", n)
        jobs, self.unconfirmed = self.unconfirmed[:n], self.unconfirmed[n:]
        if jobs:
            self._events.send_nowait(Nacked(self.session, tuple(jobs)))
        return jobs

    def return_one(self) -> Job | None:
        if not self.unconfirmed:
            return None
        job = self.unconfirmed.pop(0)
        self._events.send_nowait(Returned(self.session, job, 312, "NO_ROUTE"))
        return job

    def deliver(self, tag: int, body: bytes, message_id: str) -> None:
        if self._deliveries is None:
            raise RuntimeError("FakeLink.deliver: this is a publisher's link, not a consumer's")
        self._deliveries.send_nowait(
            Delivered(self.session, tag, message_id, {}, body, False, None)
        )

    def declared(self) -> None:
        self._events.send_nowait(Declared(self.session))

    def give_up(self) -> None:
        self._events.send_nowait(GaveUp(3, "fake: refused"))


class FakeLinks:
    """Pass as ``connection=`` to a ``Publisher`` or ``Consumer``: it makes one ``FakeLink``
    per worker and keeps them in ``made``, in order."""

    def __init__(self) -> None:
        self.made: list[FakeLink] = []

    def __call__(
        self,
        events: MemoryObjectSendStream[ConnectionEvent],
        *,
        name: str,
        topology: Topology,
        consume: ConsumeSpec | None = None,
        deliveries: MemoryObjectSendStream[Delivered] | None = None,
    ) -> Link:
        link = FakeLink(events, deliveries)
        self.made.append(link)
        return link


def _check_count(what: str, n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"FakeLink.{what}: n must be an integer >= 0, got {n!r}")
