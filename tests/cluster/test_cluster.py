"""Failover on a real three-node cluster with quorum queues (``make cluster-test``).

Each scenario asserts the usual invariants: nothing accepted is lost, duplicates carry an
accepted message_id, the buffer ends at 0, the reconnect is counted, and the worker ends up on
a node that still serves. The cluster is the test kit's ``rabbit_cluster`` (loopback, a fault
proxy in front of each node); the kernel-level partition runs its own cluster, one network
namespace per node, on a bridge (root only; in CI it must run).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import pika
import pytest
from prometheus_client import CollectorRegistry

from tests.chaos.harness import DETECT_WITHIN, Chaos, connect, run_reconnecting, wait_for
from tests.chaos.netns import BridgedNamespaces, require_kernel_partitions
from warren import (
    ConnectionConfig,
    Consumer,
    ConsumerConfig,
    Message,
    Metrics,
    Publisher,
    PublisherConfig,
    Queue,
    Topology,
)
from warren.testing import NodePlacement, RabbitCluster, partition

if TYPE_CHECKING:
    from collections.abc import Iterator

    from warren import ConsumerStatistics
    from warren.testing.pytest_plugin import ProxiedCluster

pytestmark = [pytest.mark.broker, pytest.mark.cluster, pytest.mark.timeout(240)]

QUORUM = {"x-queue-type": "quorum"}
# connection settings: a fast heartbeat and backoff, so failovers resolve in seconds
FAST: dict[str, Any] = {
    "heartbeat": 1,
    "backoff_base": 0.1,
    "backoff_cap": 1.0,
    "connect_timeout": 2.0,
}


@pytest.fixture
def cluster(rabbit_cluster: ProxiedCluster) -> Iterator[ProxiedCluster]:
    """The session's cluster with every node up before and after (scenarios stop some)."""
    rabbit_cluster.cluster.start_stopped()
    yield rabbit_cluster
    rabbit_cluster.cluster.start_stopped()


@pytest.fixture
def queue(rabbit_cluster: ProxiedCluster) -> Iterator[str]:
    """A fresh queue name; it and the consumer's dead-letter and delay queues go after."""
    name = f"warren.cluster.{uuid.uuid4().hex[:10]}"
    yield name
    # every member up first: deleting a quorum queue waits ~30 s for a member that is down
    rabbit_cluster.cluster.start_stopped()
    _delete_queues_named(rabbit_cluster.cluster, name)


def _delete_queues_named(cluster: RabbitCluster, prefix: str) -> None:
    ask = cluster.running_nodes()[0]
    rows = json.loads(ask.ctl("list_queues", "name", "--formatter", "json"))
    names = [r["name"] for r in rows if r["name"] == prefix or r["name"].startswith(prefix + ".")]
    if names:
        _delete_queues(cluster.urls, *names)


def _delete_queues(urls: list[str], *names: str) -> None:
    conn = connect(urls)
    try:
        ch = conn.channel()
        for name in names:
            ch.queue_delete(name)
    finally:
        conn.close()


def _on(cluster: ProxiedCluster, node: str | None) -> int:
    assert node is not None, "not connected"
    return cluster.index_of(node)


def _serving(cluster: ProxiedCluster, index: int) -> bool:
    return cluster.cluster.nodes[index].running


# -- publisher ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_the_node_a_publisher_is_on_goes_away(
    cluster: ProxiedCluster, queue: str, how: str, anyio_backend: str
) -> None:
    """``rabbitmqctl stop`` (the node says goodbye) or ``kill -9`` (the sockets just close)
    of the publisher's node under steady load; the queue's leader was on it too."""
    if how == "kill" and anyio_backend != "asyncio":
        pytest.skip("kill -9 on one backend: the node's death, not the loop, is the subject")
    chaos = Chaos(cluster.urls, cluster.direct_urls, queue, queue_arguments=QUORUM, **FAST)
    async with chaos.running(rate=100) as pub:
        await pub.wait_connected()
        await anyio.sleep(0.5)
        before = _on(cluster, pub.statistics().node)
        node = cluster.cluster.nodes[before]
        async with chaos.fault():
            started = time.monotonic()
            await anyio.to_thread.run_sync(node.stop if how == "stop" else node.kill)
            took = time.monotonic() - started
            await wait_for(lambda: pub.statistics().connected, within=30)
        await anyio.sleep(0.5)
        after = _on(cluster, pub.statistics().node)
    # rabbitmqctl stop first starts an Erlang VM of its own (seconds on a busy machine)
    # before the node closes anything: the promise counts from the node gone, not the command
    chaos.outcome.check(detect=how == "kill")
    if how == "stop":
        noticed = chaos.outcome.detected_after
        assert noticed is not None and noticed <= took + DETECT_WITHIN, (noticed, took)
    assert after != before and _serving(cluster, after), (before, after)


