"""Settings: frozen keyword-only dataclasses validated on construction, or read from WARREN_*.

Every error names the setting (the keyword, or the environment variable it came from) and
the bad value; secrets in URLs are redacted in those messages.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args
from urllib.parse import unquote, urlsplit

from warren._common.redact import redact_url
from warren._exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# How long past one heartbeat of silence a link is still given (see ``dead_after``): a cut
# is noticed within heartbeat + 1 s (the watchdog looks every 0.05 s).
DEAD_MARGIN = 0.6
Overflow = Literal["block", "drop-newest", "drop-oldest"]
OVERFLOW_POLICIES: tuple[str, ...] = get_args(Overflow)
QueueType = Literal["classic", "quorum"]
QUEUE_TYPES: tuple[str, ...] = get_args(QueueType)
OutboxSync = Literal["normal", "full"]
DedupOnError = Literal["at-least-once", "pause"]
DEDUP_ON_ERROR: tuple[str, ...] = get_args(DedupOnError)
OUTBOX_SYNC_MODES: tuple[str, ...] = get_args(OutboxSync)
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
JOB_OVERHEAD_BYTES = 512  # what a buffered job costs besides its payload (measured ~600 B)


_URL_FORM = (
    "expected amqp://user:password@host:port/vhost, with any of / # ? , @ % in the password "
    "percent-encoded"
)


def _check_url(setting: str, url: str, where: str) -> str:
    """Validate one URL. Errors never echo it: a password with an unencoded ``/``, ``#``,
    ``?`` or ``,`` breaks parsing in ways that would print part of it."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(setting, f"{where} is malformed (not shown); {_URL_FORM}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(setting, f"{where} must start with amqp:// or amqps:// (not shown)")
    if not parts.hostname or "@" in f"{parts.path}{parts.query}{parts.fragment}":
        raise ConfigError(setting, f"{where} has no host or a stray '@' (not shown); {_URL_FORM}")
    del port
    return url


def parse_urls(setting: str, value: str | Sequence[str]) -> tuple[str, ...]:
    """One URL, a comma-separated list, or a sequence -> a validated tuple (cluster nodes)."""
    raw = [u for u in (value.split(",") if isinstance(value, str) else list(value)) if u.strip()]
    if not raw:
        raise ConfigError(setting, "needs at least one amqp:// URL")
    return tuple(
        _check_url(setting, u, "the URL" if len(raw) == 1 else f"URL {i} of {len(raw)}")
        for i, u in enumerate(raw, 1)
    )


def _redacted_repr(config: object) -> str:
    """A dataclass repr with the URLs' passwords replaced by ``***``."""
    fields = []
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if f.name == "urls":
            value = redact_url(value) if isinstance(value, str) else tuple(map(redact_url, value))
        fields.append(f"{f.name}={value!r}")
    return f"{type(config).__name__}({', '.join(fields)})"


# The connection settings' names: ConnectionConfig's fields, once also keywords of the
# worker configs (still accepted, with a DeprecationWarning, until the next release).
CONNECTION_FIELDS = (
    "urls",
    "heartbeat",
    "connect_timeout",
    "reconnect_max_attempts",
    "backoff_base",
    "backoff_cap",
    "tcp_user_timeout",
)


@dataclass(frozen=True, kw_only=True)
class ConnectionConfig:
    """How a worker reaches the broker: where, how it notices a dead link, how it comes back.
    One of these is shared by every worker of a process (``PublisherConfig(connection=...)``,
    ``ConsumerConfig(connection=...)``). All times are in seconds.

    ``heartbeat`` also sets dead-connection detection: no bytes from the broker for
    heartbeat + 0.6 s and the connection is declared dead (the broker sends something at
    least once a heartbeat; pika alone waits heartbeat + 5 s more).
    """

    urls: str | Sequence[str] = DEFAULT_URL
    """One amqp:// URL, a comma-separated list, or a sequence (cluster nodes, tried in turn)."""
    heartbeat: int = 10
    connect_timeout: float = 5.0
    reconnect_max_attempts: int = 0
    """Give up after this many failed attempts in a row (0: never)."""
    backoff_base: float = 0.2
    backoff_cap: float = 15.0
    tcp_user_timeout: float | None = None

    def __post_init__(self) -> None:
        urls: Any = self.urls
        object.__setattr__(self, "urls", parse_urls("urls", urls))
        _positive_int("heartbeat", self.heartbeat)
        _at_most("heartbeat", self.heartbeat, 65_535, "AMQP carries it in 16 bits")
        if not isinstance(self.reconnect_max_attempts, int) or self.reconnect_max_attempts < 0:
            raise ConfigError(
                "reconnect_max_attempts",
                f"must be an integer >= 0 (0 = forever), got {self.reconnect_max_attempts!r}",
            )
        for name in ("connect_timeout", "backoff_base", "backoff_cap"):
            _positive_float(name, getattr(self, name))
        if self.backoff_cap < self.backoff_base:
            raise ConfigError("backoff_cap", f"must be >= backoff_base ({self.backoff_base})")
        if self.tcp_user_timeout is not None:
            _positive_float("tcp_user_timeout", self.tcp_user_timeout)

    def __repr__(self) -> str:
        return _redacted_repr(self)

    @property
    def url_list(self) -> tuple[str, ...]:
        """The validated URLs, in the order reconnects rotate through them."""
        return cast("tuple[str, ...]", self.urls)

    @property
    def vhost(self) -> str:
        """The virtual host of the first URL (cluster nodes serve one vhost), read as pika
        reads it: the path's first segment, percent-decoded; ``/`` when it names none."""
        path = urlsplit(self.url_list[0]).path
        return unquote(path.split("/")[1]) if len(path) > 1 else "/"

    @property
    def dead_after(self) -> float:
        """Seconds without a byte from the broker after which the link is declared dead.

        RabbitMQ checks every heartbeat / 2 whether it sent anything since its last check and
        sends a heartbeat frame if not, so a healthy link is never silent much longer than one
        heartbeat (data just after one check, the heartbeat two checks later). Past that, by
        ``DEAD_MARGIN`` (timer jitter on a busy machine), nothing more is coming.
        """
        return self.heartbeat + DEAD_MARGIN

    @property
    def effective_tcp_user_timeout(self) -> float:
        """TCP_USER_TIMEOUT: the kernel gives up on unacknowledged sends after this long (a
        backstop behind the watchdog; kept at 2 x heartbeat so a slow, bloated link is not
        cut by the kernel)."""
        if self.tcp_user_timeout is not None:
            return self.tcp_user_timeout
        return 2.0 * self.heartbeat

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConnectionConfig:
        """Build from ``WARREN_*`` variables; errors name the variable."""
        return cast("ConnectionConfig", _from_env(cls, env, {}))


