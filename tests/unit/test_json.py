"""Strict JSON from the network: every bad body is a ``BadRequest`` with its status, never
another exception (one escaped every handler once and took a server down)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warren import BadRequest, loads_strict

pytestmark = pytest.mark.timeout(60)

LIMIT = 1 << 20


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"x" * 11, 413, "over 10"),
        (b"NaN", 400, "NaN is not JSON"),
        (b'{"a": -Infinity}', 400, "-Infinity is not JSON"),
        (b"[1e999]", 400, "out of range"),
        (b'"\\ud800"', 400, "lone surrogate"),
        (b'{"\\udfff": 1}', 400, "lone surrogate"),
        (b"[" * 33 + b"]" * 33, 400, "nested deeper than 32"),
        (b"[" * 100_000, 400, "nested deeper"),
        (b"{'a': 1}", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        (b"", 400, "not JSON"),
    ],
)
def test_a_bad_body_is_a_bad_request_with_its_status(body: bytes, status: int, says: str) -> None:
    limit = 10 if status == 413 else LIMIT
    with pytest.raises(BadRequest, match=says) as info:
        loads_strict(body, max_bytes=limit)
    assert info.value.status == status


def test_brackets_inside_strings_are_no_nesting() -> None:
    body = json.dumps({"text": "[" * 100 + "{" * 100, "x": [[['\\"[']]]}).encode()
    assert loads_strict(body, max_bytes=LIMIT)["text"] == "[" * 100 + "{" * 100  # type: ignore[index]


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert loads_strict(b"[" * 32 + b"]" * 32, max_bytes=LIMIT) == _nested(32)


def _nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(_json)
def test_what_json_dumps_writes_comes_back_the_same(value: object) -> None:
    body = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:  # a generated lone surrogate: refused, never a crash
        with pytest.raises(BadRequest):
            loads_strict(body, max_bytes=LIMIT)
        return
    assert loads_strict(body, max_bytes=LIMIT) == value


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_a_bad_request(body: bytes) -> None:
    status = 200
    try:
        loads_strict(body, max_bytes=LIMIT)
    except BadRequest as exc:  # any other exception fails the test
        status = exc.status
    assert status in (200, 400)