async def test_a_blackholed_link_to_one_node_moves_the_publisher(
    cluster: ProxiedCluster, queue: str, anyio_backend: str
) -> None:
    """Only the link to the publisher's node goes silent (the node itself is fine): the
    heartbeat watchdog notices, and the next connect goes to another node instead of
    waiting for this one."""
    chaos = Chaos(cluster.urls, cluster.direct_urls, queue, queue_arguments=QUORUM, **FAST)
    async with chaos.running(rate=100) as pub:
        await pub.wait_connected()
        await anyio.sleep(0.5)
        before = _on(cluster, pub.statistics().node)
        async with chaos.fault(), partition(cluster.proxies[before]):
            # noticed and reconnected elsewhere (the gap between the two can be shorter
            # than a poll: the other nodes answer at once)
            await wait_for(lambda: pub.statistics().reconnects >= 1, within=DETECT_WITHIN + 1)
            await wait_for(lambda: pub.statistics().connected, within=15)
            after = _on(cluster, pub.statistics().node)
            await anyio.sleep(1.0)  # still cut off: the jobs flow through the other node
            assert pub.statistics().connected
    chaos.outcome.check()
    assert after != before, "reconnected to the blackholed node"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_rolling_restart_under_load(
    cluster: ProxiedCluster, queue: str, anyio_backend: str
) -> None:
    """Each node restarted in turn (stop, start, back in the cluster) while jobs flow."""
    chaos = Chaos(cluster.urls, cluster.direct_urls, queue, queue_arguments=QUORUM, **FAST)
    visited: set[int] = set()
    async with chaos.running(rate=100) as pub:
        await pub.wait_connected()
        async with chaos.fault():
            for node in cluster.cluster.nodes:
                await anyio.to_thread.run_sync(node.restart)
                await anyio.to_thread.run_sync(cluster.cluster.await_online)
                await wait_for(lambda: pub.statistics().connected, within=30)
                visited.add(_on(cluster, pub.statistics().node))
        await anyio.sleep(0.5)
    chaos.outcome.check(detect=False)
    assert len(visited) >= 2, f"the publisher never moved: {visited}"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_confirmed_means_replicated_to_a_majority(
    cluster: ProxiedCluster, queue: str, anyio_backend: str
) -> None:
    """Right after the confirms arrive, two of the three nodes are killed (no clean
    shutdown, nothing flushed on the way out) and started again: every confirmed job is
    in the queue."""
    topology = Topology(queues=(Queue(name=queue, arguments=QUORUM),))
    config = PublisherConfig(connection=ConnectionConfig(urls=cluster.direct_urls, **FAST))
    async with Publisher(config, metrics=Metrics(CollectorRegistry()), name="majority",
                         topology=topology) as pub:  # fmt: skip
        await pub.wait_connected()
        ids = [await pub.enqueue({"seq": i}, routing_key=queue) for i in range(2000)]
        await pub.wait_flushed()
        confirmed = pub.statistics().confirmed
        leader = cluster.cluster.leader_of(queue)
        others = [n for n in cluster.cluster.nodes if n is not leader]
        # the leader and one follower: the confirmed state must be on the third's disk
        # and the leader's log, neither of them asked to flush anything
        await anyio.to_thread.run_sync(leader.kill)
        await anyio.to_thread.run_sync(others[0].kill)
    assert confirmed == len(ids)
    await anyio.to_thread.run_sync(cluster.cluster.start_stopped)
    got = await anyio.to_thread.run_sync(_drain_ids, cluster.direct_urls, queue, len(ids))
    assert set(ids) <= set(got), f"{len(set(ids) - set(got))} confirmed jobs lost"


