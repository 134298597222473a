"""Service settings from the environment: every error names the variable (exit code 2)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from warren import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping


def env_str(env: Mapping[str, str], var: str, default: str) -> str:
    return env.get(var, "").strip() or default


def env_http_url(env: Mapping[str, str], var: str, default: str) -> str:
    """An http(s) URL with a host; the error never echoes it (it may carry a token)."""
    value = env_str(env, var, default)
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number, or out of range
        ok = False
    if not ok:
        raise ConfigError(var, "must be an http:// or https:// URL with a host")
    return value


def env_int(env: Mapping[str, str], var: str, default: int, *, minimum: int = 1) -> int:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(var, f"must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(var, f"must be >= {minimum}, got {value}")
    return value


def env_float(
    env: Mapping[str, str], var: str, default: float, *, allow_zero: bool = False
) -> float:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(var, f"must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        least = ">= 0" if allow_zero else "> 0"
        raise ConfigError(var, f"must be a finite number {least}, got {raw!r}")
    return value


def env_choice(env: Mapping[str, str], var: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(env, var, default)
    if value not in choices:
        raise ConfigError(var, f"unknown value {value!r}; choose one of {', '.join(choices)}")
    return value


def env_secret(env: Mapping[str, str], var: str, file_var: str) -> str | None:
    """A secret from ``var`` or from the file named by ``file_var`` (never logged)."""
    path = env.get(file_var, "").strip()
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(file_var, f"cannot read {path!r}: {exc.strerror}") from None
    return env.get(var, "").strip() or None
