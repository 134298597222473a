"""The publish frames Warren encodes are byte for byte what pika's own encoder produces."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame, spec

from warren import InvalidJob
from warren._amqp.wire import PublishEncoder, frames

pytestmark = pytest.mark.timeout(60)

short = st.text(max_size=60)  # at most 240 UTF-8 bytes
header_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short, inner, max_size=3),
    max_leaves=8,
)


def pika_frames(channel: int, job: dict[str, Any], body: bytes, max_body: int) -> bytes:
    props = spec.BasicProperties(
        content_type=job["content_type"],
        headers=dict(job["headers"]) if job["headers"] else None,
        delivery_mode=2 if job["persistent"] else 1,
        message_id=job["message_id"],
    )
    method = spec.Basic.Publish(
        exchange=job["exchange"], routing_key=job["routing_key"], mandatory=True
    )
    out = [
        frame.Method(channel, method).marshal(),
        frame.Header(channel, len(body), props).marshal(),
    ]
    out += (
        frame.Body(channel, body[start : start + max_body]).marshal()
        for start in range(0, len(body), max_body)
    )
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(
    channel=st.integers(1, 65535),
    exchange=short,
    routing_key=short,
    message_id=st.text(min_size=1, max_size=60),
    content_type=short,
    headers=st.none() | st.dictionaries(short, header_values, max_size=4),
    persistent=st.booleans(),
    body=st.binary(max_size=300),
    max_body=st.integers(1, 200),
)
def test_frames_equal_pikas(
    channel: int,
    exchange: str,
    routing_key: str,
    message_id: str,
    content_type: str,
    headers: dict[str, Any] | None,
    persistent: bool,
    body: bytes,
    max_body: int,
) -> None:
    job: dict[str, Any] = {
        "exchange": exchange,
        "routing_key": routing_key,
        "message_id": message_id,
        "content_type": content_type,
        "headers": headers,
        "persistent": persistent,
    }
    expected = pika_frames(channel, job, body, max_body)
    encode = PublishEncoder(persistent=job.pop("persistent"), cache_size=2)
    for _ in range(2):  # encoded afresh, then from the caches
        method, header = encode(**job, body_size=len(body))
        out: list[bytes] = []
        frames(out, channel, method, header, body, max_body)
        assert b"".join(out) == expected


def test_what_cannot_go_on_the_wire_is_refused_with_the_field_named() -> None:
    encode = PublishEncoder(persistent=True)
    ok: dict[str, Any] = {
        "exchange": "",
        "routing_key": "q",
        "message_id": "m",
        "content_type": "application/json",
        "headers": None,
        "body_size": 0,
    }
    with pytest.raises(InvalidJob, match="routing_key is 256 bytes"):
        encode(**{**ok, "routing_key": "é" * 128})
    with pytest.raises(InvalidJob, match="content_type must be a str"):
        encode(**{**ok, "content_type": None})
    with pytest.raises(InvalidJob, match="headers"):
        encode(**{**ok, "headers": {"k": object()}})
    with pytest.raises(InvalidJob, match="headers"):
        encode(**{**ok, "headers": {"k" * 300: 1}})
    with pytest.raises(InvalidJob, match="routing_key must be a str"):
        encode(**{**ok, "routing_key": ["not", "hashable"]})
    encode(**ok)  # cached now; a bad one is still refused, not served from a cache
    with pytest.raises(InvalidJob, match="exchange must be a str"):
        encode(**{**ok, "exchange": b""})
