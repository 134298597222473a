"""Keep credentials out of logs, metrics and exceptions."""

from __future__ import annotations

import re

# The password runs to the last "@" before the host, and may hold "/", "#", "?" or ","
# (unencoded): everything up to the "@" goes, not just what URL parsing would call it.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@\s]*@")


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/vh`` -> ``amqp://user:***@host/vh``; other URLs unchanged."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """Redact every ``scheme://user:password@`` found anywhere in free text."""
    return _USERINFO.sub(r"\g<scheme>\g<user>:***@", text)
