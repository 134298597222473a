"""One bad message never stops a consumer: random bodies, sizes and headers (crafted
``x-warren-attempts`` included) thrown at a running consumer whose handler fails on most of
them. It never exits, and every message ends acked or dead-lettered, counted.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.support.broker import Broker
from tests.support.helpers import wait_until
from warren import (
    ConnectionConfig,
    Consumer,
    ConsumerConfig,
    Message,
    Metrics,
    PoisonMessage,
    RetryLater,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

_INT64 = st.integers(-(2**63), 2**63 - 1)
# what pika (the test's own publisher) can put in a header table: no floats
_SCALAR = st.one_of(st.none(), st.booleans(), _INT64, st.text(max_size=50),
                    st.binary(max_size=20))  # fmt: skip
_VALUE = st.recursive(_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=8), inner,
                                                 max_size=3)), max_leaves=6)  # fmt: skip
_HEADERS = st.dictionaries(st.text(min_size=1, max_size=20), _VALUE, max_size=4).flatmap(
    lambda h: st.one_of(
        st.just(h),
        st.builds(lambda a: {**h, "x-warren-attempts": a},
                  st.one_of(_INT64, st.text(max_size=5), st.booleans(), st.none())),
    )
)  # fmt: skip
# most bodies are small; some are over the producer-side job limit (128 KiB)
_BODY = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda n, ok: json.dumps({"ok": ok, "pad": "x" * n}).encode(),
              st.integers(0, 300_000), st.booleans()),
)  # fmt: skip
_MESSAGE = st.tuples(_BODY, _HEADERS, st.sampled_from(["poison", "fail", "retry", "ok"]))


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages=st.lists(_MESSAGE, min_size=1, max_size=12))
async def test_no_message_stops_the_consumer(
    broker_url: str, messages: list[tuple[bytes, dict[str, Any], str]]
) -> None:
    queue = f"warren.test.fuzz.{uuid.uuid4().hex[:8]}"
    config = ConsumerConfig(
        connection=ConnectionConfig(urls=broker_url, heartbeat=2),
        queue=queue,
        max_attempts=2,
        retry_base=0.05,
        retry_cap=0.05,
    )

    async def handler(message: Message) -> None:
        behaviour = message.headers.get("x-test-behaviour")
        doc = message.json()  # not JSON: PoisonMessage, dead-lettered at once
        if behaviour == "poison" or not isinstance(doc, dict):
            raise PoisonMessage("test: poison")
        if behaviour == "fail":
            raise ValueError("test: handler failed")
        if behaviour == "retry":
            raise RetryLater(0.0)

    consumer = Consumer(config, handler, metrics=Metrics(CollectorRegistry()), name="fuzz")
    try:
        async with consumer:
            await consumer.wait_connected()
            await anyio.to_thread.run_sync(_publish, broker_url, queue, messages)
            n = len(messages)
            await wait_until(
                lambda: (
                    consumer.statistics().failed is not None
                    or sum(consumer.statistics().outcomes.values()) - _retries(consumer) >= n
                ),
                within=60,
            )
            stats = consumer.statistics()
            assert stats.failed is None, stats.failed
        outcomes = consumer.statistics().outcomes
        settled = outcomes["ack"] + outcomes["dead_letter"] + outcomes.get("rejected", 0)
        assert settled == len(messages), outcomes
        with Broker(broker_url) as broker:
            assert broker.depth(queue) == 0
            assert broker.depth(f"{queue}.dlq") == outcomes["dead_letter"]
    finally:
        with Broker(broker_url) as broker:
            for suffix in ("", ".dlq", ".retry.50ms"):
                broker.delete_queue(queue + suffix)


def _retries(consumer: Consumer) -> int:
    return consumer.statistics().outcomes["retry"]


def _publish(url: str, queue: str, messages: list[tuple[bytes, dict[str, Any], str]]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for i, (body, headers, behaviour) in enumerate(messages):
            props = pika.BasicProperties(
                message_id=f"fuzz-{i}", headers={**headers, "x-test-behaviour": behaviour}
            )
            channel.basic_publish("", queue, body, props)
    finally:
        connection.close()
