"""The operations endpoints: /metrics (text and OpenMetrics), /healthz and /readyz with
the documented rules, served from the worker's event loop."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

import warren
from tests.support.helpers import config, free_port, wait_until
from warren import ConnectionConfig, ConnectionGaveUp, Metrics, OpsServer, Publisher

if TYPE_CHECKING:
    from tests.support.broker import Broker

pytestmark = pytest.mark.timeout(60)


async def get(server: OpsServer, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{server.port}{path}", headers=headers)


async def test_readiness_follows_the_buffer_while_the_broker_is_unreachable(
    metrics: Metrics,
) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    cfg = config(dead, buffer_size=3, overflow="drop-newest", flush_timeout=0)
    async with (
        OpsServer(metrics, "127.0.0.1:0") as server,
        Publisher(cfg, metrics=metrics, name="api") as pub,
    ):
        pub.submit(b"1", routing_key="q")
        pub.submit(b"2", routing_key="q")
        await wait_until(lambda: pub.statistics().last_error is not None, within=10)
        ready = await get(server, "/readyz")
        assert ready.status_code == 200, "disconnected, but the buffer has room"
        worker = ready.json()["workers"]["api"]
        assert worker["connected"] is False
        assert worker["buffer_depth"] == 2 and worker["buffer_capacity"] == 3
        assert worker["last_error"]  # why it is not connected, credentials redacted
        pub.submit(b"3", routing_key="q")
        full = await get(server, "/readyz")
        assert full.status_code == 503 and full.json()["ready"] is False
        live = await get(server, "/healthz")
        assert live.status_code == 200 and live.json()["live"] is True


async def test_a_worker_that_gave_up_fails_liveness(metrics: Metrics) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    cfg = config(dead, reconnect_max_attempts=2, flush_timeout=0)
    async with OpsServer(metrics, "127.0.0.1:0") as server:
        with pytest.raises(ConnectionGaveUp):
            async with Publisher(cfg, metrics=metrics, name="doomed"):
                await anyio.sleep_forever()
        r = await get(server, "/healthz")
    assert r.status_code == 503
    assert "gave up" in r.json()["workers"]["doomed"]["failed"]


async def test_metrics_in_both_formats_with_the_contract_names(
    broker_url: str, broker: Broker, queue_name: str, metrics: Metrics
) -> None:
    async with (
        OpsServer(metrics, "127.0.0.1:0") as server,
        Publisher(config(broker_url), metrics=metrics, name="pub") as pub,
    ):
        await pub.publish({"n": 1}, routing_key=queue_name)
        text = await get(server, "/metrics")
        om = await get(server, "/metrics", accept="application/openmetrics-text; version=1.0.0")
        r = await get(server, "/readyz")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    for name in (
        "warren_buffer_depth",
        "warren_buffer_capacity",
        "warren_connection_up",
        "warren_connection_blocked",
        "warren_reconnects_total",
        "warren_jobs_submitted_total",
        "warren_jobs_confirmed_total",
        "warren_jobs_returned_total",
        "warren_publish_confirm_seconds_count",
        "warren_buffer_oldest_job_age_seconds",
        "warren_disconnected_seconds_total",
        "warren_confirm_timeouts_total",
    ):
        assert f'{name}{{worker="pub"' in text.text, name
    assert 'warren_jobs_dropped_total{reason="refused",worker="pub"} 0.0' in text.text
    assert f'warren_info{{version="{warren.__version__}"}} 1.0' in text.text
    assert 'warren_jobs_confirmed_total{worker="pub"} 1.0' in text.text
    body: dict[str, Any] = r.json()
    assert r.status_code == 200 and body["workers"]["pub"]["connected"] is True
    assert body["workers"]["pub"]["seconds_since_confirm"] is not None


async def test_oldest_job_age_and_disconnected_time_grow_during_an_outage(
    metrics: Metrics,
) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    async with Publisher(config(dead, flush_timeout=0), metrics=metrics, name="p") as pub:
        pub.submit(b"old", routing_key="q")
        await wait_until(lambda: pub.statistics().oldest_job_age >= 0.2, within=5)
        pub.submit(b"new", routing_key="q")
        stats = pub.statistics()
    assert stats.oldest_job_age >= 0.2  # the first job's age, not the newest's
    assert stats.disconnected_seconds >= 0.2


async def test_unknown_paths_and_methods_and_a_busy_address(metrics: Metrics) -> None:
    async with OpsServer(metrics, "127.0.0.1:0") as server:
        assert (await get(server, "/nope")).status_code == 404
        async with httpx.AsyncClient() as client:
            r = await client.post(f"http://127.0.0.1:{server.port}/metrics")
        assert r.status_code == 405
        busy = f"127.0.0.1:{server.port}"
        with pytest.raises(warren.ConfigError, match=r"^WARREN_METRICS_ADDR: cannot listen"):
            async with OpsServer(metrics, busy):
                pass


def test_the_package_version_is_the_runtime_version() -> None:
    assert importlib.metadata.version("warren") == warren.__version__


async def test_two_running_workers_cannot_share_a_name(metrics: Metrics) -> None:
    """They would hide each other in the metrics and the health checks."""
    from warren import ConfigError, Consumer, ConsumerConfig, Message, PublisherConfig

    async def handler(message: Message) -> None:
        pass

    refused = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    config = PublisherConfig(connection=ConnectionConfig(urls=refused), flush_timeout=0.1)
    async with Publisher(config, metrics=metrics, name="jobs"):
        with pytest.raises(ConfigError, match="'jobs' is already used by a running worker"):
            async with Publisher(config, metrics=metrics, name="jobs"):
                pass  # pragma: no cover
        consumer = Consumer(
            ConsumerConfig(connection=ConnectionConfig(urls=refused), queue="q"),
            handler,
            metrics=metrics,
            name="jobs",
        )
        with pytest.raises(ConfigError, match="already used"):
            async with consumer:
                pass  # pragma: no cover
    # a finished worker's name can be used again
    async with Publisher(config, metrics=metrics, name="jobs"):
        assert list(metrics.publishers()) == ["jobs"]
    assert not metrics.consumers()
