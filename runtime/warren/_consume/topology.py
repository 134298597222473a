"""The queues a consumer declares, built from its ``ConsumerConfig``: plain code, no I/O.

Besides its work queue, a consumer owns ``<queue>.dlq`` and one delay queue per retry delay,
``<queue>.retry.<n>ms``: ``x-message-ttl`` is ``n`` and the dead-letter route leads back to
the work queue, so a retry re-published there comes back after ``n`` ms. A broker refuses a
queue declared again with other arguments (406), so names and arguments are built in one
place and checked without a broker (``tests/unit/test_topology.py``). Invariant: a delay
queue's name is its TTL, so delays that share a name share the arguments; every delay queue
dead-letters to the work queue by the default exchange; all of them take the work queue's type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from warren._amqp import Queue, Topology

if TYPE_CHECKING:
    from warren._config import ConsumerConfig


@final
@dataclass(frozen=True, slots=True)
class ConsumerTopology:
    """A consumer's queue names, and all it declares on each connect (``topology``: the work,
    dead-letter and delay queues, in that order, then the caller's extra topology)."""

    work_queue: str
    delays: tuple[float, ...]  # seconds before attempt 2, 3, ... max_attempts
    retry_queues: tuple[str, ...]  # the delay queue of each of ``delays``, same index
    dead_letter_queue: str
    topology: Topology


def consumer_topology(config: ConsumerConfig, extra: Topology | None = None) -> ConsumerTopology:
    """The queues of a consumer of ``config``, and ``extra`` (exchanges, queues, bindings the
    caller declares too: its queues after the consumer's own)."""
    q = config.queue
    delays = config.retry_delays()
    typed = {"x-queue-type": "quorum"} if config.queue_type == "quorum" else {}
    work = (
        Queue(name=q, passive=True)
        if config.queue_passive
        else Queue(name=q, arguments=config.queue_declaration_arguments() or None)
    )
    retry_queues = tuple(retry_queue_name(q, d) for d in delays)
    dead_letter_queue = f"{q}.dlq"
    extra = extra or Topology()
    topology = Topology(
        exchanges=extra.exchanges,
        queues=(
            work,
            Queue(name=dead_letter_queue, arguments=typed or None),
            *(
                Queue(name=name, arguments=_delay_arguments(q, d, typed))
                for name, d in zip(retry_queues, delays, strict=True)
            ),
            *extra.queues,
        ),
        bindings=extra.bindings,
    )
    return ConsumerTopology(q, delays, retry_queues, dead_letter_queue, topology)


def retry_queue_name(queue: str, delay: float) -> str:
    """The delay queue of ``queue`` that holds retries for ``delay`` seconds."""
    return f"{queue}.retry.{_ttl_ms(delay)}ms"


def _delay_arguments(queue: str, delay: float, typed: dict[str, str]) -> dict[str, Any]:
    return {
        "x-message-ttl": _ttl_ms(delay),
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        **typed,
    }


def _ttl_ms(delay: float) -> int:
    return int(delay * 1000)
