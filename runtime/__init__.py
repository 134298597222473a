"""Warren: Go-style select workers for RabbitMQ side effects.

# Layering: _select (no broker) <- _amqp_thread (the only pika code) <- _amqp (reconnects,
# events) <- _publisher (the worker) <- _runner/_cli (processes). This module only
# re-exports; everything public is listed in __all__.
"""

from ._backoff import Backoff
from ._config import DEFAULT_URL, OVERFLOW_POLICIES, ConsumerConfig, Overflow, PublisherConfig
from ._consumer import Consumer, ConsumerStatistics, Deduplicator, Handler, Message
from ._events import (
    Blocked,
    ChannelClosed,
    Confirmed,
    Connected,
    ConnectFailed,
    ConnectionEvent,
    ConnectionLost,
    Delivered,
    GaveUp,
    Nacked,
    Returned,
    Unblocked,
)
from ._exceptions import (
    AccessRefused,
    BrokerError,
    BufferFull,
    ConfigError,
    ConnectionGaveUp,
    InvalidJob,
    JobDropped,
    JobReturned,
    PoisonMessage,
    PublisherClosed,
    PublishError,
    RetryLater,
    WarrenError,
)
from ._metrics import Metrics
from ._ops_server import OpsServer
from ._publisher import Publisher, PublisherStatistics
from ._redact import redact_url
from ._select import Closed, Default, Received, Send, Sent, Timeout, select, select_nowait
from ._service import Service, ServiceContext, Setting
from ._topology import Binding, Exchange, Queue, Topology
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
    "Deduplicator",
    "Default",
    "Delivered",
    "Exchange",
    "GaveUp",
    "Handler",
    "InvalidJob",
    "JobDropped",
    "JobReturned",
    "Message",
    "Metrics",
    "Nacked",
    "OpsServer",
    "Overflow",
    "PoisonMessage",
    "PublishError",
    "Publisher",
    "PublisherClosed",
    "PublisherConfig",
    "PublisherStatistics",
    "Queue",
    "Received",
    "RetryLater",
    "Returned",
    "Send",
    "Sent",
    "Service",
    "ServiceContext",
    "Setting",
    "Timeout",
    "Topology",
    "Unblocked",
    "WarrenError",
    "__version__",
    "redact_url",
    "select",
    "select_nowait",
]
