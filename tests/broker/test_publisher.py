"""Publisher against the real broker: counts end to end, the original reconnect bug,
overflow policies, giving up, refused credentials, bad input."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.support.broker import Broker, rabbitmqctl, warren_connection_pids
from tests.support.helpers import config, free_port, metric, wait_until
from warren import (
    AccessRefused,
    BufferFull,
    ConfigError,
    ConnectionConfig,
    ConnectionGaveUp,
    InvalidJob,
    JobReturned,
    Metrics,
    Publisher,
    PublisherClosed,
    PublisherConfig,
    Queue,
    Topology,
)
from warren._ops.health import check
from warren.testing import partition

if TYPE_CHECKING:
    from warren.testing.pytest_plugin import ProxiedBroker

pytestmark = pytest.mark.broker


@pytest.mark.timeout(90)
async def test_ten_thousand_jobs_arrive_once_each(
    broker_url: str, broker: Broker, queue_name: str, metrics: Metrics
) -> None:
    n = 10_000
    async with Publisher(config(broker_url), metrics=metrics, name="bulk") as pub:
        ids = {pub.submit({"seq": i}, routing_key=queue_name) for i in range(n)}
        with anyio.fail_after(60):
            await pub.wait_flushed()
        stats = pub.statistics()
    assert stats.confirmed == n
    assert stats.buffer_depth == 0
    arrivals = await anyio.to_thread.run_sync(lambda: broker.drain(queue_name, expect=n))
    assert set(arrivals.ids) == ids
    assert arrivals.duplicates == 0
    w = {"worker": "bulk"}
    assert metric(metrics, "warren_jobs_submitted_total", **w) == n
    assert metric(metrics, "warren_jobs_confirmed_total", **w) == n
    assert metric(metrics, "warren_buffer_depth", **w) == 0
    assert metric(metrics, "warren_publish_confirm_seconds_count", **w) == n


async def test_publish_waits_for_the_broker_ack(
    broker_url: str, broker: Broker, queue_name: str, metrics: Metrics
) -> None:
    async with Publisher(config(broker_url), metrics=metrics, name="ack") as pub:
        with anyio.fail_after(20):
            mid = await pub.publish(b"payload", routing_key=queue_name, message_id="m-1")
        assert mid == "m-1"
        assert pub.statistics().confirmed == 1
    assert broker.depth(queue_name) == 1


async def test_unroutable_job_is_returned_not_lost(broker_url: str, metrics: Metrics) -> None:
    async with Publisher(config(broker_url), metrics=metrics, name="ret") as pub:
        with anyio.fail_after(20), pytest.raises(JobReturned, match="NO_ROUTE") as info:
            await pub.publish(b"x", routing_key="warren.no.such.queue")
        assert info.value.reply_code == 312
        pub.submit(b"y", routing_key="warren.no.such.queue")
        await pub.wait_flushed()
        stats = pub.statistics()
    assert stats.returned == 2
    assert stats.confirmed == 0
    assert stats.buffer_depth == 0
    assert metric(metrics, "warren_jobs_returned_total", worker="ret") == 2


async def test_topology_is_declared_on_connect(
    broker_url: str, broker: Broker, metrics: Metrics
) -> None:
    name = "warren.test.topology"
    broker.delete_queue(name)
    topo = Topology(queues=(Queue(name=name, durable=False),))
    async with Publisher(config(broker_url), metrics=metrics, topology=topo) as pub:
        await pub.publish({"hi": 1}, routing_key=name)
    assert broker.depth(name) == 1
    broker.delete_queue(name)


@pytest.mark.timeout(90)
async def test_broker_side_close_with_error_payload_reconnects_and_flushes(
    broker_url: str, broker: Broker, queue_name: str, metrics: Metrics
) -> None:
    """`rabbitmqctl close_connection`: Connection.Close 320 CONNECTION_FORCED, an error payload."""
    worker = f"forced-{anyio.get_current_task().id}"
    async with Publisher(config(broker_url), metrics=metrics, name=worker) as pub:
        await pub.wait_connected()
        for i in range(500):
            pub.submit({"seq": i}, routing_key=queue_name)
        pids = await anyio.to_thread.run_sync(warren_connection_pids, worker)
        assert len(pids) == 1
        await anyio.to_thread.run_sync(rabbitmqctl, "close_connection", pids[0], "test says go")
        await wait_until(lambda: pub.statistics().reconnects >= 1, within=30)
        for i in range(500, 1000):
            pub.submit({"seq": i}, routing_key=queue_name)
        await pub.wait_flushed()
        stats = pub.statistics()
    assert stats.confirmed == 1000
    assert stats.buffer_depth == 0
    assert "320" in (stats.last_error or "")
    arrivals = await anyio.to_thread.run_sync(lambda: broker.drain(queue_name, expect=1000))
    assert arrivals.distinct == 1000
    assert metric(metrics, "warren_reconnects_total", worker=worker) >= 1


@pytest.mark.timeout(90)
async def test_killed_socket_without_close_reconnects_and_flushes(
    rabbit_proxy: ProxiedBroker,
    broker: Broker,
    queue_name: str,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The socket dies with RST and no close handshake: no error payload at all."""
    proxy = rabbit_proxy.proxy
    async with Publisher(config(rabbit_proxy.url), metrics=metrics, name="rst") as pub:
        await pub.wait_connected()
        sent = 0
        for round_ in range(3):
            for _ in range(300):
                pub.submit({"seq": sent}, routing_key=queue_name)
                sent += 1
            await proxy.aio.add_toxic(proxy.name, "reset_peer", name="rst", timeout=0)
            await wait_until(lambda: not pub.statistics().connected)
            await proxy.aio.remove_toxic(proxy.name, "rst")
            await wait_until(lambda r=round_: pub.statistics().reconnects >= r + 1)
        await pub.wait_flushed()
        stats = pub.statistics()
    assert stats.confirmed + stats.returned == sent
    assert stats.buffer_depth == 0
    arrivals = await anyio.to_thread.run_sync(lambda: broker.drain(queue_name, expect=sent))
    assert arrivals.distinct == sent  # nothing lost; duplicates only from the in-flight window
    # the loss itself (last_error may be a later refused reconnect while the RST toxic stays)
    assert caplog.text.count("kind=stream_lost") >= 3


