"""Keep credentials out of logs, metrics and exceptions.

Two layers, because a password may hold any character (a space, an unencoded ``@``) and
then no parser can say where it ends in free text:

- ``redact_url`` takes one URL value, whose userinfo runs to its *last* ``@``; everything
  between ``user:`` and that ``@`` goes, whatever it holds. So does the value of pika's
  ``ssl_options`` query argument (it may carry a key's passphrase).
- ``Redactor`` knows the configured secrets themselves (the passwords of the URLs in the
  process's settings, raw and percent-encoded) and removes them wherever they appear, then
  applies the URL pattern for URLs it was not told about. The log formatters use it.
"""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING, Final, final
from urllib.parse import parse_qsl, quote, unquote

if TYPE_CHECKING:
    from collections.abc import Iterable

MASK: Final = "***"
# Shorter secrets are left to the URL pattern: replacing every "ab" in a log would make it
# unreadable, and a two-letter password is not a secret anyway.
MIN_SECRET: Final = 4

_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")
# In free text a URL ends at white space; its userinfo runs to the last "@" before that.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):\S*@")
# pika's ?ssl_options={...} (percent-encoded or not): its value runs to the next "&" or the
# end of the URL; in free text, to white space
_SSL_OPTIONS = re.compile(r"(?P<key>ssl(?:_|%5F)options=)(?:\{[^}]*\}?|[^&\s]*)", re.IGNORECASE)
_SSL_OPTIONS_IN_URL = re.compile(r"(?P<key>ssl(?:_|%5F)options=)[^&]*", re.IGNORECASE)
_MASKED_SSL_OPTIONS = rf"\g<key>{MASK}"


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/vh`` -> ``amqp://user:***@host/vh``; other URLs unchanged.

    ``url`` is one value (a setting), so its password is everything between the first
    ``:`` after the user and the last ``@``: spaces, ``@``, ``/`` and ``#`` included.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return redact_text(url)
    rest = url[scheme.end() :]
    at = rest.rfind("@")
    user, colon, _ = rest[: max(at, 0)].partition(":")
    if at >= 0 and colon:
        rest = f"{user}:{MASK}{rest[at:]}"
    return scheme.group() + _redact_query(rest)


def _redact_query(rest: str) -> str:
    """The ``ssl_options`` value in a URL's query (the part after its userinfo)."""
    path, question, query = rest.partition("?")
    if not question:
        return rest
    return f"{path}?{_SSL_OPTIONS_IN_URL.sub(_MASKED_SSL_OPTIONS, query)}"


def redact_text(text: str) -> str:
    """Redact every ``scheme://user:password@`` and ``ssl_options=...`` found anywhere in
    free text."""
    text = _USERINFO.sub(rf"\g<scheme>\g<user>:{MASK}@", text)
    return _SSL_OPTIONS.sub(_MASKED_SSL_OPTIONS, text)


def ssl_options_of(url: str) -> object:
    """The value of a URL's ``ssl_options`` query argument as pika reads it (a Python
    literal); None if it has none, an ``Exception`` instance if it does not parse."""
    _, question, query = url.partition("?")
    if not question:
        return None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key.lower() == "ssl_options":
            try:
                return ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                return exc
    return None


def url_password(url: str) -> str | None:
    """The password of one URL value (see ``redact_url``), or None if it has none."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    rest = url[scheme.end() :]
    at = rest.rfind("@")
    _, colon, password = rest[: max(at, 0)].partition(":")
    return password if at >= 0 and colon and password else None


@final
class Redactor:
    """Removes known secrets, in every spelling a library might print, and URL passwords.

    Args:
        secrets: the values never to print (e.g. ``Redactor.from_settings(env)``).
    """

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        spellings = set()
        for secret in secrets:
            spellings |= {secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret))}
        # longest first, so a secret that contains another is removed whole
        self._secrets = tuple(
            sorted((s for s in spellings if len(s) >= MIN_SECRET), key=len, reverse=True)
        )

    @classmethod
    def from_settings(cls, settings: Iterable[str]) -> Redactor:
        """A redactor for the password of every URL among ``settings``' values, and the
        key passphrase of an ``ssl_options`` in one."""
        secrets: list[str] = []
        for value in settings:
            password = url_password(value)
            if password is not None:
                secrets.append(password)
            options = ssl_options_of(value)
            if isinstance(options, dict) and options.get("password"):
                secrets.append(str(options["password"]))
        return cls(secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return redact_text(text)
