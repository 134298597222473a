"""The delivery reader against pika's own decoder, byte for byte: random deliveries (every
property, headers of every type, bodies split across frames at any frame_max, empty bodies)
interleaved with frames for pika (heartbeats, other channels, other methods), fed in random
chunks. What the reader decodes must equal what pika decodes, and pika must get every other
frame, unchanged and in order, with every byte counted."""

from __future__ import annotations

import datetime
import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame, spec

from warren._amqp.receive import ChannelReader

pytestmark = pytest.mark.timeout(120)
CHANNEL = 1

_header_values = st.recursive(
    st.one_of(
        st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none(),
        st.binary(max_size=10),
        st.decimals(places=2, min_value=-1000, max_value=1000, allow_nan=False),
        st.datetimes(min_value=datetime.datetime(1970, 1, 2),
                     max_value=datetime.datetime(2100, 1, 1)).map(
            lambda d: d.replace(microsecond=0)),
    ),
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)  # fmt: skip
_short = st.text(max_size=30) | st.none()


@st.composite
def _delivery(draw: st.DrawFn) -> tuple[spec.Basic.Deliver, spec.BasicProperties, bytes]:
    props = spec.BasicProperties(
        content_type=draw(_short), content_encoding=draw(_short),
        headers=draw(st.none() | st.dictionaries(st.text(max_size=10), _header_values, max_size=4)),
        delivery_mode=draw(st.none() | st.sampled_from([1, 2])),
        priority=draw(st.none() | st.integers(0, 9)), correlation_id=draw(_short),
        reply_to=draw(_short), expiration=draw(st.none() | st.integers(1, 10**6).map(str)),
        message_id=draw(_short), timestamp=draw(st.none() | st.integers(0, 2**40)),
        type=draw(_short), user_id=draw(_short), app_id=draw(_short), cluster_id=draw(_short),
    )  # fmt: skip
    method = spec.Basic.Deliver(
        consumer_tag=draw(st.text(min_size=1, max_size=40)),
        delivery_tag=draw(st.integers(1, 2**63)), redelivered=draw(st.booleans()),
        exchange=draw(st.text(max_size=20)), routing_key=draw(st.text(max_size=40)),
    )  # fmt: skip
    body = draw(st.binary(max_size=3000))
    return method, props, body


def _frames(method: Any, props: Any, body: bytes, frame_max: int) -> list[bytes]:
    out = [
        frame.Method(CHANNEL, method).marshal(),
        frame.Header(CHANNEL, len(body), props).marshal(),
    ]
    room = frame_max - 8
    out += [frame.Body(CHANNEL, body[i : i + room]).marshal() for i in range(0, len(body), room)]
    return out


_OTHERS = [
    frame.Heartbeat().marshal(),
    frame.Method(0, spec.Connection.Blocked("low on memory")).marshal(),
    frame.Method(CHANNEL, spec.Basic.Cancel("ctag")).marshal(),
    frame.Method(2, spec.Basic.Deliver("other", 7, False, "", "q")).marshal(),
    frame.Header(2, 3, spec.BasicProperties(message_id="x")).marshal(),
    frame.Body(2, b"abc").marshal(),
    frame.Method(CHANNEL, spec.Channel.Flow(active=True)).marshal(),
]


def _pika_decode(stream: bytes) -> list[Any]:
    """What pika makes of a byte stream: its frames, decoded."""
    frames: list[Any] = []
    while stream:
        used, value = frame.decode_frame(stream)
        assert value is not None
        frames.append(value)
        stream = stream[used:]
    return frames


