"""Process logging for the runner: one event per line, as text or JSON, secrets redacted.

Warren's log messages start with a stable event name and carry ``key=value`` fields
(``connection.lost worker=api kind=dead_link in_flight=3 ...``). The text format prints them
as they are; the JSON format (``WARREN_LOG_FORMAT=json``) turns each into one object with
``event`` and the fields as keys, so a log pipeline can filter on ``event`` without regexes.
Every line, from Warren or from a library, passes through URL-credential redaction.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from ._exceptions import ConfigError
from ._redact import redact_text

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import TextIO

LOG_FORMATS: Final = ("text", "json")
_EVENT = re.compile(r"[a-z][a-z_]*(?:\.[a-z_]+)+")
_FIELD = re.compile(r"([a-z_]+)=('[^']*'|\"[^\"]*\"|\S+)")
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def parse_event(message: str) -> tuple[str | None, dict[str, str], str]:
    """``"connection.lost worker=a kind=b why"`` -> ``("connection.lost", {...}, "why")``.

    Fields are the ``key=value`` words right after the event name; the first word that is
    not one ends them, and the rest is free text (an error message, say).
    """
    head, _, rest = message.partition(" ")
    if not _EVENT.fullmatch(head):
        return None, {}, message
    fields: dict[str, str] = {}
    while rest:
        match = _FIELD.match(rest)
        if match is None:
            break
        key, value = match.groups()
        fields[key] = value[1:-1] if value[:1] in "'\"" and len(value) >= 2 else value
        rest = rest[match.end() :].lstrip(" ")
    return head, fields, rest


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))  # message and traceback alike


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, fields, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        event, fields, rest = parse_event(record.getMessage())
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event or "log",
        }
        for key, value in fields.items():
            doc.setdefault(key, value)  # a field never overwrites the envelope
        if rest:
            doc["message"] = rest
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(doc, ensure_ascii=False))


def configure_logging(env: Mapping[str, str], stream: TextIO = sys.stderr) -> None:
    """Set up the root logger from ``WARREN_LOG_LEVEL`` and ``WARREN_LOG_FORMAT``.

    Raises:
        ConfigError: an unknown level or format (names the setting).
    """
    level = env.get("WARREN_LOG_LEVEL", "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError("WARREN_LOG_LEVEL", f"unknown level {level!r}")
    fmt = env.get("WARREN_LOG_FORMAT", "text").lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError("WARREN_LOG_FORMAT", f"unknown format {fmt!r}; use text or json")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pika's own INFO/DEBUG chatter repeats what Warren reports as connection.* events
    logging.getLogger("pika").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
