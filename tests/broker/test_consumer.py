"""Consumer worker against the real broker: ack only after success, retries through delay
queues, dead letters with reasons, poison, timeouts, broker-side cancel, shutdown."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from tests.support.broker import rabbitmqctl, warren_connection_pids
from tests.support.helpers import connection_settings, metric, wait_until
from warren import (
    ConnectionConfig,
    Consumer,
    ConsumerConfig,
    Deduplicator,
    Message,
    Metrics,
    PoisonMessage,
    RetryLater,
)
from warren.testing import partition

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.broker import Broker
    from warren.testing.pytest_plugin import ProxiedBroker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]


@pytest.fixture
def queue(broker: Broker) -> Iterator[str]:
    name = f"warren.consume.{uuid.uuid4().hex[:10]}"
    yield name
    delays = cfg("amqp://h/", name).retry_delays()
    for suffix in ("", ".dlq", *(f".retry.{int(d * 1000)}ms" for d in delays)):
        broker.delete_queue(name + suffix)


def cfg(broker_url: str, queue: str, **kw: Any) -> ConsumerConfig:
    kw.setdefault("heartbeat", 2)
    kw.setdefault("retry_base", 0.2)
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_cap", 0.3)
    link = ConnectionConfig(urls=broker_url, **connection_settings(kw))
    return ConsumerConfig(connection=link, queue=queue, **kw)


async def test_acks_only_after_the_handler_succeeded(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    seen: list[str] = []

    async def handler(message: Message) -> None:
        assert message.attempt == 1
        seen.append(str(message.message_id))

    async with Consumer(cfg(broker_url, queue), handler, metrics=metrics, name="c") as consumer:
        await consumer.wait_connected()
        for i in range(200):
            broker.publish(queue, json.dumps({"i": i}).encode(), message_id=f"m{i}")
        await wait_until(lambda: consumer.statistics().outcomes["ack"] == 200)
    assert sorted(seen) == sorted(f"m{i}" for i in range(200))
    assert broker.depth(queue) == 0
    assert metric(metrics, "warren_deliveries_total", worker="c", outcome="ack") == 200
    assert metric(metrics, "warren_handler_seconds_count", worker="c") == 200


@pytest.mark.scenario
@pytest.mark.timeout(60)
async def test_handlers_that_hog_the_event_loop_are_not_taken_for_a_dead_link(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    """CPU-bound handlers keep the event loop busy for 2 s each, longer than the watchdog's
    limit at heartbeat 1 (1.6 s of silence): the broker's bytes are read on the pika
    thread, so the watchdog sees them and never reconnects."""
    done: list[str] = []

    async def hog(message: Message) -> None:
        until = time.monotonic() + 2.0
        while time.monotonic() < until:  # pure Python: holds the loop, yields only the GIL
            pass
        done.append(message.message_id or "")

    config = cfg(broker_url, queue, heartbeat=1, concurrency=1, handler_timeout=30)
    async with Consumer(config, hog, metrics=metrics) as consumer:
        await consumer.wait_connected()
        for i in range(3):
            broker.publish(queue, b"{}", message_id=f"hog-{i}")
        await wait_until(lambda: consumer.statistics().outcomes["ack"] == 3, within=30)
        assert consumer.statistics().reconnects == 0
        assert consumer.statistics().connected
    assert sorted(done) == ["hog-0", "hog-1", "hog-2"]


async def test_out_of_order_finishes_are_acked_exactly_once(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    """Handlers finish in random order: acks go out as one ``multiple`` ack for the finished
    prefix plus single acks for the rest. A tag acked twice would make the broker close the
    channel (redelivery, a reconnect); a tag never acked would stay unacked."""
    seen: list[str] = []

    async def jittery(message: Message) -> None:
        await anyio.sleep(random.random() / 50)
        seen.append(str(message.message_id))

    config = cfg(broker_url, queue, concurrency=20, prefetch=40)
    async with Consumer(config, jittery, metrics=metrics) as consumer:
        await consumer.wait_connected()
        for i in range(500):
            broker.publish(queue, b"{}", message_id=f"j{i}")
        await wait_until(lambda: consumer.statistics().outcomes["ack"] == 500)
        stats = consumer.statistics()
    assert sorted(seen) == sorted(f"j{i}" for i in range(500))  # each once: no redelivery
    assert stats.reconnects == 0
    assert broker.depth(queue) == 0


async def test_a_slow_handler_does_not_hold_back_the_acks_of_later_messages(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    """The first delivery hangs; the rest must still be acked (else the prefetch window of
    5 fills with finished-but-unacked messages and consumption stops)."""
    release = anyio.Event()
    done: list[str] = []

    async def handler(message: Message) -> None:
        if message.message_id == "slow":
            await release.wait()
        done.append(str(message.message_id))

    config = cfg(broker_url, queue, concurrency=5, prefetch=5, handler_timeout=60)
    async with Consumer(config, handler, metrics=metrics) as consumer:
        await consumer.wait_connected()
        broker.publish(queue, b"{}", message_id="slow")
        for i in range(50):
            broker.publish(queue, b"{}", message_id=f"fast{i}")
        await wait_until(lambda: consumer.statistics().outcomes["ack"] == 50)
        assert "slow" not in done
        release.set()
        await wait_until(lambda: consumer.statistics().outcomes["ack"] == 51)
    assert broker.depth(queue) == 0


async def test_a_handler_that_swallows_its_timeout_does_not_cut_off_the_next_one(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    attempts: dict[str, list[int]] = {}

    async def handler(message: Message) -> None:
        attempts.setdefault(str(message.message_id), []).append(message.attempt)
        if message.message_id == "stubborn":
            try:
                await anyio.sleep(5)
            except anyio.get_cancelled_exc_class():
                pass  # a handler bug: the timeout's cancellation swallowed
        else:
            await anyio.sleep(0.01)

    config = cfg(broker_url, queue, handler_timeout=0.2, concurrency=1)
    async with Consumer(config, handler, metrics=metrics) as consumer:
        await consumer.wait_connected()
        broker.publish(queue, b"{}", message_id="stubborn")
        broker.publish(queue, b"{}", message_id="next")
        await wait_until(lambda: consumer.statistics().outcomes["ack"] == 2)
        outcomes = consumer.statistics().outcomes
    assert attempts == {"stubborn": [1], "next": [1]}
    assert outcomes == {"ack": 2, "retry": 0, "dead_letter": 0, "rejected": 0}


async def test_retries_with_backoff_then_succeeds(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    attempts: list[tuple[int, float]] = []

    async def flaky(message: Message) -> None:
        attempts.append((message.attempt, anyio.current_time()))
        if message.attempt < 3:
            raise ConnectionError("provider down")

    async with Consumer(cfg(broker_url, queue), flaky, metrics=metrics) as consumer:
        await consumer.wait_connected()
        broker.publish(queue, b"{}", message_id="flaky-1")
        await wait_until(lambda: consumer.statistics().outcomes["ack"] == 1)
        outcomes = consumer.statistics().outcomes
    assert [a for a, _ in attempts] == [1, 2, 3]
    # delays 0.2 s then 0.4 s, through the delay queues (never shorter)
    assert attempts[1][1] - attempts[0][1] >= 0.2
    assert attempts[2][1] - attempts[1][1] >= 0.4
    assert outcomes["retry"] == 2
    assert broker.depth(queue) == 0


async def test_dead_letters_after_max_attempts_with_reason_headers(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    async def broken(message: Message) -> None:
        raise ValueError("template missing")

    config = cfg(broker_url, queue, max_attempts=3)
    async with Consumer(config, broken, metrics=metrics, name="dl") as consumer:
        await consumer.wait_connected()
        broker.publish(queue, b'{"x": 1}', message_id="doomed")
        await wait_until(lambda: consumer.statistics().outcomes["dead_letter"] == 1)
    got = broker.get(f"{queue}.dlq")
    assert got is not None
    props, body = got
    assert body == b'{"x": 1}' and props.message_id == "doomed"
    assert props.headers["x-warren-reason"] == "attempts_exhausted"
    assert props.headers["x-warren-error-type"] == "ValueError"
    assert props.headers["x-warren-error"] == "template missing"
    assert props.headers["x-warren-attempts"] == 3
    assert metric(metrics, "warren_deliveries_total", worker="dl", outcome="dead_letter") == 1


async def test_a_retry_that_costs_no_attempt_works_with_a_single_attempt(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    """max_attempts=1 has no counted retries, but a retry that is no attempt (a token
    outage's RetryLater(consumes_attempt=False)) still needs a delay queue: it crashed the
    consumer (IndexError) and the message was dead-lettered as unsettleable."""
    runs: list[int] = []

    async def later_once(message: Message) -> None:
        runs.append(message.attempt)
        if len(runs) == 1:
            raise RetryLater(0.1, consumes_attempt=False)

    config = cfg(broker_url, queue, max_attempts=1)
    async with Consumer(config, later_once, metrics=metrics) as consumer:
        await consumer.wait_connected()
        broker.publish(queue, b"{}", message_id="later-1")
        await wait_until(lambda: consumer.statistics().outcomes["ack"] == 1)
        outcomes = consumer.statistics().outcomes
    assert runs == [1, 1]  # the retry did not count
    assert (outcomes["retry"], outcomes["dead_letter"], outcomes["rejected"]) == (1, 0, 0)
    assert broker.depth(f"{queue}.dlq") == 0


async def test_poison_goes_straight_to_the_dlq_and_the_worker_goes_on(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    good: list[Any] = []

    async def handler(message: Message) -> None:
        payload = message.json()  # raises PoisonMessage for a body that is not JSON
        if "to" not in payload:
            raise PoisonMessage("missing field 'to'")
        good.append(payload)

    async with Consumer(cfg(broker_url, queue), handler, metrics=metrics) as consumer:
        await consumer.wait_connected()
        broker.publish(queue, b"\x00not json", message_id="p1")
        broker.publish(queue, b'{"title": "no recipient"}', message_id="p2")
        broker.publish(queue, b'{"to": "dev-1"}', message_id="ok")
        await wait_until(lambda: sum(consumer.statistics().outcomes.values()) == 3)
        assert consumer.statistics().outcomes == {
            "ack": 1,
            "retry": 0,
            "dead_letter": 2,
            "rejected": 0,
        }
    assert good == [{"to": "dev-1"}]
    reasons = {}
    while (got := broker.get(f"{queue}.dlq")) is not None:
        reasons[got[0].message_id] = (got[0].headers["x-warren-reason"],
                                      got[0].headers["x-warren-error"])  # fmt: skip
    assert reasons["p1"][0] == "poison" and "not JSON" in reasons["p1"][1]
    assert reasons["p2"] == ("poison", "missing field 'to'")


async def test_a_hanging_handler_is_cut_off(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    async def hangs(message: Message) -> None:
        await anyio.sleep_forever()

    config = cfg(broker_url, queue, handler_timeout=0.3, max_attempts=1)
    async with Consumer(config, hangs, metrics=metrics) as consumer:
        await consumer.wait_connected()
        broker.publish(queue, b"{}", message_id="slow")
        await wait_until(lambda: consumer.statistics().outcomes["dead_letter"] == 1, within=10)
    got = broker.get(f"{queue}.dlq")
    assert got is not None
    assert got[0].headers["x-warren-error-type"] == "TimeoutError"


async def test_resumes_after_the_broker_cancels_the_consumer(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    handled: list[str] = []

    async def handler(message: Message) -> None:
        handled.append(str(message.message_id))

    async with Consumer(cfg(broker_url, queue), handler, metrics=metrics) as consumer:
        await consumer.wait_connected()
        broker.publish(queue, b"{}", message_id="before")
        await wait_until(lambda: handled == ["before"])
        broker.delete_queue(queue)  # basic.cancel from the broker
        await wait_until(lambda: consumer.statistics().reconnects >= 1)
        broker.publish(queue, b"{}", message_id="after")  # the queue was re-declared
        await wait_until(lambda: handled == ["before", "after"])
    assert "consumer_cancelled" in (consumer.statistics().last_error or "")


@pytest.mark.parametrize(
    "anyio_backend", ["asyncio", pytest.param("trio", marks=pytest.mark.scenario)]
)  # trio in make scenarios: slow
@pytest.mark.parametrize("fault", ["blackhole", "close_connection"])
async def test_rides_out_a_lost_connection_and_handles_every_message(
    rabbit_proxy: ProxiedBroker, broker: Broker, queue: str, metrics: Metrics, fault: str
) -> None:
    """The link dies mid-stream (silently, or closed by the broker): the consumer notices,
    reconnects, re-declares and resumes. Every message is handled; a message is handled twice
    only when the broker redelivered it (its ack was lost with the connection)."""
    n = 400
    seen: list[tuple[str, bool]] = []
    halfway, release = anyio.Event(), anyio.Event()

    async def handler(message: Message) -> None:
        seen.append((str(message.message_id), message.redelivered))
        if len(seen) >= n // 3:
            halfway.set()
            await release.wait()  # handlers are mid-flight when the link dies
        await anyio.sleep(0.005)

    config = cfg(rabbit_proxy.url, queue, heartbeat=1, concurrency=10, prefetch=20)
    worker = f"lost-{fault}-{anyio.get_current_task().id}"
    async with Consumer(config, handler, metrics=metrics, name=worker) as consumer:
        await consumer.wait_connected()
        for i in range(n):
            broker.publish(queue, b"{}", message_id=f"m{i}")
        await halfway.wait()
        if fault == "blackhole":
            async with partition(rabbit_proxy.proxy):
                await wait_until(lambda: not consumer.statistics().connected, within=10)
        else:
            pids = await anyio.to_thread.run_sync(warren_connection_pids, worker)
            assert len(pids) == 1
            await anyio.to_thread.run_sync(rabbitmqctl, "close_connection", pids[0], "test")
        await wait_until(lambda: consumer.statistics().reconnects >= 1, within=20)
        release.set()  # their acks belong to the dead connection: the broker redelivers
        await wait_until(lambda: {m for m, _ in seen} == {f"m{i}" for i in range(n)}, within=30)
        await wait_until(lambda: broker.depth(queue) == 0, within=10)
    counts = Counter(m for m, _ in seen)
    twice = [m for m, c in counts.items() if c > 1]
    redelivered = {m for m, r in seen if r}
    assert twice, "the messages in flight when the link died were redelivered"
    assert set(twice) <= redelivered, "handled twice without a redelivery"
    assert consumer.statistics().outcomes["ack"] >= n


async def test_shutdown_acks_what_finished_and_leaves_the_rest(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    release = anyio.Event()
    finished: list[str] = []

    async def handler(message: Message) -> None:
        if message.message_id != "quick":
            await release.wait()  # never released: still running at shutdown
        finished.append(str(message.message_id))

    config = cfg(broker_url, queue, shutdown_timeout=0.5, concurrency=5)
    async with Consumer(config, handler, metrics=metrics) as consumer:
        await consumer.wait_connected()
        broker.publish(queue, b"{}", message_id="quick")
        for i in range(3):
            broker.publish(queue, b"{}", message_id=f"stuck-{i}")
        await wait_until(lambda: consumer.statistics().in_flight == 3 and finished == ["quick"])
    stats = consumer.statistics()
    assert stats.outcomes["ack"] == 1
    # the three unfinished deliveries were not acked: the broker has them back
    await wait_until(lambda: broker.depth(queue) == 3)


def test_deduplicator_remembers_recent_ids() -> None:
    dedupe = Deduplicator(size=2)
    assert not dedupe.seen("a")
    assert dedupe.seen("a")
    assert not dedupe.seen("b")
    assert not dedupe.seen("c")  # "a" falls out
    assert not dedupe.seen("a")
    assert not dedupe.seen(None)
    assert dedupe.duplicates == 1


async def test_deliveries_racing_their_connected_event_are_handled(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    """A full queue: deliveries arrive the moment the consumer starts, in the same tick as the
    Connected event (a different stream). None may be taken for stale: it would never be
    acked, and hold a prefetch slot until the connection closes."""
    broker.declare_queue(queue, durable=True)  # as the consumer declares it

    async def handler(_message: Message) -> None:
        pass

    config = cfg(broker_url, queue, prefetch=20, concurrency=20)
    for round_ in range(6):  # the race is random: give it several chances to show
        for i in range(60):
            broker.publish(queue, b"{}", message_id=f"r{round_}-{i}")
        async with Consumer(config, handler, metrics=metrics) as consumer:

            def all_acked(c: Consumer = consumer) -> bool:
                return c.statistics().outcomes["ack"] == 60

            await wait_until(all_acked, within=10)


async def test_a_dead_letter_queue_deleted_under_the_worker_is_declared_again(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics
) -> None:
    """The dead-letter queue is gone (deleted under the running worker): the dead letter
    comes back unroutable, the worker declares its topology again and the poison message
    lands in the new dead-letter queue; later messages still flow. (Before, it was rejected
    and, with no dead-letter exchange on the queue, gone.)"""

    async def handler(message: Message) -> None:
        if message.body == b"poison":
            raise PoisonMessage("test")

    async with Consumer(cfg(broker_url, queue), handler, metrics=metrics, name="c") as consumer:
        await consumer.wait_connected()
        # the re-publisher connects on its own: deleted before it declared, there is
        # nothing to heal (its first declaration makes the queue)
        await wait_until(lambda: metric(metrics, "warren_connection_up", worker="c.requeue") == 1)
        broker.delete_queue(f"{queue}.dlq")
        broker.publish(queue, b"poison", message_id="p1")
        await wait_until(lambda: consumer.statistics().outcomes["dead_letter"] == 1)
        for i in range(5):
            broker.publish(queue, b"{}", message_id=f"ok{i}")
        await wait_until(lambda: consumer.statistics().outcomes["ack"] == 5)
        assert consumer.statistics().failed is None
    assert broker.depth(queue) == 0
    assert broker.depth(f"{queue}.dlq") == 1
    assert consumer.statistics().outcomes["rejected"] == 0
    assert metric(metrics, "warren_topology_redeclared_total", worker="c.requeue") >= 1


async def test_large_messages_arrive_whole_in_a_few_socket_reads(
    broker_url: str, broker: Broker, queue: str, metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """pika reads 4 KB per recv(): a 120 KB message took 30 trips through its transport and
    Warren's reader, which made the consumer 0.65x raw pika at 64 KB. Warren's connections
    read 64 KB at a time."""
    from warren._amqp.receive import ChannelReader

    reads = 0
    feed = ChannelReader.feed

    def counted(self: ChannelReader, data: bytes) -> None:
        nonlocal reads
        reads += 1
        feed(self, data)

    monkeypatch.setattr(ChannelReader, "feed", counted)
    bodies = {f"m{i}": random.randbytes(120_000) for i in range(40)}
    got: dict[str, bytes] = {}

    async def handler(message: Message) -> None:
        got[str(message.message_id)] = message.body

    async with Consumer(cfg(broker_url, queue, prefetch=10), handler, metrics=metrics,
                        name="big") as consumer:  # fmt: skip
        await consumer.wait_connected()
        for message_id, body in bodies.items():
            broker.publish(queue, body, message_id=message_id)
        await wait_until(lambda: consumer.statistics().outcomes["ack"] == len(bodies))
    assert got == bodies
    assert reads <= 6 * len(bodies), f"{reads} reads for {len(bodies)} messages of 120 KB"
