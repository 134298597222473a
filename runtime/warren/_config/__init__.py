"""Settings: frozen keyword-only dataclasses validated on construction, or read from WARREN_*.

Every error names the setting (the keyword, or the environment variable it came from) and
the bad value; secrets in URLs are never shown in those messages. ``ConnectionConfig`` is how
a worker reaches the broker, shared by ``PublisherConfig`` and ``ConsumerConfig``.
"""

from warren._config.checks import parse_addr
from warren._config.connection import (
    CONNECTION_FIELDS,
    DEAD_MARGIN,
    DEFAULT_URL,
    ConnectionConfig,
    parse_urls,
)
from warren._config.consumer import (
    DEDUP_ON_ERROR,
    QUEUE_TYPES,
    ConsumerConfig,
    DedupOnError,
    QueueType,
)
from warren._config.publisher import (
    JOB_OVERHEAD_BYTES,
    OUTBOX_SYNC_MODES,
    OVERFLOW_POLICIES,
    OutboxSync,
    Overflow,
    PublisherConfig,
)
from warren._config.settings_help import env_settings_help
from warren._config.tls import TlsConfig

__all__ = [
    "CONNECTION_FIELDS",
    "DEAD_MARGIN",
    "DEDUP_ON_ERROR",
    "DEFAULT_URL",
    "JOB_OVERHEAD_BYTES",
    "OUTBOX_SYNC_MODES",
    "OVERFLOW_POLICIES",
    "QUEUE_TYPES",
    "ConnectionConfig",
    "ConsumerConfig",
    "DedupOnError",
    "OutboxSync",
    "Overflow",
    "PublisherConfig",
    "QueueType",
    "TlsConfig",
    "env_settings_help",
    "parse_addr",
    "parse_urls",
]
