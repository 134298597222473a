"""Kernel-level partitions: the broker in its own network namespace, a real veth path to it,
cut by an nftables DROP rule or by deleting and re-creating the veth (the closest analog of
``docker network disconnect`` / ``connect``). Root only; in CI (CI=true) it must run."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest

from runtime.testing import RabbitNode
from tests.chaos.harness import DETECT_WITHIN, Chaos, wait_for
from tests.chaos.netns import VethLink, missing_requirements

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def netns_broker() -> Iterator[tuple[VethLink, RabbitNode]]:
    why = missing_requirements()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"kernel-level partition tests must run in CI: {why}")
        pytest.skip(f"kernel-level partition tests skipped: {why}")
    link = VethLink()
    link.open()
    try:
        with RabbitNode(host=link.inner_ip, netns=link.ns) as node:
            yield link, node
    finally:
        link.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the kernel path is the subject here; both backends run everywhere else


async def test_nft_drop_then_heal(netns_broker: tuple[VethLink, RabbitNode]) -> None:
    link, node = netns_broker
    chaos = Chaos(node.url, node.url, f"warren.chaos.nft.{uuid.uuid4().hex[:8]}")
    async with chaos.running(rate=100) as pub:
        await pub.wait_connected()
        await anyio.sleep(0.5)
        async with chaos.fault():
            await anyio.to_thread.run_sync(link.drop, node.amqp_port)
            try:
                await wait_for(lambda: not pub.statistics().connected, within=DETECT_WITHIN + 2)
                await anyio.sleep(1.0)
            finally:
                await anyio.to_thread.run_sync(link.heal)
        await wait_for(lambda: pub.statistics().connected, within=30)
        await anyio.sleep(0.5)
    chaos.outcome.check()


async def test_veth_deleted_and_recreated(netns_broker: tuple[VethLink, RabbitNode]) -> None:
    link, node = netns_broker
    chaos = Chaos(node.url, node.url, f"warren.chaos.veth.{uuid.uuid4().hex[:8]}")
    async with chaos.running(rate=100) as pub:
        await pub.wait_connected()
        await anyio.sleep(0.5)
        async with chaos.fault():
            await anyio.to_thread.run_sync(link.unplug)
            try:
                await wait_for(lambda: not pub.statistics().connected, within=DETECT_WITHIN + 2)
                await anyio.sleep(1.0)
            finally:
                await anyio.to_thread.run_sync(link.plug)
        await wait_for(lambda: pub.statistics().connected, within=30)
        await anyio.sleep(0.5)
    chaos.outcome.check()