def _normal(value: Any) -> Any:
    """Compare decoded header values as pika's decoder gives them (Decimal places aside)."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    return value


@settings(max_examples=60, deadline=None)
@given(
    deliveries=st.lists(_delivery(), min_size=1, max_size=12),
    frame_max=st.sampled_from([4096, 4097, 8192, 131072, 9, 10, 11, 16]),
    seed=st.integers(0, 2**32),
)
def test_the_reader_decodes_what_pika_decodes(
    deliveries: list[tuple[Any, Any, bytes]], frame_max: int, seed: int
) -> None:
    rng = random.Random(seed)
    stream: list[bytes] = []
    others: list[bytes] = []
    for method, props, body in deliveries:
        if rng.random() < 0.4:  # a frame for pika between two deliveries
            other = rng.choice(_OTHERS[:3] + _OTHERS[6:])
            stream.append(other)
            others.append(other)
        stream += _frames(method, props, body, max(frame_max, 9))
    if rng.random() < 0.5:  # another channel's delivery, for pika
        stream += _OTHERS[3:6]
        others += _OTHERS[3:6]
    data = b"".join(stream)

    to_pika: list[bytes] = []
    counted: list[int] = []
    got: list[Any] = []
    reader = ChannelReader(CHANNEL, to_pika.append, counted.append, got.extend)
    pos = 0
    while pos < len(data):  # the socket's reads: any size, any boundary
        step = rng.choice([1, 2, 7, 8, 9, 100, 4096, 1 << 20])
        reader.feed(data[pos : pos + step])
        pos += step

    assert b"".join(to_pika) == b"".join(others)  # every other frame, unchanged, in order
    assert sum(counted) + len(b"".join(to_pika)) == len(data)  # every byte counted once
    assert len(got) == len(deliveries)
    decoded = [f for f in _pika_decode(data) if f.channel_number == CHANNEL]
    expected = []
    i = 0
    while i < len(decoded):
        f = decoded[i]
        if isinstance(f, frame.Method) and isinstance(f.method, spec.Basic.Deliver):
            header = decoded[i + 1]
            i += 2
            parts: list[bytes] = []
            while sum(map(len, parts)) < header.body_size:
                parts.append(decoded[i].fragment)
                i += 1
            p = header.properties
            tag, redelivered = f.method.delivery_tag, bool(f.method.redelivered)
            headers = _normal(p.headers or {})
            expected.append((tag, redelivered, p.message_id, p.content_type, headers,
                             b"".join(parts)))  # fmt: skip
        else:
            i += 1
    assert [(t, r, m, c, _normal(h), b) for t, r, m, c, h, b in got] == expected


def test_a_malformed_frame_goes_to_pika_as_it_is() -> None:
    to_pika: list[bytes] = []
    got: list[Any] = []
    reader = ChannelReader(CHANNEL, to_pika.append, lambda _n: None, got.extend)
    bad = bytearray(frame.Method(CHANNEL, spec.Basic.Deliver("t", 1, False, "", "q")).marshal())
    bad[-1] = 0x00  # no frame-end octet
    reader.feed(bytes(bad))
    assert to_pika == [bytes(bad)] and got == []


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(
        st.one_of(
            _delivery().map(lambda d: ("d", d)),
            st.tuples(st.sampled_from(["ack", "nack"]), st.integers(1, 2**63), st.booleans()),
            st.sampled_from(_OTHERS[:3] + _OTHERS[6:]).map(lambda f: ("pika", f)),
        ),
        min_size=1,
        max_size=15,
    ),
    seed=st.integers(0, 2**32),
)
def test_confirms_deliveries_and_pika_frames_keep_their_order(
    items: list[tuple[Any, ...]], seed: int
) -> None:
    """A ``basic.return`` (pika's) must be handled before the ack that follows it, and a
    ``channel.close`` after the deliveries that came first: one log of what each side got
    must read in stream order."""
    rng = random.Random(seed)
    stream: list[bytes] = []
    expected: list[tuple[Any, ...]] = []
    for item in items:
        if item[0] == "d":
            method, props, body = item[1]
            stream += _frames(method, props, body, 4096)
            expected.append(("d", method.delivery_tag))
        elif item[0] in ("ack", "nack"):
            kind, tag, multiple = item
            cls = spec.Basic.Ack if kind == "ack" else spec.Basic.Nack
            stream.append(frame.Method(CHANNEL, cls(delivery_tag=tag, multiple=multiple)).marshal())
            expected.append((kind, tag, multiple))
        else:
            stream.append(item[1])
            if expected and expected[-1][0] == "pika":
                expected[-1] = ("pika", expected[-1][1] + item[1])
            else:
                expected.append(("pika", item[1]))
    log: list[tuple[Any, ...]] = []

    def pika(chunk: bytes) -> None:
        if log and log[-1][0] == "pika":
            log[-1] = ("pika", log[-1][1] + chunk)
        else:
            log.append(("pika", chunk))

    def deliveries(batch: list[Any]) -> None:
        log.extend(("d", raw[0]) for raw in batch)

    def confirm(nack: bool, tag: int, multiple: bool) -> None:
        log.append(("nack" if nack else "ack", tag, multiple))

    reader = ChannelReader(CHANNEL, pika, lambda _n: None, deliveries, confirm)
    data = b"".join(stream)
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 5, 13, 64, 4096, 1 << 20])
        reader.feed(data[pos : pos + step])
        pos += step
    assert log == expected
