"""Faults of the broker itself, on a throwaway node (never the shared broker): a restart,
and a broker that is down when the worker starts."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.chaos.harness import Chaos, wait_for
from warren.testing import ProxyHandle, RabbitNode, ToxiproxyClient

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


@pytest.fixture
def node_proxy(
    fault_proxy_server: ToxiproxyClient, rabbit_node: RabbitNode
) -> Iterator[ProxyHandle]:
    name = f"node-{uuid.uuid4().hex[:8]}"
    info = fault_proxy_server.create_proxy(name, f"127.0.0.1:{rabbit_node.amqp_port}")
    yield ProxyHandle(fault_proxy_server, name, "127.0.0.1", info.port)
    fault_proxy_server.delete_proxy(name)


async def test_broker_restart(rabbit_node: RabbitNode, node_proxy: ProxyHandle) -> None:
    queue = f"warren.chaos.restart.{uuid.uuid4().hex[:8]}"
    chaos = Chaos(node_proxy.amqp_url(), rabbit_node.url, queue)
    async with chaos.running(rate=100) as pub:
        await pub.wait_connected()
        await anyio.sleep(0.5)
        async with chaos.fault():
            await anyio.to_thread.run_sync(rabbit_node.restart)
        await wait_for(lambda: pub.statistics().connected, within=30)
        await anyio.sleep(0.5)
    chaos.outcome.check()


async def test_broker_down_at_start_up_then_up(
    rabbit_node: RabbitNode, node_proxy: ProxyHandle
) -> None:
    queue = f"warren.chaos.late.{uuid.uuid4().hex[:8]}"
    await anyio.to_thread.run_sync(rabbit_node.stop)
    try:
        chaos = Chaos(node_proxy.amqp_url(), rabbit_node.url, queue)
        async with chaos.running(rate=100) as pub, chaos.fault():
            await wait_for(lambda: pub.statistics().buffer_depth >= 50, within=10)
            assert not pub.statistics().connected
            await anyio.to_thread.run_sync(rabbit_node.start)
            await wait_for(lambda: pub.statistics().connected, within=30)
    finally:
        await anyio.to_thread.run_sync(rabbit_node.start)  # others share the node
    chaos.outcome.check(reconnect=False, detect=False)
