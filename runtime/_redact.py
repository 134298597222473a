"""Keep credentials out of logs, metrics and exceptions."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@")


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/vh`` -> ``amqp://user:***@host/vh``; other URLs unchanged."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_text(text: str) -> str:
    """Redact every ``scheme://user:password@`` found anywhere in free text."""
    return _USERINFO.sub(r"\g<scheme>\g<user>:***@", text)
