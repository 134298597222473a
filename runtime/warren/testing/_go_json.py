"""Request bodies decoded as Toxiproxy decodes them: Go's ``json.Decoder``, and its words.

Toxiproxy reads one JSON value and ignores what follows it, refuses an empty body with
``EOF`` and a cut-off one with ``unexpected EOF``, and names a syntax error by the character
it met (``invalid character 'b' looking for beginning of object key string``). A client or a
test that checks those answers sees the same from Warren. Numbers keep their literal text
(``Literal``), because Go refuses ``1.5`` or ``1e3`` for an integer field and says so.
"""

from __future__ import annotations

import json
from typing import final

_ATOMS = ("null", "true", "false")


@final
class Literal(float):
    """A JSON number written with a fraction or exponent, with its text as written."""

    text: str

    def __new__(cls, text: str) -> Literal:
        number = super().__new__(cls, text)
        number.text = text
        return number


class GoJsonError(ValueError):
    """The body is not one JSON value; the message is Go's."""


def go_type(value: object) -> str:
    """How Go's encoding/json names a JSON value's type in its errors."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def decode(body: bytes) -> object:
    """The first JSON value in ``body`` (what follows it is ignored, as Go's Decoder does).

    Raises:
        GoJsonError: empty, cut off or malformed, in Go's words.
    """
    text = body.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        raise GoJsonError("EOF")
    decoder = json.JSONDecoder(parse_float=Literal, parse_constant=_constant)
    try:
        value, _ = decoder.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise GoJsonError(_syntax_error(exc.msg, exc.doc, exc.pos)) from None
    except _BadConstant as exc:
        raise GoJsonError(f"invalid character {_quote(str(exc)[0])} looking for beginning of"
                          " value") from None  # fmt: skip
    except RecursionError:
        raise GoJsonError("exceeded max depth") from None
    return value


class _BadConstant(ValueError):
    pass


def _constant(name: str) -> object:
    raise _BadConstant(name)  # NaN, Infinity: not JSON to Go


def _syntax_error(msg: str, doc: str, pos: int) -> str:
    rest = doc[pos:]
    if not rest.strip() or msg.startswith("Unterminated string"):
        return "unexpected EOF"
    if msg == "Expecting value" and any(a.startswith(rest) for a in _ATOMS):
        return "unexpected EOF"  # "nul": a value cut off
    ch = _quote(rest[0])
    if msg.startswith("Expecting property name"):
        return f"invalid character {ch} looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {ch} after object key"
    if msg.startswith("Expecting ','"):
        inside = "object key:value pair" if _innermost(doc, pos) == "{" else "array element"
        return f"invalid character {ch} after {inside}"
    if msg.startswith("Invalid control character"):
        return f"invalid character {ch} in string literal"
    if msg.startswith("Invalid \\escape"):
        return f"invalid character {_quote(rest[1:2] or rest[0])} in string escape code"
    return f"invalid character {ch} looking for beginning of value"


def _innermost(doc: str, pos: int) -> str:
    """The bracket open at ``pos`` (``{`` or ``[``), ignoring brackets inside strings."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in doc[:pos]:
        if escaped:
            escaped = False
        elif in_string:
            escaped = ch == "\\"
            in_string = ch != '"'
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _quote(ch: str) -> str:
    """Go's quoteChar: ``'b'``, ``'"'``, ``'\\''``, ``'\\n'``."""
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    return "'" + json.dumps(ch)[1:-1] + "'"