async def test_intentional_close_does_not_reconnect(broker_url: str, metrics: Metrics) -> None:
    worker = f"quiet-{anyio.get_current_task().id}"
    pub = Publisher(config(broker_url), metrics=metrics, name=worker)
    async with pub:
        await pub.wait_connected()
    stats = pub.statistics()
    assert not stats.connected
    assert stats.reconnects == 0
    assert await anyio.to_thread.run_sync(warren_connection_pids, worker) == []
    with pytest.raises(PublisherClosed):
        pub.submit(b"late", routing_key="x")


async def test_buffers_while_unreachable_then_flushes_on_connect(
    rabbit_proxy: ProxiedBroker,
    broker: Broker,
    queue_name: str,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker is away at start-up, jobs wait, and flush once it is back."""
    client, name = rabbit_proxy.proxy.client, rabbit_proxy.proxy.name
    upstream = client.get_proxy(name).upstream
    client.update_proxy(name, upstream=f"127.0.0.1:{free_port()}")  # nothing listens there
    async with Publisher(config(rabbit_proxy.url), metrics=metrics, name="late") as pub:
        for i in range(200):
            pub.submit({"seq": i}, routing_key=queue_name)
        await wait_until(lambda: caplog.text.count("connection.failed worker=late") >= 2)
        stats = pub.statistics()  # it keeps trying, and the jobs wait
        assert stats.buffer_depth == 200
        assert not stats.connected
        assert stats.last_error
        assert metric(metrics, "warren_buffer_depth", worker="late") == 200
        assert metric(metrics, "warren_connection_up", worker="late") == 0
        await anyio.to_thread.run_sync(lambda: client.update_proxy(name, upstream=upstream))
        await pub.wait_flushed()
        assert pub.statistics().confirmed == 200
    arrivals = await anyio.to_thread.run_sync(lambda: broker.drain(queue_name, expect=200))
    assert arrivals.distinct == 200


@pytest.mark.parametrize("policy", ["drop-newest", "drop-oldest", "block"])
async def test_overflow_policies_while_unreachable(
    metrics: Metrics, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    cfg = config(url, buffer_size=10, overflow=policy, flush_timeout=0)
    refused = 0
    capacities: set[int] = set()
    async with Publisher(cfg, metrics=metrics, name="full") as pub:
        ids = [pub.submit({"i": i}, routing_key="q") for i in range(10)]
        for i in range(10, 15):
            try:
                ids.append(pub.submit({"i": i}, routing_key="q"))
            except BufferFull as exc:
                capacities.add(exc.capacity)
                refused += 1
        assert pub.statistics().buffer_depth == 10
        if policy == "block":
            with anyio.move_on_after(0.1) as scope:
                await pub.enqueue({"i": 99}, routing_key="q")
            assert scope.cancelled_caught, "enqueue must wait for room under block"
    stats = pub.statistics()
    assert capacities <= {10}
    full_logs = [r for r in caplog.records if "buffer.full" in r.getMessage()]
    assert len(full_logs) == 1, "one warning per episode, not one per refused job"
    if policy == "drop-oldest":
        assert refused == 0
        assert stats.dropped["evicted"] == 5
        assert metric(metrics, "warren_jobs_dropped_total", worker="full", reason="evicted") == 5
    else:
        assert refused == 5
        assert stats.dropped["refused"] == 5
        assert metric(metrics, "warren_jobs_dropped_total", worker="full", reason="refused") == 5
    # flush_timeout=0 and no broker: what was buffered is counted, not silently gone
    assert stats.dropped["shutdown"] == 10
    assert stats.submitted == stats.confirmed + stats.dropped["shutdown"] + stats.dropped["evicted"]


async def test_gives_up_loudly_after_max_attempts(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    cfg = config(url, reconnect_max_attempts=3)

    async def doomed() -> None:
        async with Publisher(cfg, metrics=metrics, name="doomed") as pub:
            for i in range(7):
                pub.submit({"i": i}, routing_key="q")
            await anyio.sleep_forever()

    with anyio.fail_after(20), pytest.raises(ConnectionGaveUp) as info:
        await doomed()
    assert info.value.attempts == 3
    assert info.value.jobs_lost == 7
    assert metric(metrics, "warren_jobs_dropped_total", worker="doomed", reason="gave_up") == 7
    assert any(
        "gave_up" in r.getMessage() and "jobs_lost=7" in r.getMessage() for r in caplog.records
    )


async def test_wrong_credentials_are_reported_not_retried_quietly(
    broker_url: str, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = "amqp://guest:s3cr3t-wrong@127.0.0.1:5672/%2F"
    with anyio.fail_after(20), pytest.raises(AccessRefused) as info:
        async with Publisher(config(url), metrics=metrics, name="badpw"):
            await anyio.sleep_forever()
    assert "s3cr3t-wrong" not in str(info.value)
    assert "ACCESS_REFUSED" in str(info.value) or "403" in str(info.value)
    assert "s3cr3t-wrong" not in caplog.text, "a password reached the logs"


async def test_bad_input_is_refused_at_submit_and_poisons_nothing(
    broker_url: str, queue_name: str, metrics: Metrics
) -> None:
    async with Publisher(config(broker_url, max_job_bytes=1000), metrics=metrics) as pub:
        with pytest.raises(InvalidJob, match="JSON"):
            pub.submit({"when": object()}, routing_key=queue_name)
        with pytest.raises(InvalidJob, match="max_job_bytes=1000"):
            pub.submit(b"x" * 1001, routing_key=queue_name)
        with pytest.raises(InvalidJob, match="routing_key"):
            pub.submit(b"x", routing_key="r" * 300)
        with pytest.raises(InvalidJob, match="routing_key"):
            pub.submit(b"x", routing_key=7)  # type: ignore[arg-type]
        with pytest.raises(InvalidJob, match="message_id is 256 bytes"):
            pub.submit(b"x", routing_key=queue_name, message_id="m" * 256)
        with pytest.raises(InvalidJob, match="headers"):
            pub.submit(b"x", routing_key=queue_name, headers={"tags": {1, 2}})
        with pytest.raises(InvalidJob, match="exchange"):
            pub.submit(b"x", routing_key=queue_name, exchange=b"ex")  # type: ignore[arg-type]
        assert pub.statistics().buffer_depth == 0
        await pub.publish(b"fine", routing_key=queue_name)
    assert pub.statistics().confirmed == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("load", [pytest.param("idle", marks=pytest.mark.scenario), "publishing"])
async def test_silent_blackhole_is_noticed_within_the_heartbeat_and_a_second(
    rabbit_proxy: ProxiedBroker, broker: Broker, queue_name: str, metrics: Metrics, load: str
) -> None:
    """No FIN, no RST, bytes just vanish (`docker network disconnect`): the watchdog must
    call the link dead within heartbeat + 1 s (the broker sends a frame at least once a
    heartbeat), idle or with publishes in flight, not pika's heartbeat + 5 s or TCP's
    minutes."""
    heartbeat = 2
    cfg = config(rabbit_proxy.url, heartbeat=heartbeat, confirm_timeout=60)
    async with Publisher(cfg, metrics=metrics, name="silent") as pub:
        await pub.wait_connected()
        await pub.publish({"seq": 0}, routing_key=queue_name)
        jobs = 100 if load == "publishing" else 0
        async with partition(rabbit_proxy.proxy):
            cut_at = anyio.current_time()
            for i in range(1, jobs + 1):
                pub.submit({"seq": i}, routing_key=queue_name)
            await wait_until(lambda: not pub.statistics().connected, within=2 * heartbeat + 5)
            noticed = anyio.current_time() - cut_at
            assert noticed <= heartbeat + 1, f"dead link noticed after {noticed:.1f}s"
            assert "dead_link" in (pub.statistics().last_error or "")
            assert pub.statistics().buffer_depth == jobs
        await wait_until(lambda: pub.statistics().connected)  # healed
        await pub.wait_flushed()
        assert pub.statistics().reconnects == 1
    arrivals = await anyio.to_thread.run_sync(lambda: broker.drain(queue_name, expect=1 + jobs))
    assert arrivals.distinct == 1 + jobs


@pytest.mark.timeout(60)
async def test_unconfirmed_publish_past_confirm_timeout_drops_the_connection(
    rabbit_proxy: ProxiedBroker, broker: Broker, queue_name: str, metrics: Metrics
) -> None:
    """Bytes still arrive (broker heartbeats) but our publishes vanish on the way: only the
    confirm timeout can tell. It must reconnect and re-send with the same message_ids."""
    proxy = rabbit_proxy.proxy
    cfg = config(rabbit_proxy.url, heartbeat=6, confirm_timeout=1.0)
    async with Publisher(cfg, metrics=metrics, name="noconfirm") as pub:
        await pub.wait_connected()
        await proxy.aio.add_toxic(proxy.name, "timeout", name="up", stream="upstream", timeout=0)
        ids = {pub.submit({"seq": i}, routing_key=queue_name) for i in range(50)}
        await wait_until(lambda: "confirm_timeout" in (pub.statistics().last_error or ""),
                         within=6)  # fmt: skip
        await proxy.aio.remove_toxic(proxy.name, "up")
        await pub.wait_flushed()
    arrivals = await anyio.to_thread.run_sync(lambda: broker.drain(queue_name, expect=50))
    assert set(arrivals.ids) == ids


@pytest.mark.timeout(60)
async def test_nacked_jobs_are_sent_again_with_backoff_until_accepted(
    broker_url: str, broker: Broker, metrics: Metrics
) -> None:
    """A full queue with overflow=reject-publish makes the broker nack. Nacked jobs are kept,
    re-sent after a pause, and land once a consumer makes room: none lost, none doubled."""
    name = f"warren.test.nack.{anyio.get_current_task().id}"
    broker.delete_queue(name)
    broker.declare_queue(name, arguments={"x-max-length": 10, "x-overflow": "reject-publish"})
    try:
        async with Publisher(config(broker_url), metrics=metrics, name="nack") as pub:
            ids = {pub.submit({"seq": i}, routing_key=name) for i in range(25)}
            await wait_until(lambda: pub.statistics().nacked >= 15)
            assert pub.statistics().confirmed == 10
            assert pub.statistics().buffer_depth == 15
            # make room, as a consumer would; what was nacked goes through
            first = await anyio.to_thread.run_sync(lambda: broker.drain(name, expect=10))
            await wait_until(lambda: pub.statistics().confirmed >= 20)
            second = await anyio.to_thread.run_sync(lambda: broker.drain(name, expect=10))
            await wait_until(lambda: pub.statistics().confirmed == 25)
            third = await anyio.to_thread.run_sync(lambda: broker.drain(name, expect=5))
            nacks = pub.statistics().nacked
        got = first.ids + second.ids + third.ids
        assert set(got) == ids
        assert max(got.values()) == 1
        # backoff: a few rounds of re-sending, not thousands
        assert 15 <= nacks <= 15 * 20, nacks
        assert metric(metrics, "warren_jobs_nacked_total", worker="nack") == nacks
    finally:
        broker.delete_queue(name)


@pytest.mark.scenario
@pytest.mark.timeout(60)
async def test_a_channel_that_only_nacks_is_replaced(
    broker_url: str, broker: Broker, metrics: Metrics
) -> None:
    """A channel that answers nothing but nacks for 5 s is given up for a fresh connection.
    Seen on a cluster: a RabbitMQ 3.10 channel that first published to a quorum queue while
    its leader was failing over nacked every publish for as long as it lived (a new
    channel on the same node was fine), and the publisher re-sent into it forever. Here a
    full reject-publish queue nacks in the same way; the jobs wait, then land once."""
    name = f"warren.test.nackloop.{anyio.get_current_task().id}"
    broker.delete_queue(name)
    broker.declare_queue(name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    try:
        async with Publisher(config(broker_url), metrics=metrics, name="nackloop") as pub:
            ids = {pub.submit({"seq": i}, routing_key=name) for i in range(5)}
            await wait_until(lambda: pub.statistics().reconnects >= 1, within=20)
            assert "nacked" in (pub.statistics().last_error or "")
            assert pub.statistics().buffer_depth == 4  # nothing given up on
            got = await anyio.to_thread.run_sync(lambda: broker.drain(name, expect=1))
            while len(got.ids) < 5:
                more = await anyio.to_thread.run_sync(lambda: broker.drain(name, expect=1))
                got.ids.update(more.ids)
            await pub.wait_flushed()
        assert set(got.ids) == ids and max(got.ids.values()) == 1
    finally:
        broker.delete_queue(name)


async def test_url_list_rotates_to_a_live_node(
    broker_url: str, broker: Broker, queue_name: str, metrics: Metrics
) -> None:
    """Cluster URLs: a dead node first, a live one second; reconnects rotate to the live one."""
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    cfg = PublisherConfig(
        connection=ConnectionConfig(urls=[dead, broker_url], backoff_base=0.05, backoff_cap=0.2)
    )
    async with Publisher(cfg, metrics=metrics, name="cluster") as pub:
        with anyio.fail_after(20):
            await pub.publish({"hi": 1}, routing_key=queue_name)
        assert pub.statistics().last_error is not None  # the dead node was tried and reported
        # which node it is on: statistics, health, and a bounded label
        assert pub.statistics().node == "127.0.0.1:5672"
        assert check(metrics).workers["cluster"]["node"] == "127.0.0.1:5672"
        assert metric(metrics, "warren_connected_node", worker="cluster",
                      node="127.0.0.1:5672") == 1  # fmt: skip
    assert broker.depth(queue_name) == 1
    assert pub.statistics().node is None  # closed: on no node


@pytest.mark.parametrize(
    "anyio_backend", ["asyncio", pytest.param("trio", marks=pytest.mark.scenario)]
)  # trio in make scenarios: slow
async def test_memory_stays_bounded_when_the_partition_outlasts_the_buffer(
    metrics: Metrics,
) -> None:
    """drop-oldest under a long outage: 20x the buffer submitted, memory stays at ~1 buffer."""
    import gc
    import tracemalloc

    cfg = config(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", buffer_size=1000,
                 overflow="drop-oldest", flush_timeout=0)  # fmt: skip
    async with Publisher(cfg, metrics=metrics, name="bounded") as pub:
        tracemalloc.start()
        for i in range(10_000):  # fills the buffer, then evicts: the steady state
            pub.submit(b"x" * 256 + i.to_bytes(4, "big"), routing_key="q")
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            pub.submit(b"y" * 256 + i.to_bytes(4, "big"), routing_key="q")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        assert pub.statistics().buffer_depth == 1000
    stats = pub.statistics()
    assert stats.dropped["evicted"] == 19_000
    assert stats.dropped["shutdown"] == 1000
    assert grown < 20_000, f"memory grew by {grown} bytes while the buffer stayed full"


def test_only_pikas_own_exceptions_count_as_connection_failures() -> None:
    """pika sometimes raises out of its ioloop; that is a lost connection. Our own bugs
    must not be mistaken for one (they would be retried forever)."""
    import pika

    from warren._amqp.thread import _raised_inside_pika

    with pytest.raises(ValueError, match="heartbeat") as from_pika:
        pika.URLParameters("amqp://h/?heartbeat=notanumber")
    assert _raised_inside_pika(from_pika.value)
    with pytest.raises(ZeroDivisionError) as ours:
        _ = 1 / 0
    assert not _raised_inside_pika(ours.value)


async def test_a_tight_enqueue_loop_still_honours_cancellation(metrics: Metrics) -> None:
    """enqueue() yields only when it must wait, but it checks for cancellation at least every
    64 calls: a producer loop that never awaits anything else can still be cancelled."""
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    cfg = config(dead, buffer_size=100_000, flush_timeout=0)
    async with Publisher(cfg, metrics=metrics, name="tight") as pub:
        calls_after_cancel = 0
        with anyio.CancelScope() as scope:
            for i in range(10_000):
                if i == 10:
                    scope.cancel()
                if scope.cancel_called:
                    calls_after_cancel += 1
                await pub.enqueue(b"x", routing_key="q")
    assert scope.cancelled_caught
    assert calls_after_cancel <= 64


async def test_a_channel_level_access_refused_is_final(broker_url: str, metrics: Metrics) -> None:
    """Declaring an ``amq.*`` queue is refused with a channel-level 403: as final as a
    refused login (it used to be retried forever)."""
    topology = Topology(queues=(Queue(name="amq.warren-not-allowed"),))
    with anyio.fail_after(20), pytest.raises(AccessRefused, match="channel refused: 403"):
        async with Publisher(config(broker_url), metrics=metrics, topology=topology) as pub:
            await pub.wait_connected()  # never: the declare is refused
    assert "refused" in str(pub.statistics().failed)


async def test_returns_are_matched_to_their_own_job_when_ids_repeat(
    broker_url: str, broker: Broker, metrics: Metrics
) -> None:
    """Two jobs with the same caller-chosen id, one routable and one not: each gets its own
    outcome (returns used to be matched by message id, so they could swap). The routable
    one goes to a durable queue: its ack waits for the disk, so it arrives after the other
    one's return, in one ``multiple`` ack with it."""
    queue_name = f"warren.test.returns.{uuid.uuid4().hex[:8]}"
    topology = Topology(queues=(Queue(name=queue_name, durable=True),))
    pub = Publisher(config(broker_url), metrics=metrics, topology=topology)
    async with pub:
        await pub.wait_connected()
        for round_no in range(20):
            mid = f"same-{round_no}"
            results: dict[str, str] = {}

            async def send(key: str, routing_key: str, mid: str = mid,
                           results: dict[str, str] = results) -> None:  # fmt: skip
                try:
                    await pub.publish({"k": key}, routing_key=routing_key, message_id=mid)
                    results[key] = "confirmed"
                except JobReturned:
                    results[key] = "returned"

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "routable", queue_name)
                tg.start_soon(send, "unroutable", "warren.test.no-such-queue")
            assert results == {"routable": "confirmed", "unroutable": "returned"}, round_no
    broker.delete_queue(queue_name)


