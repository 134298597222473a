"""JSON from the network, parsed strictly: a bad body is a 400/413/422, never a crash.

``json.loads`` alone accepts ``NaN`` and ``Infinity``, turns ``1e999`` into ``inf``, keeps
lone surrogates that cannot be encoded again, and raises ``RecursionError`` (not
``ValueError``) on deep nesting, which escaped every handler and took a whole server down.
"""

from __future__ import annotations

import json
import math
from typing import Final, final

from warren._exceptions import WarrenError

MAX_DEPTH: Final = 32


@final
class BadRequest(WarrenError, ValueError):
    """A request the server refuses: ``status`` (400, 413, 422) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _no_constant(name: str) -> object:
    raise BadRequest(400, f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(400, f"number {text[:20]} is out of range")
    return value


def loads_strict(data: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> object:
    """Parse a request body.

    Raises:
        BadRequest: 413 over ``max_bytes``; 400 for anything but finite, encodable JSON
            nested at most ``max_depth`` deep.
    """
    if len(data) > max_bytes:
        raise BadRequest(413, f"body is {len(data):,} bytes, over {max_bytes:,}")
    if data.count(b"[") + data.count(b"{") > max_depth and _nesting(data) > max_depth:
        raise BadRequest(400, f"JSON nested deeper than {max_depth}")
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except BadRequest:
        raise
    except (ValueError, RecursionError) as exc:
        raise BadRequest(400, f"body is not JSON: {str(exc)[:100]}") from None
    _check_strings(value)
    return value


def _nesting(data: bytes) -> int:
    """The deepest bracket nesting, ignoring brackets inside strings (a cheap pre-check, so
    the parser never recurses deeply)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _check_strings(value: object) -> None:
    """Every string (keys too) must encode as UTF-8: no lone surrogates."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(400, "a string holds a lone surrogate") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
