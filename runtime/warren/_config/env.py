"""Settings from ``WARREN_*`` environment variables: which variable sets which setting, and
errors that name the variable (what the operator set), not the keyword."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from warren._common.redact import redact_url
from warren._config.tls import parse_switch
from warren._exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Mapping

VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "WARREN_AMQP_URL": ("urls", str),
    "WARREN_HEARTBEAT": ("heartbeat", int),
    "WARREN_CONNECT_TIMEOUT": ("connect_timeout", float),
    "WARREN_CONFIRM_TIMEOUT": ("confirm_timeout", float),
    "WARREN_BUFFER_SIZE": ("buffer_size", int),
    "WARREN_OVERFLOW": ("overflow", str),
    "WARREN_RECONNECT_MAX_ATTEMPTS": ("reconnect_max_attempts", int),
    "WARREN_BACKOFF_BASE": ("backoff_base", float),
    "WARREN_BACKOFF_CAP": ("backoff_cap", float),
    "WARREN_MAX_IN_FLIGHT": ("max_in_flight", int),
    "WARREN_MAX_JOB_BYTES": ("max_job_bytes", int),
    "WARREN_BUFFER_MAX_BYTES": ("buffer_max_bytes", int),
    "WARREN_FLUSH_TIMEOUT": ("flush_timeout", float),
    "WARREN_OUTBOX": ("outbox", str),
    "WARREN_OUTBOX_SYNC": ("outbox_sync", str),
    # TLS, for amqps:// URLs (tls.py)
    "WARREN_AMQP_CA_FILE": ("ca_file", str),
    "WARREN_AMQP_CERT_FILE": ("cert_file", str),
    "WARREN_AMQP_KEY_FILE": ("key_file", str),
    "WARREN_AMQP_KEY_PASSWORD_FILE": ("key_password_file", str),
    "WARREN_AMQP_SERVER_NAME": ("server_name", str),
    "WARREN_AMQP_TLS_VERIFY": ("verify", parse_switch),
}
VARIABLE_OF = {name: var for var, (name, _) in VARIABLES.items()}
PUBLISHER_FIELDS = (
    "confirm_timeout",
    "buffer_size",
    "overflow",
    "max_in_flight",
    "max_job_bytes",
    "buffer_max_bytes",
    "flush_timeout",
    "outbox",
    "outbox_sync",
)


def read_env(env: Mapping[str, str], names: Collection[str]) -> dict[str, Any]:
    """The settings among ``names`` that ``env`` sets (blank is unset), converted.

    Raises:
        ConfigError: naming the variable whose value does not parse (a URL's is redacted).
    """
    values: dict[str, Any] = {}
    for var, (name, convert) in VARIABLES.items():
        if name in names and env.get(var, "").strip() != "":
            try:
                values[name] = convert(env[var].strip())
            except ValueError:
                shown = redact_url(env[var]) if name == "urls" else env[var]
                raise ConfigError(var, f"cannot parse {shown!r}") from None
    return values


@contextmanager
def naming_variables(overridden: Collection[str] = ()) -> Iterator[None]:
    """A ``ConfigError`` raised inside names the variable of its setting, unless that
    setting was given in code (``overridden``): the name is what the operator can fix."""
    try:
        yield
    except ConfigError as exc:
        var = VARIABLE_OF.get(exc.setting)
        if var is None or exc.setting in overridden:
            raise
        raise ConfigError(var, str(exc).split(": ", 1)[1]) from None