async def test_the_buffer_is_bounded_in_bytes_too(metrics: Metrics) -> None:
    """Large jobs while the broker is away: the byte bound binds long before the job count
    (10,000 jobs of 100 KB would be a gigabyte)."""
    refused = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    config = PublisherConfig(
        connection=ConnectionConfig(urls=refused),
        buffer_size=10_000,
        overflow="drop-newest",
        buffer_max_bytes=1_000_000,
        flush_timeout=0.1,
    )
    payload = b"x" * 100_000
    async with Publisher(config, metrics=metrics, name="big") as pub:
        accepted, refusals = 0, []
        for _ in range(50):
            try:
                pub.submit(payload, routing_key="q")
                accepted += 1
            except BufferFull as exc:
                refusals.append(str(exc))
        assert all("1,000,000 bytes" in why for why in refusals)
        stats = pub.statistics()
        assert accepted == 9  # 9 x (100,000 + 512) fit in 1,000,000
        assert stats.buffer_bytes == 9 * 100_512 <= stats.buffer_max_bytes
        assert stats.dropped["refused"] == 41
        assert metric(metrics, "warren_buffer_bytes", worker="big") == 9 * 100_512
        assert metric(metrics, "warren_buffer_max_bytes", worker="big") == 1_000_000


def test_the_byte_bound_must_hold_one_job() -> None:
    with pytest.raises(ConfigError, match=r"^buffer_max_bytes: must hold at least one job"):
        PublisherConfig(max_job_bytes=1_000_000, buffer_max_bytes=100_000)


