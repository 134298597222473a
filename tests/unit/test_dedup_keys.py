"""Deduplication keys: two different messages never share one (#27: the key was
``<queue>:<message_id>`` with no vhost and no escaping, so the second push of a colliding
pair was acked as a duplicate and never sent)."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from warren import ConnectionConfig, ConsumerConfig, MemoryDedupStore
from warren._amqp import Delivered
from warren._dedup.gate import DedupGate, GateOutcome
from warren._dedup.store import dedup_key

pytestmark = pytest.mark.timeout(30)


def _delivery(message_id: str, tag: int = 1) -> Delivered:
    return Delivered(1, tag, message_id, {}, b"", False, None)


class _Seen:
    def __init__(self) -> None:
        self.admitted: list[str | None] = []
        self.settled: list[tuple[str | None, GateOutcome]] = []
        self.changed = anyio.Event()

    def admit(self, d: Delivered) -> None:
        self.admitted.append(d.message_id)
        self.changed.set()

    def held(self, d: Delivered) -> None:
        raise AssertionError(f"{d.message_id} held by nobody")

    def settle(self, d: Delivered, outcome: GateOutcome) -> None:
        self.settled.append((d.message_id, outcome))
        self.changed.set()


async def _settled(seen: _Seen, count: int) -> None:
    with anyio.fail_after(5):
        while len(seen.settled) < count:
            seen.changed = anyio.Event()
            await seen.changed.wait()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("/", "push", "m1"), ("tenant-b", "push", "m1")),  # one queue name, two vhosts
        (("/", "a.k", "x:m1"), ("/", "a.k:x", "m1")),  # a separator inside a part
        (("a:b", "c", "m"), ("a", "b:c", "m")),
        (("/", "q", "m%3A1"), ("/", "q", "m:1")),  # an escape inside a part
    ],
)
async def test_a_message_done_in_one_place_does_not_suppress_another(
    first: tuple[str, str, str], second: tuple[str, str, str]
) -> None:
    store = MemoryDedupStore()  # shared, as one Redis is between the two consumers
    seen = _Seen()
    gates = [
        DedupGate(
            store,
            vhost=vhost,
            queue=queue,
            lease=30,
            retention=60,
            on_error="at-least-once",
            name=f"w{i}",
            admit=seen.admit,
            held=seen.held,
            settle=seen.settle,
        )
        for i, (vhost, queue, _) in enumerate((first, second))
    ]
    async with anyio.create_task_group() as tg:
        for gate in gates:
            tg.start_soon(gate.run)
        for i, (gate, (_, _, message_id)) in enumerate(zip(gates, (first, second), strict=True)):
            delivery = _delivery(message_id, tag=i)
            gate.claim(delivery)
            with anyio.fail_after(5):
                while len(seen.admitted) <= i:
                    seen.changed = anyio.Event()
                    await seen.changed.wait()
            gate.succeeded(delivery)
            await _settled(seen, i + 1)
        tg.cancel_scope.cancel()
    assert seen.admitted == [first[2], second[2]], "both ran their handler"
    assert [outcome for _, outcome in seen.settled] == ["ack", "ack"], "neither is a duplicate"


async def test_the_same_message_is_still_a_duplicate() -> None:
    store = MemoryDedupStore()
    seen = _Seen()
    gate = DedupGate(store, vhost="/", queue="push", lease=30, retention=60,
                     on_error="at-least-once", name="w", admit=seen.admit, held=seen.held,
                     settle=seen.settle)  # fmt: skip
    async with anyio.create_task_group() as tg:
        tg.start_soon(gate.run)
        gate.claim(_delivery("m:1"))
        with anyio.fail_after(5):
            while not seen.admitted:
                seen.changed = anyio.Event()
                await seen.changed.wait()
        gate.succeeded(_delivery("m:1"))
        await _settled(seen, 1)
        gate.claim(_delivery("m:1", tag=2))  # the redelivery of a lost ack
        await _settled(seen, 2)
        tg.cancel_scope.cancel()
    assert seen.settled == [("m:1", "ack"), ("m:1", "duplicate")]


_part = st.text(st.sampled_from(":%/a.b\x00é"), max_size=6)


@given(_part, _part, _part, _part, _part, _part)
def test_keys_are_injective(v1: str, q1: str, m1: str, v2: str, q2: str, m2: str) -> None:
    if (v1, q1, m1) != (v2, q2, m2):
        assert dedup_key(v1, q1, m1) != dedup_key(v2, q2, m2)


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://u:p@h:5672/%2F", "/"),
        ("amqp://u:p@h:5672/", "/"),
        ("amqp://u:p@h:5672", "/"),
        ("amqp://u:p@h/tenant-b", "tenant-b"),
        ("amqp://u:p@h/a%2Fb", "a/b"),
    ],
)
def test_the_vhost_a_consumer_keys_by_is_the_one_it_connects_to(url: str, vhost: str) -> None:
    assert (
        ConsumerConfig(connection=ConnectionConfig(urls=url), queue="q").connection.vhost == vhost
    )
