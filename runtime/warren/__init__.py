"""Warren: Go-style select workers for RabbitMQ side effects.

Each subpackage is one concept (docs/design.md has the map; pyproject's import-linter
contracts are its layering). This module only re-exports; everything public is in __all__.
"""

from warren._amqp import (
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
from warren._common.backoff import Backoff
from warren._common.json import BadRequest, loads_strict
from warren._common.redact import redact_url
from warren._config import (
    DEFAULT_URL,
    OVERFLOW_POLICIES,
    ConnectionConfig,
    ConsumerConfig,
    DedupOnError,
    OutboxSync,
    Overflow,
    PublisherConfig,
    QueueType,
    TlsConfig,
    parse_addr,
)
from warren._consume.consumer import Consumer, Deduplicator
from warren._consume.message import Handler, Message
from warren._dedup.redis import RedisDedupStore
from warren._dedup.store import Claim, DedupStore, DedupUnavailable, MemoryDedupStore
from warren._exceptions import (
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
    TlsRefused,
    TopologyMismatch,
    WarrenError,
)
from warren._http.accept import serve_connections
from warren._ops.metrics import Metrics
from warren._ops.server import OpsServer
from warren._publish.publisher import Publisher
from warren._run.logging import configure_logging
from warren._run.service import Service, ServiceContext, Setting
from warren._select.select import (
    Closed,
    Default,
    Received,
    Send,
    Sent,
    Timeout,
    select,
    select_nowait,
)
from warren._version import VERSION as __version__
from warren._worker.statistics import ConsumerStatistics, HistogramSnapshot, PublisherStatistics

__all__ = [
    "DEFAULT_URL",
    "OVERFLOW_POLICIES",
    "AccessRefused",
    "Backoff",
    "BadRequest",
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
    "ConnectionConfig",
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
    "TlsConfig",
    "TlsRefused",
    "Topology",
    "TopologyMismatch",
    "Unblocked",
    "WarrenError",
    "__version__",
    "configure_logging",
    "loads_strict",
    "parse_addr",
    "redact_url",
    "select",
    "select_nowait",
    "serve_connections",
]
