"""Kernel-level partitions: the broker in its own network namespace, a real veth path to it,
cut by an nftables DROP rule or by deleting and re-creating the veth (the closest analog of
``docker network disconnect`` / ``connect``). Root only; in CI (CI=true) it must run."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.chaos.harness import DETECT_WITHIN, Chaos, wait_for
from tests.chaos.netns import VethLink, require_kernel_partitions
from warren.testing import RabbitNode

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def netns_broker() -> Iterator[tuple[VethLink, RabbitNode]]:
    require_kernel_partitions()
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


@pytest.mark.parametrize("cut", ["nft_drop", "veth_deleted"])
async def test_kernel_level_cut_then_heal(
    netns_broker: tuple[VethLink, RabbitNode], cut: str
) -> None:
    """``nft_drop``: an nftables DROP on the broker's port both ways, then deleted.
    ``veth_deleted``: the veth pair deleted, then re-created with the same addresses."""
    link, node = netns_broker
    if cut == "nft_drop":
        cut_off, restore = (lambda: link.drop(node.amqp_port)), link.heal
    else:
        cut_off, restore = link.unplug, link.plug
    chaos = Chaos(node.url, node.url, f"warren.chaos.{cut}.{uuid.uuid4().hex[:8]}")
    async with chaos.running(rate=100) as pub:
        await pub.wait_connected()
        await anyio.sleep(0.5)
        async with chaos.fault():
            await anyio.to_thread.run_sync(cut_off)
            try:
                await wait_for(lambda: not pub.statistics().connected, within=DETECT_WITHIN + 2)
                await anyio.sleep(1.0)  # the cut outlasts the detection
            finally:
                await anyio.to_thread.run_sync(restore)
        await wait_for(lambda: pub.statistics().connected, within=30)
        await anyio.sleep(0.5)
    chaos.outcome.check()
