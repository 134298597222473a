"""Process logging for the runner: one event per line, as text or JSON, secrets redacted.

Warren's log messages start with a stable event name and carry ``key=value`` fields
(``connection.lost worker=api kind=dead_link in_flight=3 ...``). The fields are read from the
call's template and arguments (``"... worker=%s ..."``, ``name``), never by re-parsing the
formatted line, so a value that holds a newline or ``key=value`` (a producer-chosen message
id, say) cannot forge a line or a field: the text format quotes and escapes such a value,
the JSON format (``WARREN_LOG_FORMAT=json``) puts it in its field as it is. Every line, from
Warren or from a library, passes through redaction: the passwords of every URL in the
settings are removed wherever they appear (``Redactor``), then any other URL's password.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from warren._common.redact import Redactor
from warren._exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import TextIO

LOG_FORMATS: Final = ("text", "json")
_EVENT = re.compile(r"[a-z][a-z_]*(?:\.[a-z_]+)+")
_FIELD = re.compile(r"([a-z_]+)=('[^']*'|\"[^\"]*\"|\S+)")
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def parse_event(message: str) -> tuple[str | None, dict[str, object], str]:
    """``"connection.lost worker=a kind=b why"`` -> ``("connection.lost", {...}, "why")``.

    Fields are the ``key=value`` words right after the event name; the first word that is
    not one ends them, and the rest is free text (an error message, say).
    """
    head, _, rest = message.partition(" ")
    if not _EVENT.fullmatch(head):
        return None, {}, message
    fields: dict[str, object] = {}
    while rest:
        match = _FIELD.match(rest)
        if match is None:
            break
        key, value = match.groups()
        fields[key] = value[1:-1] if value[:1] in "'\"" and len(value) >= 2 else value
        rest = rest[match.end() :].lstrip(" ")
    return head, fields, rest


_SPEC = re.compile(
    r"%(?:\((?P<name>[^)]*)\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]"
)
_FIELD_SPEC = re.compile(r"(?:^|\s)(?P<key>[a-z_]+)=(?P<quote>'?)$")
_UNSAFE = re.compile(r"[\s='\"\\]|[\x00-\x1f\x7f]")


def structured(record: logging.LogRecord) -> tuple[str | None, dict[str, object], str]:
    """(event, fields, free text) of a record, from its template and arguments.

    Falls back to ``parse_event`` on the formatted message when the template is not
    Warren's ``event key=%s ...`` form (a library's message, or arguments by mapping).
    """
    template, args = record.msg, record.args
    if not isinstance(template, str) or not isinstance(args, tuple):
        return parse_event(record.getMessage())
    head, _, _ = template.partition(" ")
    if not _EVENT.fullmatch(head):
        return None, {}, record.getMessage()
    fields: dict[str, object] = {}
    pos = len(head)  # fields start after the event name
    consumed = 0  # args used by field specifiers
    tail_start = len(template)
    for match in _SPEC.finditer(template):
        if match.group() == "%%":
            continue
        key = _FIELD_SPEC.search(template, pos, match.start())
        if key is None or template[key.end() : match.start()] != "" or consumed >= len(args):
            tail_start = match.start()
            break
        spec = match.group()
        value: object = args[consumed]
        if spec not in ("%s", "%r", "%d", "%i"):
            value = spec % (value,)
        end = match.end() + (1 if key.group("quote") else 0)
        space = template.find(" ", end)
        suffix = template[end : len(template) if space < 0 else space]
        if suffix and "%" not in suffix:  # a unit glued to the value: ``%.1fs``
            value, end = f"{value}{suffix}", end + len(suffix)
        elif suffix:
            tail_start = match.start()
            break
        fields[key.group("key")] = value
        consumed += 1
        pos = end
    else:
        tail_start = pos  # literal words after the last field stay as free text
    tail = template[tail_start:].strip(" ")
    try:
        rest = tail % args[consumed:] if tail else ""
    except (TypeError, ValueError):
        return parse_event(record.getMessage())
    return head, fields, rest


def _text_value(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or _UNSAFE.search(text) else text


class _TextFormatter(logging.Formatter):
    def __init__(self, fmt: str, redact: Redactor) -> None:
        super().__init__(fmt)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        event, fields, rest = structured(record)
        if event is not None:
            # values redacted before quoting: the escapes would hide a secret holding " or \\
            redact = self._redact
            parts = [event, *(f"{k}={_text_value(redact(str(v)))}" for k, v in fields.items())]
            if rest:
                parts.append(redact(rest).replace("\n", "\\n").replace("\r", "\\r"))
            record = logging.makeLogRecord({**record.__dict__, "msg": " ".join(parts),
                                            "args": ()})  # fmt: skip
        return self._redact(super().format(record))  # message and traceback alike


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, fields, message, exception."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        event, fields, rest = structured(record)
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event or "log",
        }
        for key, value in fields.items():
            # a field never overwrites the envelope; values that JSON cannot carry as they
            # are become strings
            doc.setdefault(key, value if isinstance(value, int | float | bool) else str(value))
        if rest:
            doc["message"] = rest
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        # each value redacted before encoding: JSON's escapes would hide a secret that holds
        # a quote or a backslash from a search of the encoded line
        redacted = {k: self._redact(v) if isinstance(v, str) else v for k, v in doc.items()}
        return json.dumps(redacted, ensure_ascii=False)


def configure_logging(env: Mapping[str, str], stream: TextIO = sys.stderr) -> None:
    """Set up the root logger from ``WARREN_LOG_LEVEL`` and ``WARREN_LOG_FORMAT``; the
    password of every URL among ``env``'s values is never printed.

    Raises:
        ConfigError: an unknown level or format (names the setting).
    """
    level = env.get("WARREN_LOG_LEVEL", "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError("WARREN_LOG_LEVEL", f"unknown level {level!r}")
    fmt = env.get("WARREN_LOG_FORMAT", "text").lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError("WARREN_LOG_FORMAT", f"unknown format {fmt!r}; use text or json")
    redact = Redactor.from_settings(env.values())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else _TextFormatter(_TEXT, redact))
    handler.addFilter(_LibraryLevels(show_debug=level == "DEBUG"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pika").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


# Libraries whose every line is DEBUG: pika repeats what Warren's ``connection.*`` events
# say once (a refused connect is seven pika ERROR lines); httpcore traces each request.
_ALL_DEBUG: Final = ("pika", "httpcore")
# Libraries whose INFO is per-operation chatter (httpx's ``HTTP Request: POST ... 200`` per
# push, google-auth's token refreshes, the servers' per-connection lines): DEBUG. Their
# warnings and errors stay, once per template within ``_REPEAT_WINDOW``.
_CHATTY: Final = ("httpx", "starlette", "uvicorn", "google", "urllib3", "asyncio",
                  "trio", "anyio", "h11", "redis", "sqlite3")  # fmt: skip
_REPEAT_WINDOW: Final = 60.0


def _is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class _LibraryLevels(logging.Filter):
    """Third-party libraries' records at the level they deserve in a service's log.

    pika's and httpcore's lines are DEBUG whatever their level; the chatty libraries' INFO
    and lower are DEBUG, their warnings and errors shown once per template and level in
    ``_REPEAT_WINDOW`` seconds (the next one after the window says how many were held
    back). Warren's own loggers and the application's are left alone. With
    ``WARREN_LOG_LEVEL=DEBUG`` every line shows.
    """

    def __init__(self, *, show_debug: bool, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._show_debug = show_debug
        self._clock = clock
        self._shown: dict[tuple[str, int, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if _is_under(name, _ALL_DEBUG) or (
            record.levelno < logging.WARNING and _is_under(name, _CHATTY)
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self._show_debug
        if self._show_debug or not _is_under(name, _CHATTY):
            return True
        return self._once(record)

    def _once(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.msg)
        now = self._clock()
        shown = self._shown.get(key)
        if shown is not None and now - shown[0] < _REPEAT_WINDOW:
            self._shown[key] = (shown[0], shown[1] + 1)
            return False
        if len(self._shown) > 1000:  # templates are few; a flood of distinct ones is not kept
            self._shown.clear()
        self._shown[key] = (now, 0)
        if shown is not None and shown[1]:
            record.msg = f"{record.msg} (and {shown[1]} more like it held back)"
        return True
