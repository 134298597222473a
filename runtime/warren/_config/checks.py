"""The checks every setting goes through: each error names the setting and the bad value."""

from __future__ import annotations

import dataclasses
import math

from warren._common.redact import redact_url
from warren._exceptions import ConfigError


def positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")


def at_most(name: str, value: int, limit: int, why: str) -> None:
    if value > limit:
        raise ConfigError(name, f"must be at most {limit:,} ({why}), got {value:,}")


def positive_float(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < 0 if allow_zero else value <= 0):  # type: ignore[operator]
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(name, f"must be a finite number {bound}, got {value!r}")


def parse_addr(setting: str, value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port)."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(setting, f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def redacted_repr(config: object) -> str:
    """A dataclass repr with the URLs' passwords replaced by ``***``."""
    fields = []
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if f.name == "urls":
            value = redact_url(value) if isinstance(value, str) else tuple(map(redact_url, value))
        fields.append(f"{f.name}={value!r}")
    return f"{type(config).__name__}({', '.join(fields)})"
