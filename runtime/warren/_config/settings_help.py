"""Every ``WARREN_*`` setting of the runner's connection and publisher, with its default."""

from __future__ import annotations

import dataclasses

from warren._common.redact import redact_url
from warren._config.connection import ConnectionConfig
from warren._config.env import VARIABLES
from warren._config.publisher import PublisherConfig
from warren._config.tls import TlsConfig


def env_settings_help() -> list[tuple[str, str]]:
    """(variable, default) for every connection and publisher setting, for ``--help``."""
    defaults = {
        f.name: f.default
        for config in (ConnectionConfig, PublisherConfig, TlsConfig)
        for f in dataclasses.fields(config)
    }
    out = []
    for var, (name, _) in VARIABLES.items():
        default = defaults[name]
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        shown = "(off)" if default is None else shown
        shown = {"True": "on", "False": "off"}.get(shown, shown)
        out.append((var, redact_url(shown) if name == "urls" else shown))
    return out
