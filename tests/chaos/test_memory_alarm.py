"""A resource alarm on a throwaway node: connection.blocked -> the buffer grows and nothing
is lost; unblocked -> it flushes. (Never on the shared broker.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from tests.support.broker import Broker
from tests.support.helpers import config, metric, wait_until
from warren import Metrics, Publisher

if TYPE_CHECKING:
    from warren.testing import RabbitNode

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


async def test_memory_alarm_blocks_then_flushes(rabbit_node: RabbitNode, metrics: Metrics) -> None:
    queue = f"warren.blocked.{anyio.get_current_task().id}"
    with Broker(rabbit_node.url) as direct:
        direct.declare_queue(queue)
    try:
        # heartbeat 1: blocked for 3 s is three heartbeats, past the dead-link limit
        # (heartbeat + 0.6 s) had the broker stopped sending: it does not, while blocked
        cfg = config(rabbit_node.url, confirm_timeout=2.0, heartbeat=1)
        async with Publisher(cfg, metrics=metrics, name="alarm") as pub:
            await pub.publish({"before": True}, routing_key=queue)
            await anyio.to_thread.run_sync(rabbit_node.set_memory_alarm, True)
            # the broker blocks a connection when it next publishes
            for i in range(100):
                pub.submit({"seq": i}, routing_key=queue)
            await wait_until(lambda: pub.statistics().blocked, within=30)
            assert metric(metrics, "warren_connection_blocked", worker="alarm") == 1
            for i in range(100, 300):
                pub.submit({"seq": i}, routing_key=queue)
            stats = pub.statistics()
            assert stats.buffer_depth >= 200
            assert stats.connected
            # blocked is not dead: no confirm-timeout reconnect while the alarm lasts
            await anyio.sleep(cfg.confirm_timeout + 1)  # a wait the test is about, not sync
            assert pub.statistics().reconnects == 0
            await anyio.to_thread.run_sync(rabbit_node.set_memory_alarm, False)
            await pub.wait_flushed()
            stats = pub.statistics()
        assert not stats.blocked
        assert stats.confirmed == 301
        assert stats.reconnects == 0
        with Broker(rabbit_node.url) as direct:
            arrivals = await anyio.to_thread.run_sync(lambda: direct.drain(queue, expect=301))
        assert arrivals.distinct == 301
    finally:
        await anyio.to_thread.run_sync(rabbit_node.set_memory_alarm, False)
        with Broker(rabbit_node.url) as direct:
            direct.delete_queue(queue)
