"""How a Consumer runs and retries: ``ConsumerConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from warren._config.checks import at_most, positive_float, positive_int, redacted_repr
from warren._config.connection import CONNECTION_FIELDS, ConnectionConfig
from warren._config.deprecated import accept_old_keywords
from warren._config.publisher import PublisherConfig
from warren._exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

QueueType = Literal["classic", "quorum"]
QUEUE_TYPES: tuple[str, ...] = get_args(QueueType)
DedupOnError = Literal["at-least-once", "pause"]
DEDUP_ON_ERROR: tuple[str, ...] = get_args(DedupOnError)


@accept_old_keywords(CONNECTION_FIELDS[:-1])
@dataclass(frozen=True, kw_only=True)
class ConsumerConfig:
    """How a Consumer connects, how much it runs at once, and how it retries.

    Retries go through delay queues: a failed delivery is re-published to
    ``<queue>.retry.<n>ms`` (a queue whose ``x-message-ttl`` is the n-th backoff and whose
    dead-letter route leads back to ``<queue>``), then acked. One queue per delay, because
    RabbitMQ expires messages only at a queue's head: mixed delays in one queue would make
    short ones wait behind long ones. After ``max_attempts`` the message goes to
    ``<queue>.dlq`` with headers saying why.

    How the queue is declared: ``queue_type`` (``classic``, or ``quorum``: replicated by
    Raft across a cluster; the delay and dead-letter queues get the same type),
    ``queue_arguments`` (e.g. ``{"x-max-length": 100_000}``), or ``queue_passive``: use the
    existing queue exactly as it is (the delay and dead-letter queues are still declared).
    A broker that already has the queue with other arguments refuses the declaration (406),
    and a passive queue that is missing is a 404: both stop the worker with
    ``TopologyMismatch`` instead of being retried. The poison guard is Warren's own
    (``max_attempts`` with the ``x-warren-attempts`` header), not a quorum queue's
    ``x-delivery-limit``, so it works the same on both types.

    With a deduplication store (``Consumer(dedup=...)``): a finished message_id is
    remembered for ``dedup_retention`` seconds, and ``dedup_on_error`` says what to do while
    the store is unreachable: ``at-least-once`` (run handlers anyway; counted and logged) or
    ``pause`` (hold the deliveries until the store answers again).
    """

    queue: str
    connection: ConnectionConfig = field(default_factory=ConnectionConfig)
    prefetch: int = 100
    concurrency: int = 10
    max_attempts: int = 5
    retry_base: float = 1.0
    retry_cap: float = 300.0
    handler_timeout: float = 30.0
    shutdown_timeout: float = 10.0
    queue_type: QueueType = "classic"
    queue_arguments: Mapping[str, Any] | None = None
    queue_passive: bool = False
    dedup_retention: float = 86_400.0
    dedup_on_error: DedupOnError = "at-least-once"

    def __post_init__(self) -> None:
        connection: object = self.connection  # typed, but callers pass anything
        if not isinstance(connection, ConnectionConfig):
            got = type(connection).__name__  # never the value: it may be a URL
            raise ConfigError("connection", f"must be a ConnectionConfig, got a {got}")
        if self.dedup_on_error not in DEDUP_ON_ERROR:
            raise ConfigError(
                "dedup_on_error",
                f"unknown {self.dedup_on_error!r}; choose one of {', '.join(DEDUP_ON_ERROR)}",
            )
        positive_float("dedup_retention", self.dedup_retention)
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigError(
                "queue_type",
                f"unknown type {self.queue_type!r}; choose one of {', '.join(QUEUE_TYPES)}",
            )
        arguments = self.queue_arguments or {}
        if not all(isinstance(k, str) for k in arguments):
            raise ConfigError("queue_arguments", "keys must be strings (x-... arguments)")
        if "x-queue-type" in arguments:
            raise ConfigError("queue_arguments", "set the type with queue_type, not x-queue-type")
        if not isinstance(self.queue, str) or not self.queue:
            raise ConfigError("queue", f"must be a non-empty queue name, got {self.queue!r}")
        if len(self.queue.encode()) > 255:
            raise ConfigError("queue", f"{self.queue[:40]!r}... is over AMQP's 255 bytes")
        for name in ("prefetch", "concurrency", "max_attempts"):
            positive_int(name, getattr(self, name))
        at_most("prefetch", self.prefetch, 65_535, "AMQP carries it in 16 bits")
        at_most("concurrency", self.concurrency, 10_000, "one task each, all in one process")
        at_most("max_attempts", self.max_attempts, 100, "each attempt has a delay queue")
        for name in ("retry_base", "retry_cap", "handler_timeout", "shutdown_timeout"):
            positive_float(name, getattr(self, name))
        if self.retry_cap < self.retry_base:
            raise ConfigError("retry_cap", f"must be >= retry_base ({self.retry_base})")

    def __repr__(self) -> str:
        return redacted_repr(self)

    @classmethod
    def sharing(
        cls, connection: ConnectionConfig | PublisherConfig, **settings: Any
    ) -> ConsumerConfig:
        """A consumer config on ``connection`` (a publisher's config lends its own): one
        connection config for every worker of a process."""
        if isinstance(connection, PublisherConfig):
            connection = connection.connection
        return cls(connection=connection, **settings)

    def queue_declaration_arguments(self) -> dict[str, Any]:
        """The arguments of the work queue (and, with the type, of its delay and dead-letter
        queues) as declared."""
        type_arg = {"x-queue-type": "quorum"} if self.queue_type == "quorum" else {}
        return {**(self.queue_arguments or {}), **type_arg}

    def retry_delays(self) -> tuple[float, ...]:
        """The delay before attempt 2, 3, ... max_attempts (capped exponential, no jitter:
        each delay has its own queue). At least one, even with ``max_attempts=1``: a retry
        that is no attempt (``RetryLater(consumes_attempt=False)``, a message another
        worker holds) waits in it."""
        levels = max(self.max_attempts - 1, 1)
        return tuple(min(self.retry_cap, self.retry_base * 2.0**n) for n in range(levels))

    def requeue_config(self) -> PublisherConfig:
        """The config of the publisher that re-publishes retries and dead letters: this
        connection, flushed within ``shutdown_timeout``."""
        return PublisherConfig(connection=self.connection, flush_timeout=self.shutdown_timeout)