def _with_old_keywords(owner: str, connection: ConnectionConfig, **old: Any) -> ConnectionConfig:
    """``connection`` with the connection settings given the old way (as keywords of the
    worker config), which still work for one release, with a DeprecationWarning."""
    given = {name: value for name, value in old.items() if value is not None}
    if not given:
        return connection
    names = ", ".join(f"{name}=" for name in given)
    warnings.warn(
        f"{owner}({names}...) is deprecated and goes in the next release: pass"
        f" connection=ConnectionConfig({names}...)",
        DeprecationWarning,
        stacklevel=4,
    )
    if connection != ConnectionConfig():
        raise ConfigError("connection", f"set {names} in connection=, not beside it")
    return ConnectionConfig(**given)


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
    # deprecated: the connection settings as keywords (use connection=ConnectionConfig(...))
    urls: InitVar[str | Sequence[str] | None] = None
    heartbeat: InitVar[int | None] = None
    connect_timeout: InitVar[float | None] = None
    reconnect_max_attempts: InitVar[int | None] = None
    backoff_base: InitVar[float | None] = None
    backoff_cap: InitVar[float | None] = None
    tcp_user_timeout: InitVar[float | None] = None

    def __post_init__(  # the deprecated keywords, one release
        self,
        urls: str | Sequence[str] | None,
        heartbeat: int | None,
        connect_timeout: float | None,
        reconnect_max_attempts: int | None,
        backoff_base: float | None,
        backoff_cap: float | None,
        tcp_user_timeout: float | None,
    ) -> None:
        connection = _with_old_keywords(
            "PublisherConfig",
            self.connection,
            urls=urls,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout,
            reconnect_max_attempts=reconnect_max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            tcp_user_timeout=tcp_user_timeout,
        )
        object.__setattr__(self, "connection", connection)
        if not isinstance(self.connection, ConnectionConfig):
            raise ConfigError("connection", f"must be a ConnectionConfig, got {connection!r}")
        _positive_int("buffer_size", self.buffer_size)
        _positive_int("max_in_flight", self.max_in_flight)
        _positive_int("max_job_bytes", self.max_job_bytes)
        _positive_int("buffer_max_bytes", self.buffer_max_bytes)
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
        _positive_float("confirm_timeout", self.confirm_timeout)
        _positive_float("flush_timeout", self.flush_timeout, allow_zero=True)
        if self.outbox is not None and (not isinstance(self.outbox, str) or not self.outbox):
            raise ConfigError("outbox", f"must be a file path or None, got {self.outbox!r}")
        if self.outbox_sync not in OUTBOX_SYNC_MODES:
            raise ConfigError(
                "outbox_sync",
                f"unknown mode {self.outbox_sync!r}; choose one of {', '.join(OUTBOX_SYNC_MODES)}",
            )

    def __repr__(self) -> str:
        return _redacted_repr(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> PublisherConfig:
        """Build from ``WARREN_*`` variables (the connection's too); errors name the variable."""
        return cast("PublisherConfig", _from_env(cls, env, overrides))


def _from_env(cls: Any, env: Mapping[str, str], overrides: dict[str, Any]) -> Any:
    """``cls`` (ConnectionConfig or PublisherConfig) from the ``WARREN_*`` variables it reads;
    a bad value's error names the variable, not the keyword."""
    kwargs: dict[str, Any] = {}
    connection: dict[str, Any] = {}
    for var, (name, conv) in _ENV.items():
        if var in env and env[var].strip() != "":
            try:
                value = conv(env[var].strip())
            except ValueError:
                shown = redact_url(env[var]) if name == "urls" else env[var]
                raise ConfigError(var, f"cannot parse {shown!r}") from None
            (connection if name in CONNECTION_FIELDS else kwargs)[name] = value
    try:
        if cls is ConnectionConfig:
            return ConnectionConfig(**connection)
        kwargs.setdefault("connection", ConnectionConfig(**connection))
        kwargs.update(overrides)
        return cls(**kwargs)
    except ConfigError as exc:
        env_var = _VAR_OF.get(exc.setting)
        if env_var is None or exc.setting in overrides:
            raise
        message = str(exc).split(": ", 1)[1]
        raise ConfigError(env_var, message) from None


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")


def _at_most(name: str, value: int, limit: int, why: str) -> None:
    if value > limit:
        raise ConfigError(name, f"must be at most {limit:,} ({why}), got {value:,}")


def _positive_float(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < 0 if allow_zero else value <= 0):  # type: ignore[operator]
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(name, f"must be a finite number {bound}, got {value!r}")


def _overflow(value: str) -> Overflow:
    return cast("Overflow", value)


_ENV: dict[str, tuple[str, Any]] = {
    "WARREN_AMQP_URL": ("urls", str),
    "WARREN_HEARTBEAT": ("heartbeat", int),
    "WARREN_CONNECT_TIMEOUT": ("connect_timeout", float),
    "WARREN_CONFIRM_TIMEOUT": ("confirm_timeout", float),
    "WARREN_BUFFER_SIZE": ("buffer_size", int),
    "WARREN_OVERFLOW": ("overflow", _overflow),
    "WARREN_RECONNECT_MAX_ATTEMPTS": ("reconnect_max_attempts", int),
    "WARREN_BACKOFF_BASE": ("backoff_base", float),
    "WARREN_BACKOFF_CAP": ("backoff_cap", float),
    "WARREN_MAX_IN_FLIGHT": ("max_in_flight", int),
    "WARREN_MAX_JOB_BYTES": ("max_job_bytes", int),
    "WARREN_BUFFER_MAX_BYTES": ("buffer_max_bytes", int),
    "WARREN_FLUSH_TIMEOUT": ("flush_timeout", float),
    "WARREN_OUTBOX": ("outbox", str),
    "WARREN_OUTBOX_SYNC": ("outbox_sync", str),
}
_VAR_OF = {name: var for var, (name, _) in _ENV.items()}


def env_settings_help() -> list[tuple[str, str]]:
    """(variable, default) for every publisher setting, for ``--help``."""
    defaults = {
        f.name: f.default
        for config in (ConnectionConfig, PublisherConfig)
        for f in dataclasses.fields(config)
    }
    out = []
    for var, (name, _) in _ENV.items():
        default = defaults[name]
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        shown = "(off)" if default is None else shown
        out.append((var, redact_url(shown) if name == "urls" else shown))
    return out


def parse_addr(setting: str, value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port)."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(setting, f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


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
    # deprecated: the connection settings as keywords (use connection=ConnectionConfig(...))
    urls: InitVar[str | Sequence[str] | None] = None
    heartbeat: InitVar[int | None] = None
    connect_timeout: InitVar[float | None] = None
    reconnect_max_attempts: InitVar[int | None] = None
    backoff_base: InitVar[float | None] = None
    backoff_cap: InitVar[float | None] = None

    def __post_init__(  # the deprecated keywords, one release
        self,
        urls: str | Sequence[str] | None,
        heartbeat: int | None,
        connect_timeout: float | None,
        reconnect_max_attempts: int | None,
        backoff_base: float | None,
        backoff_cap: float | None,
    ) -> None:
        connection = _with_old_keywords(
            "ConsumerConfig",
            self.connection,
            urls=urls,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout,
            reconnect_max_attempts=reconnect_max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        object.__setattr__(self, "connection", connection)
        if not isinstance(self.connection, ConnectionConfig):
            raise ConfigError("connection", f"must be a ConnectionConfig, got {connection!r}")
        if self.dedup_on_error not in DEDUP_ON_ERROR:
            raise ConfigError(
                "dedup_on_error",
                f"unknown {self.dedup_on_error!r}; choose one of {', '.join(DEDUP_ON_ERROR)}",
            )
        _positive_float("dedup_retention", self.dedup_retention)
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
            _positive_int(name, getattr(self, name))
        _at_most("prefetch", self.prefetch, 65_535, "AMQP carries it in 16 bits")
        _at_most("concurrency", self.concurrency, 10_000, "one task each, all in one process")
        _at_most("max_attempts", self.max_attempts, 100, "each attempt has a delay queue")
        for name in ("retry_base", "retry_cap", "handler_timeout", "shutdown_timeout"):
            _positive_float(name, getattr(self, name))
        if self.retry_cap < self.retry_base:
            raise ConfigError("retry_cap", f"must be >= retry_base ({self.retry_base})")

    def __repr__(self) -> str:
        return _redacted_repr(self)

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
