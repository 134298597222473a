"""End to end with a real Prometheus: it scrapes a running worker every second while the
broker link is blackholed through the fault proxy, and its query API shows the buffer rising
and draining and the reconnect counted. Every dashboard expression answers on it too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from tests.support.helpers import config
from tests.support.prometheus_tools import dashboard_exprs, prometheus
from warren import Metrics, OpsServer, Publisher
from warren.testing import partition

if TYPE_CHECKING:
    from pathlib import Path

    from warren.testing.pytest_plugin import ProxiedBroker

# one backend: this checks the integration with Prometheus; the endpoints themselves are
# tested on both backends in test_ops.py
pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(120),
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),
]


async def query(client: httpx.AsyncClient, api: str, promql: str) -> list[dict[str, Any]]:
    r = await client.get(f"{api}/api/v1/query", params={"query": promql})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (promql, body)
    return list(body["data"]["result"])


async def until(client: httpx.AsyncClient, api: str, promql: str, within: float) -> None:
    """Poll Prometheus (an HTTP server: no event to wait on) until ``promql`` has a result."""
    with anyio.fail_after(within):
        while True:
            try:
                if await query(client, api, promql):
                    return
            except httpx.TransportError:
                pass  # still starting
            await anyio.sleep(0.5)


@pytest.mark.scenario
async def test_prometheus_sees_the_partition_and_the_recovery(
    rabbit_proxy: ProxiedBroker, metrics: Metrics, queue_name: str, tmp_path: Path
) -> None:
    cfg = config(rabbit_proxy.url, heartbeat=1, confirm_timeout=3)
    w = 'worker="e2e"'
    async with (
        OpsServer(metrics, "127.0.0.1:0") as ops,
        Publisher(cfg, metrics=metrics, name="e2e") as pub,
        anyio.create_task_group() as load,
        httpx.AsyncClient(timeout=5) as client,
    ):
        await pub.wait_connected()

        stop = anyio.Event()

        async def submit_until_stopped() -> None:
            while not stop.is_set():
                pub.submit({"at": anyio.current_time()}, routing_key=queue_name)
                await anyio.sleep(0.02)

        load.start_soon(submit_until_stopped)
        with prometheus(tmp_path, f"127.0.0.1:{ops.port}") as api:
            await until(client, api, f"warren_connection_up{{{w}}} == 1", within=30)
            down_metric = f"warren_disconnected_seconds_total{{{w}}}"
            before = float((await query(client, api, down_metric))[0]["value"][1])
            async with partition(rabbit_proxy.proxy):
                await until(client, api, f"warren_buffer_depth{{{w}}} > 20", within=20)
                await until(client, api, f"warren_connection_up{{{w}}} == 0", within=20)
            await until(client, api, f"warren_connection_up{{{w}}} == 1", within=30)
            stop.set()
            await pub.wait_flushed()
            await until(client, api, f"warren_buffer_depth{{{w}}} == 0", within=20)
            rose = await query(client, api, f"max_over_time(warren_buffer_depth{{{w}}}[5m])")
            reconnects = await query(client, api, f"increase(warren_reconnects_total{{{w}}}[5m])")
            after = float((await query(client, api, down_metric))[0]["value"][1])
            for expr in dashboard_exprs():
                await query(client, api, expr)  # every dashboard query answers
            rules = (await client.get(f"{api}/api/v1/rules")).json()["data"]["groups"]
    assert float(rose[0]["value"][1]) > 20
    assert float(reconnects[0]["value"][1]) >= 1
    assert after > before, "the outage was counted in warren_disconnected_seconds_total"
    assert {g["name"] for g in rules} == {"warren", "rabbitmq"}, "the alert rules loaded"
