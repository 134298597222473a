"""How a Publisher buffers, confirms and gives up: ``PublisherConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from warren._config.checks import positive_float, positive_int, redacted_repr
from warren._config.connection import CONNECTION_FIELDS, ConnectionConfig
from warren._config.deprecated import accept_old_keywords, conflict, warn_old_keywords
from warren._config.env import PUBLISHER_FIELDS, naming_variables, read_env
from warren._config.tls import TLS_FIELDS, TlsConfig
from warren._exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

Overflow = Literal["block", "drop-newest", "drop-oldest"]
OVERFLOW_POLICIES: tuple[str, ...] = get_args(Overflow)
OutboxSync = Literal["normal", "full"]
OUTBOX_SYNC_MODES: tuple[str, ...] = get_args(OutboxSync)
JOB_OVERHEAD_BYTES = 512  # what a buffered job costs besides its payload (measured ~600 B)


@accept_old_keywords(CONNECTION_FIELDS)
@dataclass(frozen=True, kw_only=True)
class PublisherConfig:
    """How a Publisher buffers, confirms and gives up; ``connection`` says how it reaches
    the broker. All times are in seconds."""

    connection: ConnectionConfig = field(default_factory=ConnectionConfig)
    confirm_timeout: float = 30.0
    buffer_size: int = 10_000
    overflow: Overflow = "block"
    max_in_flight: int = 1_000
    max_job_bytes: int = 131_072
    buffer_max_bytes: int = 64 * 1024 * 1024
    """Bytes the buffer may hold (payloads plus ~512 bytes of bookkeeping per job): with
    large jobs this binds before ``buffer_size`` does, so memory stays bounded in bytes."""
    exchange: str = ""
    persistent: bool = True
    flush_timeout: float = 10.0
    outbox: str | None = None
    """A file for the durable buffer (SQLite): accepted jobs survive the process dying and
    are re-sent by the next start. None (the default): the buffer is in memory only."""
    outbox_sync: OutboxSync = "full"
    """``full``: each commit is fsynced (a power loss loses nothing accepted); ``normal``:
    a process crash loses nothing, a power loss may lose the last commits."""

    def __post_init__(self) -> None:
        connection: object = self.connection  # typed, but callers pass anything
        if not isinstance(connection, ConnectionConfig):
            got = type(connection).__name__  # never the value: it may be a URL
            raise ConfigError("connection", f"must be a ConnectionConfig, got a {got}")
        positive_int("buffer_size", self.buffer_size)
        positive_int("max_in_flight", self.max_in_flight)
        positive_int("max_job_bytes", self.max_job_bytes)
        positive_int("buffer_max_bytes", self.buffer_max_bytes)
        if self.buffer_max_bytes < self.max_job_bytes + JOB_OVERHEAD_BYTES:
            raise ConfigError(
                "buffer_max_bytes",
                f"must hold at least one job of max_job_bytes ({self.max_job_bytes:,}) plus"
                f" {JOB_OVERHEAD_BYTES} bytes, got {self.buffer_max_bytes:,}",
            )
        if self.overflow not in OVERFLOW_POLICIES:
            raise ConfigError(
                "overflow",
                f"unknown policy {self.overflow!r}; choose one of {', '.join(OVERFLOW_POLICIES)}",
            )
        positive_float("confirm_timeout", self.confirm_timeout)
        positive_float("flush_timeout", self.flush_timeout, allow_zero=True)
        if self.outbox is not None and (not isinstance(self.outbox, str) or not self.outbox):
            raise ConfigError("outbox", f"must be a file path or None, got {self.outbox!r}")
        if self.outbox_sync not in OUTBOX_SYNC_MODES:
            raise ConfigError(
                "outbox_sync",
                f"unknown mode {self.outbox_sync!r}; choose one of {', '.join(OUTBOX_SYNC_MODES)}",
            )

    def __repr__(self) -> str:
        return redacted_repr(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> PublisherConfig:
        """Build from ``WARREN_*`` variables (the connection's too, unless ``connection`` is
        among ``overrides``); errors name the variable. An override wins over its variable."""
        old = {name: overrides.pop(name) for name in CONNECTION_FIELDS if name in overrides}
        if "connection" not in overrides:
            link = {**read_env(env, CONNECTION_FIELDS), **old}
            if old:
                warn_old_keywords("PublisherConfig.from_env", old)
            with naming_variables(set(old)):
                tls = TlsConfig(**read_env(env, TLS_FIELDS))
                overrides["connection"] = ConnectionConfig(**link, tls=tls)
        elif old:
            conflict(old)
        values = read_env(env, PUBLISHER_FIELDS)
        with naming_variables(set(overrides)):
            return cls(**{**values, **overrides})
