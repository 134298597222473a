"""Partitions through the fault proxy, with the real publisher and an independent consumer.

For every scenario (``Outcome.check``): no accepted job lost, duplicates only of accepted
ids, the buffer rose during the fault and is back to 0, reconnects counted, the fault noticed
within heartbeat + 1 s and the buffer flushed within a stated bound after it ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from tests.chaos.harness import DETECT_WITHIN, Chaos, wait_for
from warren import ConnectionGaveUp
from warren.testing import link_down, partition

if TYPE_CHECKING:
    from warren.testing.pytest_plugin import ProxiedBroker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


async def test_silent_blackhole_longer_than_the_heartbeat(
    rabbit_proxy: ProxiedBroker, chaos_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    chaos = Chaos(rabbit_proxy.url, rabbit_proxy.direct_url, chaos_queue)
    async with chaos.running() as pub:
        await pub.wait_connected()
        await anyio.sleep(0.5)  # steady load before the fault
        async with chaos.fault(), partition(rabbit_proxy.proxy):
            await wait_for(lambda: not pub.statistics().connected, within=DETECT_WITHIN + 2)
            await anyio.sleep(1.0)  # the partition outlasts the detection
        await wait_for(lambda: pub.statistics().connected)
        await anyio.sleep(0.5)
    chaos.outcome.check()
    assert "kind=dead_link" in caplog.text


async def test_reset_peer(
    rabbit_proxy: ProxiedBroker, chaos_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    chaos = Chaos(rabbit_proxy.url, rabbit_proxy.direct_url, chaos_queue)
    proxy = rabbit_proxy.proxy
    async with chaos.running() as pub:
        await pub.wait_connected()
        await anyio.sleep(0.3)
        async with chaos.fault():
            await anyio.to_thread.run_sync(
                lambda: proxy.client.add_toxic(proxy.name, "reset_peer", name="rst", timeout=0)
            )
            await wait_for(lambda: not pub.statistics().connected, within=DETECT_WITHIN)
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(proxy.client.remove_toxic, proxy.name, "rst")
        await wait_for(lambda: pub.statistics().connected)
        await anyio.sleep(0.3)
    chaos.outcome.check()
    assert "kind=stream_lost" in caplog.text


async def test_link_down_then_up(rabbit_proxy: ProxiedBroker, chaos_queue: str) -> None:
    chaos = Chaos(rabbit_proxy.url, rabbit_proxy.direct_url, chaos_queue)
    async with chaos.running() as pub:
        await pub.wait_connected()
        await anyio.sleep(0.3)
        async with chaos.fault(), link_down(rabbit_proxy.proxy):
            await wait_for(lambda: not pub.statistics().connected, within=DETECT_WITHIN)
            await anyio.sleep(1.5)  # reconnect attempts are refused meanwhile
        await wait_for(lambda: pub.statistics().connected)
        await anyio.sleep(0.3)
    chaos.outcome.check()


async def test_slow_link_no_false_reconnects_no_loss(
    rabbit_proxy: ProxiedBroker, chaos_queue: str
) -> None:
    """300 ms latency both ways and 16 KB/s: slow, not dead."""
    chaos = Chaos(rabbit_proxy.url, rabbit_proxy.direct_url, chaos_queue)
    proxy = rabbit_proxy.proxy
    async with chaos.running(rate=40) as pub:
        await pub.wait_connected()
        async with chaos.fault():
            for stream in ("upstream", "downstream"):
                await proxy.aio.add_toxic(proxy.name, "latency", stream=stream, latency=300)
                await proxy.aio.add_toxic(proxy.name, "bandwidth", stream=stream, rate=16)
            await anyio.sleep(4)
            for stream in ("upstream", "downstream"):
                await proxy.aio.remove_toxic(proxy.name, f"latency_{stream}")
                await proxy.aio.remove_toxic(proxy.name, f"bandwidth_{stream}")
    o = chaos.outcome
    o.check(reconnect=False, detect=False)
    assert o.stats.reconnects == 0, "a slow link was taken for a dead one"
    assert o.detected_after is None


@pytest.mark.parametrize("policy", ["drop-newest", "drop-oldest"])
async def test_partition_longer_than_the_buffer(
    rabbit_proxy: ProxiedBroker, chaos_queue: str, policy: str
) -> None:
    chaos = Chaos(rabbit_proxy.url, rabbit_proxy.direct_url, chaos_queue,
                  buffer_size=150, overflow=policy)  # fmt: skip
    async with chaos.running(rate=200) as pub:
        await pub.wait_connected()
        async with chaos.fault(), partition(rabbit_proxy.proxy):
            await wait_for(lambda: pub.statistics().buffer_depth >= 150, within=10)
            await wait_for(lambda: not pub.statistics().connected, within=DETECT_WITHIN + 2)
            await anyio.sleep(1.0)  # the buffer stays full while load goes on
            assert pub.statistics().buffer_depth == 150
        await wait_for(lambda: pub.statistics().connected)
    o = chaos.outcome
    o.check()
    if policy == "drop-newest":
        assert o.refused > 0 and o.stats.dropped["evicted"] == 0
    else:
        assert o.refused == 0 and o.stats.dropped["evicted"] > 0


async def test_max_reconnect_attempts_fail_loudly(
    rabbit_proxy: ProxiedBroker, chaos_queue: str
) -> None:
    chaos = Chaos(rabbit_proxy.url, rabbit_proxy.direct_url, chaos_queue,
                  reconnect_max_attempts=3)  # fmt: skip
    proxy = rabbit_proxy.proxy

    async def until_it_gives_up() -> None:
        async with chaos.running() as pub:
            await pub.wait_connected()
            await anyio.sleep(0.3)
            await anyio.to_thread.run_sync(proxy.client.set_enabled, proxy.name, False)
            await anyio.sleep_forever()

    with pytest.raises(ConnectionGaveUp) as info:
        await until_it_gives_up()
    stats = chaos.pub.statistics() if chaos.pub else None
    assert stats is not None
    assert info.value.attempts == 3
    assert info.value.jobs_lost > 0
    assert stats.dropped["gave_up"] == info.value.jobs_lost
    assert chaos.metric("warren_jobs_dropped_total", reason="gave_up") == info.value.jobs_lost
    await anyio.to_thread.run_sync(proxy.client.set_enabled, proxy.name, True)