def _drain_ids(urls: list[str], queue: str, expect: int, within: float = 60) -> Counter[str]:
    got: Counter[str] = Counter()
    deadline = time.monotonic() + within
    while len(got) < expect and time.monotonic() < deadline:
        with contextlib.suppress(pika.exceptions.AMQPError):
            conn = connect(urls)
            try:
                ch = conn.channel()
                for method, props, _ in ch.consume(queue, inactivity_timeout=2):
                    if method is None:
                        break
                    got[str(props.message_id)] += 1
                    ch.basic_ack(method.delivery_tag)
                    if len(got) >= expect:
                        break
            finally:
                if conn.is_open:
                    conn.close()
    return got


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_publishers_keep_going_when_the_quorum_leader_moves(
    cluster: ProxiedCluster, queue: str, anyio_backend: str
) -> None:
    """The publisher's own node stays up (it knows no other); the queue's leader, on
    another node, is stopped under load. Confirms resume once a new leader is elected."""
    _declare_quorum(cluster, queue)  # the leader: node 0
    leader = cluster.cluster.leader_of(queue)
    chaos = Chaos([cluster.urls[1]], cluster.direct_urls[1:], queue, queue_arguments=QUORUM,
                  **FAST)  # fmt: skip
    async with chaos.running(rate=100) as pub:
        await pub.wait_connected()
        await anyio.sleep(0.5)
        async with chaos.fault():
            await anyio.to_thread.run_sync(leader.stop)
            confirmed = pub.statistics().confirmed
            await wait_for(lambda: pub.statistics().confirmed >= confirmed + 100, within=20)
    chaos.outcome.check(reconnect=False, detect=False)
    assert chaos.outcome.stats.reconnects == 0  # its channel lived through the election
    assert cluster.cluster.leader_of(queue) is not leader


def _declare_quorum(cluster: ProxiedCluster, queue: str) -> None:
    """Declare ``queue`` through node 0, which makes node 0 its leader."""
    conn = connect(cluster.direct_urls[:1])
    conn.channel().queue_declare(queue, durable=True, arguments=QUORUM)
    conn.close()
    assert cluster.cluster.leader_of(queue) is cluster.cluster.nodes[0]


# -- consumer ----------------------------------------------------------------------------


class _Producer:
    """Publishes numbered messages at a steady rate on its own connection (any node),
    confirm by confirm; a message not confirmed is sent again with the same id."""

    def __init__(self, urls: list[str], queue: str, rate: float = 100) -> None:
        self.urls, self.queue, self.interval = urls, queue, 1.0 / rate
        self.confirmed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        run_reconnecting(self.urls, self._stop, self._publish)

    def _publish(self, ch: Any) -> None:
        ch.confirm_delivery()
        while not self._stop.is_set():
            mid = f"c{len(self.confirmed)}"
            props = pika.BasicProperties(message_id=mid, delivery_mode=2)
            ch.basic_publish("", self.queue, mid.encode(), props, mandatory=True)
            self.confirmed.append(mid)
            time.sleep(self.interval)


def _consumer_config(urls: list[str], queue: str) -> ConsumerConfig:
    return ConsumerConfig(
        connection=ConnectionConfig(urls=urls, **FAST),
        queue=queue,
        queue_type="quorum",
        prefetch=50,
    )


