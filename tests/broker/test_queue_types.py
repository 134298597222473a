"""Queues as users declare them: quorum, classic with arguments, passive; a topology the
broker refuses stops the worker with ``TopologyMismatch`` instead of retrying forever.

Before, a Consumer always declared a classic durable queue: on an existing quorum queue the
broker answered 406 PRECONDITION_FAILED and the worker reconnected and declared again,
forever.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from tests.support.helpers import run_warren, running, wait_until
from warren import (
    ConfigError,
    ConnectionConfig,
    Consumer,
    ConsumerConfig,
    Message,
    Metrics,
    Publisher,
    PublisherConfig,
    Queue,
    Topology,
    TopologyMismatch,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.broker import Broker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


@pytest.fixture
def name(broker: Broker) -> Iterator[str]:
    """A queue name; it and the consumer's delay and dead-letter queues are deleted after."""
    q = f"warren.test.qt.{uuid.uuid4().hex[:8]}"
    yield q
    delays = (200, 400, 800, 1600, 1000, 2000, 4000, 8000)  # these tests' and the sender's
    for suffix in ("", ".dlq", *(f".retry.{ms}ms" for ms in delays)):
        broker.delete_queue(q + suffix)


def _cfg(url: str, queue: str, **kw: Any) -> ConsumerConfig:
    return ConsumerConfig(
        connection=ConnectionConfig(urls=url, backoff_base=0.05, backoff_cap=0.2),
        queue=queue,
        retry_base=0.2,
        **kw,
    )


async def _consumes(config: ConsumerConfig, broker: Broker, metrics: Metrics) -> int:
    seen: list[bytes] = []

    async def handler(message: Message) -> None:
        seen.append(message.body)

    async with Consumer(config, handler, metrics=metrics, name="qt") as consumer:
        await consumer.wait_connected()
        for i in range(5):
            broker.publish(config.queue, f"m{i}".encode(), message_id=f"m{i}")
        await wait_until(lambda: len(seen) == 5)
    return len(seen)


async def test_a_quorum_queue_is_consumed(
    broker_url: str, broker: Broker, name: str, metrics: Metrics
) -> None:
    broker.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    assert await _consumes(_cfg(broker_url, name, queue_type="quorum"), broker, metrics) == 5


async def test_a_consumer_declares_its_quorum_queue_and_its_delay_queues(
    broker_url: str, broker: Broker, name: str, metrics: Metrics
) -> None:
    assert await _consumes(_cfg(broker_url, name, queue_type="quorum"), broker, metrics) == 5
    for queue in (name, f"{name}.dlq", f"{name}.retry.200ms"):
        kind = broker.queue_type(queue)
        assert kind == "quorum", (queue, kind)


async def test_an_existing_queue_is_used_as_it_is_with_passive(
    broker_url: str, broker: Broker, name: str, metrics: Metrics
) -> None:
    broker.declare_queue(name, durable=True, arguments={"x-max-length": 1000})
    assert await _consumes(_cfg(broker_url, name, queue_passive=True), broker, metrics) == 5


async def test_a_queue_with_other_arguments_stops_the_worker_with_a_clear_error(
    broker_url: str, broker: Broker, name: str, metrics: Metrics
) -> None:
    broker.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})

    async def handler(message: Message) -> None:
        pass

    with anyio.fail_after(20), pytest.raises(TopologyMismatch) as info:
        async with Consumer(_cfg(broker_url, name), handler, metrics=metrics, name="c"):
            await anyio.sleep_forever()
    text = str(info.value)
    assert "406" in text and name in text and "x-queue-type" in text, text
    assert "quorum" in text, text


async def test_a_missing_passive_queue_stops_the_worker(
    broker_url: str, name: str, metrics: Metrics
) -> None:
    async def handler(message: Message) -> None:
        pass

    config = _cfg(broker_url, name, queue_passive=True)
    with anyio.fail_after(20), pytest.raises(TopologyMismatch, match=f"404.*{name}"):
        async with Consumer(config, handler, metrics=metrics, name="c"):
            await anyio.sleep_forever()


async def test_a_publisher_whose_queue_has_other_arguments_stops_too(
    broker_url: str, broker: Broker, name: str, metrics: Metrics
) -> None:
    broker.declare_queue(name, durable=False)
    topology = Topology(queues=(Queue(name=name, durable=True),))
    with anyio.fail_after(20), pytest.raises(TopologyMismatch, match="durable"):
        async with Publisher(
            PublisherConfig(connection=ConnectionConfig(urls=broker_url)),
            metrics=metrics,
            topology=topology,
        ) as pub:
            await pub.wait_connected()


def test_bad_queue_settings_name_themselves() -> None:
    with pytest.raises(ConfigError, match="queue_type"):
        ConsumerConfig(queue="q", queue_type="stream")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="queue_arguments: set the type with queue_type"):
        ConsumerConfig(queue="q", queue_arguments={"x-queue-type": "quorum"})


@pytest.mark.parametrize("service", ["push-sender", "api"])
def test_a_service_on_a_queue_of_another_type_exits_2_naming_the_settings(
    service: str, broker_url: str, broker: Broker, name: str, tmp_path: Any
) -> None:
    broker.declare_queue(name, durable=True)  # classic; the services default to quorum
    env = {"WARREN_AMQP_URL": broker_url, "WARREN_PUSH_QUEUE": name,
           "WARREN_API_DB": str(tmp_path / "api.sqlite3")}  # fmt: skip
    done = run_warren("run", service, env=env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "WARREN_PUSH_QUEUE_TYPE" in done.stderr and name in done.stderr, done.stderr
    assert "x-queue-type" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


async def test_the_push_sender_keeps_a_classic_queue_with_the_type_setting(
    broker_url: str, broker: Broker, name: str
) -> None:
    """``WARREN_PUSH_QUEUE_TYPE=classic`` keeps an existing classic queue working (the
    CHANGELOG's migration path)."""
    from warren_services import push_sender

    broker.declare_queue(name, durable=True)
    env = {"WARREN_AMQP_URL": broker_url, "WARREN_PUSH_QUEUE": name,
           "WARREN_PUSH_QUEUE_TYPE": "classic", "WARREN_PUSH_INVALID_TOKENS_QUEUE": ""}  # fmt: skip
    async with running(push_sender.service, env) as ctx:
        await wait_until(lambda: "push-sender" in ctx.metrics.consumers())
        await wait_until(lambda: ctx.metrics.consumers()["push-sender"].connected)
    assert broker.queue_type(name) == "classic"


def test_one_failure_seen_by_two_workers_is_raised_once() -> None:
    """A consumer and its re-publishing publisher are refused the same topology: the caller
    gets one ``TopologyMismatch``, not an exception group; two different failures stay a
    group."""
    from warren._common.unwrap import raise_single

    same = BaseExceptionGroup(
        "tg", [TopologyMismatch("u", "406 x"), TopologyMismatch("u", "406 x")]
    )
    with pytest.raises(TopologyMismatch):
        raise_single(same)
    different = BaseExceptionGroup("tg", [TopologyMismatch("u", "406 x"), ValueError("bug")])
    with pytest.raises(BaseExceptionGroup):
        raise_single(different)