@pytest.mark.timeout(60)
async def test_a_window_of_large_jobs_is_written_in_bounded_pieces(
    broker_url: str,
    broker: Broker,
    queue_name: str,
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guards the large-payload fix: pika re-queues the unsent rest of a buffer after every
    partial send by copying it, so the publisher must never hand it one buffer for a whole
    window (300 x 64 KB here would be 19 MB copied again and again): every write stays
    within ``WRITE_CHUNK`` plus one message."""
    from pika.connection import Connection

    from warren._amqp.thread import WRITE_CHUNK

    sizes: list[int] = []
    original = Connection._output_marshaled_frames

    def spy(self: Connection, marshaled_frames: list[bytes]) -> None:
        sizes.extend(len(f) for f in marshaled_frames)
        original(self, marshaled_frames)

    monkeypatch.setattr(Connection, "_output_marshaled_frames", spy)
    body = b"x" * 65536
    async with Publisher(config(broker_url, max_in_flight=1000), metrics=metrics) as pub:
        await pub.wait_connected()
        for _ in range(300):
            pub.submit(body, routing_key=queue_name)
        await pub.wait_flushed()
        assert pub.statistics().confirmed == 300
    assert sum(sizes) >= 300 * 65536
    assert max(sizes) <= WRITE_CHUNK + 65536 + 1024, max(sizes)
    arrivals = await anyio.to_thread.run_sync(lambda: broker.drain_all(queue_name))
    assert len(arrivals.bodies) == 300 and all(b == body for b in arrivals.bodies)
