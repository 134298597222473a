"""How a worker reaches the broker: ``ConnectionConfig``, one per process, shared by its
workers' configs. URLs are checked without ever echoing them (a password may be in one)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

from warren._common.redact import ssl_options_of
from warren._config.checks import at_most, positive_float, positive_int, redacted_repr
from warren._config.env import naming_variables, read_env
from warren._config.tls import TLS_FIELDS, TlsConfig
from warren._exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# How long past one heartbeat of silence a link is still given (see ``dead_after``): a cut
# is noticed within heartbeat + 1 s (the watchdog looks every 0.05 s).
DEAD_MARGIN = 0.6
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
# ConnectionConfig's fields, once also keywords of the worker configs (deprecated.py)
CONNECTION_FIELDS = (
    "urls",
    "heartbeat",
    "connect_timeout",
    "reconnect_max_attempts",
    "backoff_base",
    "backoff_cap",
    "tcp_user_timeout",
)


# One URL per node, separated by commas; a comma inside a URL (pika's ssl_options={...} with
# two keys) is not a separator: only a comma that a new amqp:// or amqps:// URL follows is.
_SEPARATOR = re.compile(r"\s*,[\s,]*(?=amqps?://)", re.IGNORECASE)
_TRAILING = re.compile(r"[\s,]+$")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}

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
    options = ssl_options_of(url)
    if options is not None and not isinstance(options, dict):
        raise ConfigError(
            setting, f"{where} has an ssl_options value that is not a dict literal (not shown)"
        )
    if "," in parts.netloc.rpartition("@")[2]:
        raise ConfigError(
            setting, f"{where} has a ',' in its host (not shown): separate several URLs with "
            "commas, each starting with amqp:// or amqps://",
        )  # fmt: skip
    del port
    return url


def parse_urls(setting: str, value: str | Sequence[str]) -> tuple[str, ...]:
    """One URL, a comma-separated list, or a sequence -> a validated tuple (cluster nodes)."""
    if isinstance(value, str):
        value = _SEPARATOR.split(_TRAILING.sub("", value))
    elif not isinstance(value, list | tuple) or not all(isinstance(u, str) for u in value):
        raise ConfigError(
            setting, f"expected a URL string or a list of them, got a {type(value).__name__}"
        )
    raw = [u for u in value if u.strip()]
    if not raw:
        raise ConfigError(setting, "needs at least one amqp:// URL")
    return tuple(
        _check_url(setting, u, "the URL" if len(raw) == 1 else f"URL {i} of {len(raw)}")
        for i, u in enumerate(raw, 1)
    )


def node_address(url: str) -> str | None:
    """``host:port`` of the node a URL names, the port defaulting by scheme (5671 for
    ``amqps://``, 5672 for ``amqp://``); None if it names no host."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    return f"{parts.hostname}:{parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 5672)}"


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
    tls: TlsConfig = field(default_factory=TlsConfig)
    """Trust, client certificate and host name for ``amqps://`` URLs."""

    def __post_init__(self) -> None:
        urls: Any = self.urls
        object.__setattr__(self, "urls", parse_urls("urls", urls))
        positive_int("heartbeat", self.heartbeat)
        at_most("heartbeat", self.heartbeat, 65_535, "AMQP carries it in 16 bits")
        if not isinstance(self.reconnect_max_attempts, int) or self.reconnect_max_attempts < 0:
            raise ConfigError(
                "reconnect_max_attempts",
                f"must be an integer >= 0 (0 = forever), got {self.reconnect_max_attempts!r}",
            )
        for name in ("connect_timeout", "backoff_base", "backoff_cap"):
            positive_float(name, getattr(self, name))
        if self.backoff_cap < self.backoff_base:
            raise ConfigError("backoff_cap", f"must be >= backoff_base ({self.backoff_base})")
        if self.tcp_user_timeout is not None:
            positive_float("tcp_user_timeout", self.tcp_user_timeout)
        if not isinstance(self.tls, TlsConfig):
            raise ConfigError("tls", f"must be a TlsConfig, got a {type(self.tls).__name__}")
        if self.tls.configured and not any(
            urlsplit(u).scheme.lower() == "amqps" for u in self.url_list
        ):
            raise ConfigError("urls", "the TLS settings apply to amqps:// URLs, and none is one")
        if self.tls.configured and any(ssl_options_of(u) is not None for u in self.url_list):
            raise ConfigError(
                "urls", "a URL has ?ssl_options= and the TLS settings (tls, WARREN_AMQP_CA_FILE "
                "and the rest) are set too: use one or the other (the TLS settings would "
                "replace ssl_options without a word)",
            )  # fmt: skip

    def __repr__(self) -> str:
        return redacted_repr(self)

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
        """Build from the ``WARREN_*`` connection variables; errors name the variable."""
        values = read_env(env, CONNECTION_FIELDS)
        with naming_variables():
            return cls(**values, tls=TlsConfig(**read_env(env, TLS_FIELDS)))