async def _consume_through(
    cluster: ProxiedCluster, queue: str, fault: Any, urls: list[str] | None = None
) -> tuple[ConsumerStatistics, ConsumerStatistics]:
    """A Warren consumer on ``queue`` while a producer runs; ``fault(consumer)`` runs in
    the middle. Returns the consumer's statistics before the fault and at the end; asserts
    that deliveries went on after it and every confirmed message was handled."""
    handled: Counter[str] = Counter()

    async def handler(message: Message) -> None:
        handled[str(message.message_id)] += 1

    config = _consumer_config(urls or cluster.urls, queue)
    registry = CollectorRegistry()
    async with Consumer(config, handler, metrics=Metrics(registry), name="cluster") as c:
        await c.wait_connected()
        with _Producer(cluster.direct_urls, queue) as producer:
            await wait_for(lambda: len(handled) >= 50, within=20)
            before = c.statistics()
            await fault(c)
            seen = len(handled)
            await wait_for(lambda: len(handled) >= seen + 100, within=30)  # still going
        confirmed = set(producer.confirmed)
        await wait_for(lambda: confirmed <= set(handled), within=30)
        after = c.statistics()
    assert after.outcomes.get("failed", 0) == 0
    return before, after


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_the_node_a_consumer_is_on_goes_away(
    cluster: ProxiedCluster, queue: str, how: str, anyio_backend: str
) -> None:
    if how == "kill" and anyio_backend != "asyncio":
        pytest.skip("kill -9 on one backend: the node's death, not the loop, is the subject")
    moved: list[int] = []

    async def fault(c: Consumer) -> None:
        before = _on(cluster, c.statistics().node)
        node = cluster.cluster.nodes[before]
        await anyio.to_thread.run_sync(node.stop if how == "stop" else node.kill)
        await wait_for(lambda: c.statistics().connected and c.statistics().node is not None
                       and _on(cluster, c.statistics().node) != before, within=30)  # fmt: skip
        moved.append(_on(cluster, c.statistics().node))

    before, after = await _consume_through(cluster, queue, fault)
    assert after.reconnects >= before.reconnects + 1
    assert moved and _serving(cluster, moved[0])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_consumers_keep_going_when_the_quorum_leader_moves(
    cluster: ProxiedCluster, queue: str, anyio_backend: str
) -> None:
    """The consumer's own node stays up; the queue's leader (elsewhere) is stopped. A new
    leader is elected among the two left and deliveries go on."""
    _declare_quorum(cluster, queue)
    leader = cluster.cluster.nodes[0]
    # the consumer only knows node 1: it cannot be the one that moves
    urls = [cluster.urls[1]]

    async def fault(c: Consumer) -> None:
        await anyio.to_thread.run_sync(leader.stop)
        new = await anyio.to_thread.run_sync(cluster.cluster.leader_of, queue)
        assert new is not leader

    _, after = await _consume_through(cluster, queue, fault, urls)
    assert after.connected and after.outcomes.get("ack", 0) >= 150


# -- kernel-level partition --------------------------------------------------------------


@pytest.fixture(scope="module")
def netns_cluster() -> Iterator[tuple[BridgedNamespaces, RabbitCluster]]:
    require_kernel_partitions()
    lan = BridgedNamespaces(3)
    lan.open()
    try:
        placements = [NodePlacement(host=ip, netns=ns, node_host=name)
                      for ip, ns, name in zip(lan.ips, lan.ns, lan.names, strict=True)]  # fmt: skip
        with RabbitCluster(placements=placements) as cluster:
            yield lan, cluster
    finally:
        lan.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_node_partitioned_from_the_others_pauses_and_the_publisher_moves(
    netns_cluster: tuple[BridgedNamespaces, RabbitCluster], anyio_backend: str
) -> None:
    """Node 2 is cut off from nodes 0 and 1 by the kernel (its path to this host stays up).
    With ``pause_minority`` it stops serving once it notices (net_ticktime); the publisher,
    on node 2 (first in its list), moves to the majority. Everything confirmed survives."""
    lan, cluster = netns_cluster
    queue = f"warren.cluster.netns.{uuid.uuid4().hex[:8]}"
    urls = [cluster.urls[2], cluster.urls[0], cluster.urls[1]]
    chaos = Chaos(urls, cluster.urls, queue, queue_arguments=QUORUM, **FAST)
    try:
        async with chaos.running(rate=100) as pub:
            await pub.wait_connected()
            assert cluster.node_at(pub.statistics().node or "") is cluster.nodes[2]
            await anyio.sleep(0.5)
            async with chaos.fault():
                await anyio.to_thread.run_sync(lan.isolate, 2)
                try:
                    # pause_minority closes the node's client connections once the peers'
                    # silence outlasts net_ticktime (10 s here: 7.5-12.5 s)
                    await wait_for(lambda: pub.statistics().reconnects >= 1, within=30)
                    await wait_for(lambda: pub.statistics().connected, within=15)
                    on = cluster.node_at(pub.statistics().node or "")
                    assert on is not cluster.nodes[2]
                finally:
                    await anyio.to_thread.run_sync(lan.rejoin, 2)
            await anyio.sleep(0.5)
        chaos.outcome.check(detect=False)
    finally:
        await anyio.to_thread.run_sync(cluster.await_online)
        _delete_queues_named(cluster, queue)
