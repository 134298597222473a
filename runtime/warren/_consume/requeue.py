"""Re-publishes a consumer's failed deliveries before it acks them: to a delay queue for a
retry, or to the dead-letter queue, through a publisher with confirms.

The rare path, apart from the consumer's loop: where each failure goes is decided by
``outcome`` (plain code); this does the I/O, and falls back when even that fails, so that what
the broker delivered can always be settled.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Final, final

from warren._consume.message import Message
from warren._consume.outcome import (
    DeadLetter,
    Outcome,
    Retry,
    dead_letter_headers,
    retry,
    retry_headers,
    route,
)
from warren._publish.publisher import Publisher

if TYPE_CHECKING:
    from warren._amqp import LinkFactory
    from warren._config import PublisherConfig
    from warren._consume.topology import ConsumerTopology
    from warren._ops.metrics import Metrics

log = logging.getLogger("warren.consumer")  # the consumer's lines, under its logger
BROKER_MAX_MESSAGE_BYTES: Final = 512 * 1024 * 1024  # RabbitMQ's ceiling for one message


@final
class Requeuer:
    """Re-publishes failed deliveries of the consumer ``name`` (``publisher``: enter it for
    as long as the consumer runs)."""

    def __init__(
        self,
        connection_config: PublisherConfig,
        queues: ConsumerTopology,
        *,
        max_attempts: int,
        metrics: Metrics,
        name: str,
        connection: LinkFactory | None,
    ) -> None:
        self._queues = queues
        self._max_attempts = max_attempts
        self._name = name
        # bounded by what the broker takes (it delivered the message), not by the producer
        # side's job limit, and waiting for room rather than refusing
        config = dataclasses.replace(
            connection_config,
            max_job_bytes=BROKER_MAX_MESSAGE_BYTES,
            buffer_max_bytes=2 * BROKER_MAX_MESSAGE_BYTES,
            overflow="block",
        )
        self.publisher = Publisher(
            config,
            metrics=metrics,
            name=f"{name}.requeue",
            topology=queues.topology,
            connection=connection,
        )

    async def settle(self, message: Message, exc: Exception) -> Outcome:
        """Re-publish a failed message (retry queue or DLQ) before its original is acked.

        Never raises for the message's sake: what the broker delivered can always be settled.
        If the re-publish fails (a header that cannot be written back, a broker that returns
        it, a stop cutting it short), the message is dead-lettered with only Warren's own
        headers and the reason; if even that fails it is rejected without requeue (the
        broker dead-letters it if the queue has a dead-letter exchange, else drops it), and
        counted as ``rejected``. One message never ends the worker.
        """
        try:
            return await self._route(message, exc)
        except Exception as first:  # see the docstring: one message, any reason
            failure = first
            log.error(
                "delivery.unsettleable worker=%s message_id=%s error=%s: %s",
                self._name, message.message_id, type(first).__name__, first,
            )  # fmt: skip
        bare = Message(message.message_id, message.body, {}, message.redelivered,
                       message.attempt, message.content_type)  # fmt: skip
        try:
            await self._dead_letter(bare, DeadLetter("unsettleable"), failure)
        except Exception as second:
            log.error(
                "delivery.rejected worker=%s message_id=%s error=%s: %s",
                self._name, message.message_id, type(second).__name__, second,
            )  # fmt: skip
            return "rejected"
        return "dead_letter"

    async def retry(
        self, message: Message, exc: BaseException, not_before: float, *, counted: bool = True
    ) -> None:
        """Through a delay queue back to the work queue. ``counted=False``: this was no
        attempt (another worker held its claim): the shortest delay, attempts unchanged."""
        where = retry(message.attempt, self._queues.delays, not_before, counted=counted)
        await self._retry(message, where, exc)

    async def _route(self, message: Message, exc: Exception) -> Outcome:
        where = route(exc, message.attempt, self._max_attempts, self._queues.delays)
        if isinstance(where, DeadLetter):
            await self._dead_letter(message, where, exc)
            return "dead_letter"
        await self._retry(message, where, exc)
        return "retry"

    async def _retry(self, message: Message, where: Retry, exc: BaseException) -> None:
        queue = self._queues.retry_queues[where.level]
        log.info(
            "delivery.retry worker=%s message_id=%s attempt=%d delay=%.1fs error=%s",
            self._name, message.message_id, message.attempt, self._queues.delays[where.level],
            type(exc).__name__,
        )  # fmt: skip
        headers = retry_headers(message.headers, where.attempts, exc)
        await self._publish(message, queue, headers)

    async def _dead_letter(self, message: Message, where: DeadLetter, exc: BaseException) -> None:
        log.warning(
            "delivery.dead_letter worker=%s message_id=%s reason=%s attempts=%d %s",
            self._name, message.message_id, where.reason, message.attempt, type(exc).__name__,
        )  # fmt: skip
        headers = dead_letter_headers(message.headers, message.attempt, where.reason, exc)
        await self._publish(message, self._queues.dead_letter_queue, headers)

    async def _publish(self, message: Message, queue: str, headers: dict[str, object]) -> None:
        await self.publisher.publish(
            message.body,
            routing_key=queue,
            exchange="",
            headers=headers,
            message_id=message.message_id,
            content_type=message.content_type,
        )
