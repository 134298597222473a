"""Warren: Go-style select workers for RabbitMQ side effects.

# Layering: _select (no broker) <- _amqp (the only pika code: thread, wire, reconnects) <-
# _publisher / _consumer (the workers) <- _runner/_cli (processes); pyproject's import-linter
# contract is the table. This module only re-exports; everything public is in __all__.
"""

if __name__ != "warren":  # pragma: no cover - the repository folder imported by its own name
    raise ImportError(f"import warren, not {__name__}: the runtime/ folder installs as warren")

from ._amqp import (
    Binding,
    Blocked,
    ChannelClosed,
    Confirmed,
    Connected,
    ConnectFailed,
    ConnectionEvent,
    ConnectionLost,
    Delivered,
    Exchange,
    GaveUp,
    Nacked,
    Queue,
    Returned,
    Topology,
    Unblocked,
)
from ._backoff import Backoff
from ._config import (
    DEFAULT_URL,
    OVERFLOW_POLICIES,
    ConsumerConfig,
    DedupOnError,
    OutboxSync,
    Overflow,
    PublisherConfig,
    QueueType,
)
from ._consumer import Consumer, Deduplicator, Handler, Message
from ._dedup import Claim, DedupStore, DedupUnavailable, MemoryDedupStore
from ._dedup_redis import RedisDedupStore
from ._exceptions import (
    AccessRefused,
    BrokerError,
    BufferFull,
    ConfigError,
    ConnectionGaveUp,
    InvalidJob,
    JobDropped,
    JobReturned,
    OutboxError,
    PoisonMessage,
    PublisherClosed,
    PublishError,
    RetryLater,
    TopologyMismatch,
    WarrenError,
)
from ._logging import configure_logging
from ._metrics import Metrics
from ._ops_server import OpsServer
from ._publisher import Publisher
from ._redact import redact_url
from ._select import Closed, Default, Received, Send, Sent, Timeout, select, select_nowait
from ._service import Service, ServiceContext, Setting
from ._statistics import ConsumerStatistics, HistogramSnapshot, PublisherStatistics
from ._version import VERSION as __version__

__all__ = [
    "DEFAULT_URL",
    "OVERFLOW_POLICIES",
    "AccessRefused",
    "Backoff",
    "Binding",
    "Blocked",
    "BrokerError",
    "BufferFull",
    "ChannelClosed",
    "Claim",
    "Closed",
    "ConfigError",
    "Confirmed",
    "ConnectFailed",
    "Connected",
    "ConnectionEvent",
    "ConnectionGaveUp",
    "ConnectionLost",
    "Consumer",
    "ConsumerConfig",
    "ConsumerStatistics",
    "DedupOnError",
    "DedupStore",
    "DedupUnavailable",
    "Deduplicator",
    "Default",
    "Delivered",
    "Exchange",
    "GaveUp",
    "Handler",
    "HistogramSnapshot",
    "InvalidJob",
    "JobDropped",
    "JobReturned",
    "MemoryDedupStore",
    "Message",
    "Metrics",
    "Nacked",
    "OpsServer",
    "OutboxError",
    "OutboxSync",
    "Overflow",
    "PoisonMessage",
    "PublishError",
    "Publisher",
    "PublisherClosed",
    "PublisherConfig",
    "PublisherStatistics",
    "Queue",
    "QueueType",
    "Received",
    "RedisDedupStore",
    "RetryLater",
    "Returned",
    "Send",
    "Sent",
    "Service",
    "ServiceContext",
    "Setting",
    "Timeout",
    "Topology",
    "TopologyMismatch",
    "Unblocked",
    "WarrenError",
    "__version__",
    "configure_logging",
    "redact_url",
    "select",
    "select_nowait",
]
