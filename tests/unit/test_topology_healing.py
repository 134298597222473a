"""A queue deleted under a running publisher: declared again, nothing returned, readiness
says so when jobs keep coming back anyway.

Before, every job published after the deletion came back NO_ROUTE and was counted returned
(one WARNING each) while the api kept answering "queued" and /readyz stayed 200.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.support.helpers import config, metric, wait_until
from warren import (
    Binding,
    Consumer,
    ConsumerConfig,
    Exchange,
    JobReturned,
    Message,
    Metrics,
    PoisonMessage,
    Publisher,
    PublisherConfig,
    Queue,
    Topology,
)
from warren._ops.health import check
from warren.testing import FakeLink, FakeLinks

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.broker import Broker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def declared(broker: Broker) -> Iterator[str]:
    """A queue name the publisher's topology declares; deleted afterwards."""
    name = f"warren.test.heal.{uuid.uuid4().hex[:8]}"
    yield name
    broker.delete_queue(name)


@pytest.mark.broker
async def test_a_queue_deleted_under_a_running_publisher_is_declared_again(
    broker_url: str, broker: Broker, declared: str, metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    topology = Topology(queues=(Queue(name=declared),))
    async with Publisher(config(broker_url), metrics=metrics, name="heal",
                         topology=topology) as pub:  # fmt: skip
        for i in range(20):
            pub.submit({"i": i}, routing_key=declared)
        with anyio.fail_after(20):
            await pub.wait_flushed()
        broker.delete_queue(declared)  # an operator, a policy, a broker that lost it
        with caplog.at_level(logging.INFO, logger="warren"):
            for i in range(200):
                pub.submit({"i": i}, routing_key=declared)
            with anyio.fail_after(30):
                await pub.wait_flushed()
        stats = pub.statistics()
    assert stats.returned == 0, "jobs for a declared queue came back unroutable"
    assert stats.confirmed == 220
    assert broker.depth(declared) == 200
    assert metric(metrics, "warren_topology_redeclared_total", worker="heal") >= 1
    returned_lines = [r for r in caplog.records if "publish.returned" in r.getMessage()]
    assert not returned_lines
    assert any("topology.redeclared" in r.getMessage() for r in caplog.records)


@pytest.mark.broker
async def test_sustained_returns_make_the_publisher_unready_until_a_confirm(
    broker_url: str, broker: Broker, declared: str, metrics: Metrics
) -> None:
    """A route nothing declares cannot be healed: its jobs are returned (counted), and a
    publisher whose jobs keep coming back is not ready (it is losing side effects)."""
    broker.declare_queue(declared)
    async with Publisher(config(broker_url), metrics=metrics, name="lost") as pub:
        await pub.wait_connected()
        assert check(metrics).ready
        for i in range(20):
            pub.submit({"i": i}, routing_key="warren.test.nobody.declares.this")
        with anyio.fail_after(20):
            await pub.wait_flushed()
        assert pub.statistics().returned == 20
        health = check(metrics)
        assert not health.ready
        assert health.workers["lost"]["returned_in_a_row"] == 20
        pub.submit({"ok": True}, routing_key=declared)
        await wait_until(lambda: check(metrics).ready, within=10)


# -- the same, driven by a fake connection: order, rate limit, the bound per job ----------


def _publisher_declaring_q() -> tuple[Publisher, FakeLink]:
    links = FakeLinks()
    pub = Publisher(PublisherConfig(), metrics=Metrics(CollectorRegistry()), name="p",
                    topology=Topology(queues=(Queue(name="q"),)), connection=links)  # fmt: skip
    return pub, links.made[0]


async def _settle_loop() -> None:
    await anyio.wait_all_tasks_blocked()


async def test_sending_pauses_until_the_topology_is_declared_again_then_resends() -> None:
    pub, link = _publisher_declaring_q()
    async with pub:
        link.connect()
        ids = [pub.submit({"n": i}, routing_key="q") for i in range(3)]
        await _settle_loop()
        assert link.handed_over == 3
        first = link.return_one()
        await _settle_loop()
        assert link.declare_requests == 1
        second = link.return_one()  # already declaring: no second request
        pub.submit({"n": 3}, routing_key="q")
        await _settle_loop()
        assert link.declare_requests == 1
        assert link.handed_over == 3, "nothing is sent while the topology is being declared"
        link.declared()
        await _settle_loop()
        assert link.unconfirmed[-3:-1] == [first, second]  # re-sent, then the new job
        link.confirm(10)
        await _settle_loop()
        stats = pub.statistics()
    assert (stats.confirmed, stats.returned, stats.rerouted, stats.redeclared) == (4, 0, 2, 1)
    assert len(ids) == 3


async def test_a_job_that_keeps_coming_back_is_returned_after_three_redeclarations() -> None:
    """And re-declarations are at most one per second."""
    pub, link = _publisher_declaring_q()
    async with pub:
        link.connect()
        async with anyio.create_task_group() as tg:
            outcome: list[BaseException] = []

            async def publish() -> None:
                try:
                    await pub.publish(b"x", routing_key="q")
                except JobReturned as exc:
                    outcome.append(exc)

            tg.start_soon(publish)
            started = anyio.current_time()
            for round_ in range(1, 4):
                await wait_until(lambda: len(link.unconfirmed) == 1, within=5)
                link.return_one()
                await wait_until(lambda r=round_: link.declare_requests == r, within=5)
                link.declared()
            took = anyio.current_time() - started
            await wait_until(lambda: len(link.unconfirmed) == 1, within=5)
            link.return_one()  # the fourth time: returned for good
        assert took >= 2 * 0.9, f"three re-declarations in {took:.2f}s: not rate-limited"
        assert len(outcome) == 1
        stats = pub.statistics()
    assert (stats.returned, stats.rerouted, stats.redeclared) == (1, 3, 3)


async def test_a_connection_lost_while_declaring_resends_after_reconnecting() -> None:
    pub, link = _publisher_declaring_q()
    async with pub:
        link.connect()
        pub.submit(b"x", routing_key="q")
        await _settle_loop()
        link.return_one()
        await _settle_loop()
        assert link.declare_requests == 1
        link.lose()
        link.connect()  # a new connection declares on connect: no Declared needed
        await _settle_loop()
        assert len(link.unconfirmed) == 1
        link.confirm(1)
        await _settle_loop()
        assert pub.statistics().confirmed == 1


@pytest.mark.parametrize(
    "anyio_backend", ["asyncio", pytest.param("trio", marks=pytest.mark.scenario)]
)  # trio in make scenarios: slow
async def test_a_message_nothing_can_settle_is_rejected_and_the_worker_goes_on() -> None:
    """Its dead letter keeps coming back unroutable (past three re-declarations), and so
    does the bare one that follows: the delivery is rejected without requeue (counted), the
    next one is handled."""

    async def handler(message: Message) -> None:
        if message.body == b"poison":
            raise PoisonMessage("test")

    links = FakeLinks()
    config = ConsumerConfig(queue="q")
    async with Consumer(config, handler, metrics=Metrics(CollectorRegistry()), name="c",
                        connection=links) as consumer:  # fmt: skip
        deliveries, requeue = links.made
        deliveries.connect()
        requeue.connect()
        deliveries.deliver(1, b"poison", "p1")
        returns = answered = 0
        while returns < 2 * 4:  # the dead letter, then the bare one: four returns each
            await wait_until(
                lambda a=answered: requeue.unconfirmed or requeue.declare_requests > a, within=5
            )
            if requeue.declare_requests > answered:  # (rate-limited: one a second)
                answered += 1
                requeue.declared()
            else:
                requeue.return_one()
                returns += 1
            await anyio.wait_all_tasks_blocked()
        assert answered == 2 * 3
        await wait_until(lambda: consumer.statistics().outcomes["rejected"] == 1, within=5)
        assert deliveries.rejected == [1]
        deliveries.deliver(2, b"{}", "ok")
        await wait_until(lambda: deliveries.acked == [2], within=5)
        assert consumer.statistics().failed is None


@pytest.mark.parametrize(
    ("exchange", "routing_key", "routes"),
    [
        ("", "q", True),
        ("", "other", False),
        ("events", "user.created", True),  # topic binding user.*
        ("events", "user.created.eu", False),
        ("audit", "anything.at.all", False),  # an exchange it does not declare: type unknown
        ("amq.topic", "audit", True),
        ("amq.topic", "auditx.y", False),
        ("fan", "", True),
        ("direct", "d", True),
        ("direct", "e", False),
        ("undeclared-q-exchange", "x", False),  # binds a queue this topology does not declare
        ("headers", "h", False),
    ],
)
def test_which_returned_routes_the_topology_can_heal(
    exchange: str, routing_key: str, routes: bool
) -> None:
    topology = Topology(
        exchanges=(Exchange(name="events", type="topic"), Exchange(name="fan", type="fanout"),
                   Exchange(name="direct"), Exchange(name="headers", type="headers"),
                   Exchange(name="undeclared-q-exchange")),
        queues=(Queue(name="q"),),
        bindings=(Binding(queue="q", exchange="events", routing_key="user.*"),
                  Binding(queue="q", exchange="amq.topic", routing_key="audit.#"),
                  Binding(queue="q", exchange="audit", routing_key="#"),
                  Binding(queue="q", exchange="fan"),
                  Binding(queue="q", exchange="direct", routing_key="d"),
                  Binding(queue="q", exchange="headers"),
                  Binding(queue="elsewhere", exchange="undeclared-q-exchange", routing_key="x")),
    )  # fmt: skip
    assert topology.routes(exchange, routing_key) is routes
