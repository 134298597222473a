"""The seam between a worker and its broker connection.

A worker needs a few things of a connection: ``run()`` it (connect, reconnect, report every
change as an event on the stream it was given), hand it jobs to ``publish`` or delivery tags
to ``ack`` for one numbered session, ask it to ``declare`` its topology again, and
``aclose()`` it. ``AmqpConnection`` is the real
one; tests pass a fake through ``Publisher(connection=...)`` / ``Consumer(connection=...)``
to drive the worker's accounting through any sequence of events without a broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from warren._amqp.consume import ConsumeSpec
    from warren._amqp.events import ConnectionEvent, Delivered
    from warren._amqp.topology import Topology
    from warren._common.backoff import Backoff
    from warren._config import PublisherConfig
    from warren._job import Job


class Link(Protocol):
    """One logical broker connection, owned by one worker."""

    async def run(self) -> None:
        """Connect and reconnect until cancelled, closed, refused, or out of attempts."""

    def publish(self, session: int, jobs: list[Job]) -> bool:
        """Hand ``jobs`` to connection ``session``; False if that connection is gone."""

    def ack(self, session: int, tags: list[int]) -> bool:
        """Ack deliveries of connection ``session``; False if it is gone."""

    def reject(self, session: int, tags: list[int]) -> bool:
        """Reject deliveries of ``session`` without requeue (the broker dead-letters them
        if the queue has a dead-letter exchange); False if it is gone."""

    def declare(self, session: int) -> bool:
        """Declare the topology again on connection ``session`` (a ``Declared`` event
        follows); False if that connection is gone."""

    async def aclose(self) -> None:
        """Close on purpose: ``run()`` returns without reconnecting."""


class LinkFactory(Protocol):
    """Builds a worker's ``Link``, reporting on ``events`` (and ``deliveries``, to consume)."""

    def __call__(
        self,
        events: MemoryObjectSendStream[ConnectionEvent],
        *,
        name: str,
        topology: Topology,
        consume: ConsumeSpec | None = None,
        deliveries: MemoryObjectSendStream[Delivered] | None = None,
    ) -> Link: ...


def amqp_link_factory(config: PublisherConfig, backoff: Backoff) -> LinkFactory:
    """The real thing: an ``AmqpConnection`` with ``config`` and ``backoff``."""
    from warren._amqp.connection import AmqpConnection

    def connect(
        events: MemoryObjectSendStream[ConnectionEvent],
        *,
        name: str,
        topology: Topology,
        consume: ConsumeSpec | None = None,
        deliveries: MemoryObjectSendStream[Delivered] | None = None,
    ) -> Link:
        return AmqpConnection(
            config,
            events,
            name=name,
            topology=topology,
            backoff=backoff,
            consume=consume,
            deliveries=deliveries,
        )

    return connect
