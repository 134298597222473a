"""The services end to end on the real broker: API -> RabbitMQ -> push sender -> provider."""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from tests.support.helpers import (
    WARREN,
    fcm_service_account,
    free_port,
    running,
    wait_http,
    wait_until,
)
from warren.testing import partition
from warren_services import api, fake_push_provider, push_sender

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from tests.support.broker import Broker
    from warren import ServiceContext
    from warren.testing.pytest_plugin import ProxiedBroker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


class Stack:
    """fake provider + push sender + API, sharing one env."""

    def __init__(self, broker_url: str, **extra: str) -> None:
        self.queue = f"push.test.{uuid.uuid4().hex[:8]}"
        self.fake = f"http://127.0.0.1:{free_port()}"
        self.api = f"http://127.0.0.1:{free_port()}"
        self.env = {
            "WARREN_AMQP_URL": broker_url,
            "WARREN_HEARTBEAT": "2",
            "WARREN_PUSH_QUEUE": self.queue,
            "WARREN_FAKE_PUSH_ADDR": self.fake.removeprefix("http://"),
            "WARREN_PUSH_PROVIDER_URL": f"{self.fake}/webhook",
            "WARREN_PUSH_RETRY_BASE": "0.2",
            "WARREN_API_ADDR": self.api.removeprefix("http://"),
            "WARREN_API_DB": f"{tempfile.mkdtemp(prefix='warren-api-')}/api.sqlite3",
            "WARREN_PUSH_INVALID_TOKENS_QUEUE": f"{self.queue}.invalid_tokens",
            **extra,
        }

    async def received(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return dict((await client.get(f"{self.fake}/received")).json())

    async def wait_received(
        self, distinct: int, within: float = 20, *, count: str = "distinct"
    ) -> dict[str, Any]:
        """Poll the fake provider (an HTTP server: no event to wait on) with a deadline until
        its ``count`` (distinct pushes delivered, or attempts) reaches the number given."""
        with anyio.fail_after(within):
            while (got := await self.received())[count] < distinct:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        return got

    async def faults(self, **faults: Any) -> None:
        async with httpx.AsyncClient() as client:
            (await client.post(f"{self.fake}/faults", json=faults)).raise_for_status()

    def cleanup(self, broker: Broker) -> None:
        for suffix in ("", ".dlq", ".retry.200ms", ".retry.400ms", ".retry.800ms",
                       ".retry.1600ms", ".invalid_tokens"):  # fmt: skip
            broker.delete_queue(self.queue + suffix)


@pytest.fixture
def stack(broker_url: str, broker: Broker) -> Iterator[Stack]:
    s = Stack(broker_url)
    yield s
    s.cleanup(broker)


@asynccontextmanager
async def all_three(s: Stack) -> AsyncIterator[tuple[ServiceContext, ServiceContext]]:
    async with (
        running(fake_push_provider.service, s.env),
        running(push_sender.service, s.env) as sender,
        running(api.service, s.env) as api_ctx,
    ):
        await wait_http(f"{s.fake}/received")
        await wait_http(f"{s.api}/messages/none")
        yield sender, api_ctx


async def post(client: httpx.AsyncClient, s: Stack, to: str = "device-1") -> dict[str, Any]:
    r = await client.post(f"{s.api}/messages", json={"from": "ada", "to": to, "text": "hi"})
    assert r.status_code == 202, r.text
    return dict(r.json())


async def test_end_to_end_every_message_pushed_once(stack: Stack) -> None:
    n = 100
    async with all_three(stack) as (_sender, _api), httpx.AsyncClient() as client:
        ids = [(await post(client, stack))["id"] for _ in range(n)]
        got = await stack.wait_received(n, within=30)
        stored = (await client.get(f"{stack.api}/messages/{ids[0]}")).json()
    assert got["distinct"] == n
    assert got["duplicates"] == 0
    assert set(got["ids"]) == {f"push-{i}" for i in ids}
    assert stored["push"] == "queued" and stored["from"] == "ada"


@pytest.mark.scenario
async def test_shutdown_mid_flight_acks_only_what_was_delivered(
    stack: Stack, broker: Broker
) -> None:
    """SIGTERM while pushes hang at the provider: the sender waits its shutdown deadline,
    acks what the provider confirmed, leaves the rest unacked; a new sender delivers them."""
    stack.env["WARREN_PUSH_SHUTDOWN_TIMEOUT"] = "0.5"
    async with (
        running(fake_push_provider.service, stack.env),
        running(api.service, stack.env),
        httpx.AsyncClient() as client,
    ):
        await wait_http(f"{stack.fake}/received")
        await wait_http(f"{stack.api}/messages/none")
        async with running(push_sender.service, stack.env) as sender:
            for _ in range(5):
                await post(client, stack)
            await stack.wait_received(5)
            await stack.faults(latency_ms=3000)  # the next pushes hang past the deadline
            for _ in range(5):
                await post(client, stack)
            await stack.wait_received(10, within=10, count="attempts")
        # the sender has stopped: 5 acked (delivered), 5 cut off and back on the queue
        acked = sender.metrics.registry.get_sample_value(
            "warren_deliveries_total", {"worker": "push-sender", "outcome": "ack"}
        )
        assert acked == 5
        await wait_until(lambda: broker.depth(stack.queue) == 5)
        await stack.faults(latency_ms=0)
        async with running(push_sender.service, stack.env):
            got = await stack.wait_received(10)
    # a push cut off by the shutdown may still have reached the provider: then it is a
    # duplicate (at-least-once), never a loss
    assert got["distinct"] == 10
    assert got["duplicates"] <= 5


async def test_fcm_shape_with_a_bearer_token(broker_url: str, broker: Broker) -> None:
    s = Stack(broker_url, WARREN_PUSH_PROVIDER="fcm", WARREN_PUSH_FCM_TOKEN="s3cret-token")
    s.env["WARREN_PUSH_PROVIDER_URL"] = f"{s.fake}/v1/projects/demo/messages:send"
    try:
        async with all_three(s), httpx.AsyncClient() as client:
            r = await client.post(f"{s.api}/messages", json={"from": "a", "to": "device",
                                  "text": "hi", "data": {"chat": "42"}})  # fmt: skip
            mid = r.json()["id"]
            got = await s.wait_received(1)
        assert got["ids"] == [f"push-{mid}"]
        assert got["data"][f"push-{mid}"] == {"chat": "42", "message_id": mid,
                                              "warren_message_id": f"push-{mid}"}  # fmt: skip
    finally:
        s.cleanup(broker)


@pytest.mark.scenario
async def test_fcm_tokens_are_minted_and_refreshed_through_expiries(
    broker_url: str, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Access tokens that live 2 s (FCM's live an hour): the sender mints them from the
    service account and refreshes them ahead of expiry while pushes flow; revoked tokens
    (401) are refreshed once and the push sent again. Nothing lost or dead-lettered."""
    s = Stack(broker_url, WARREN_PUSH_PROVIDER="fcm")
    creds, public, pem = fcm_service_account(tmp_path, f"{s.fake}/token")
    s.env.update({
        "WARREN_PUSH_FCM_CREDENTIALS": str(creds),
        # {project} comes from the credentials file
        "WARREN_PUSH_PROVIDER_URL": f"{s.fake}/v1/projects/{{project}}/messages:send",
        "WARREN_FAKE_PUSH_OAUTH_KEY_FILE": str(public),
        "WARREN_FAKE_PUSH_TOKEN_SECONDS": "2",
    })  # fmt: skip
    caplog.set_level(logging.INFO)
    try:
        async with all_three(s), httpx.AsyncClient() as client:
            for _ in range(24):  # 6 s of pushes: three token lifetimes
                await post(client, s)
                await anyio.sleep(0.25)
            got = await s.wait_received(24)
            assert got["oauth"]["issued"] >= 3, got["oauth"]
            (await client.post(f"{s.fake}/revoke")).raise_for_status()
            for _ in range(5):
                await post(client, s)
            got = await s.wait_received(29)
        assert got["oauth"]["refused"] >= 1  # the revoked token was refused, then replaced
        assert got["duplicates"] == 0
        assert broker.depth(f"{s.queue}.dlq") == 0
        assert "fcm.token_refreshed" in caplog.text
        assert pem.splitlines()[1] not in caplog.text and "PRIVATE KEY" not in caplog.text
    finally:
        s.cleanup(broker)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"WARREN_PUSH_FCM_CREDENTIALS": "/nonexistent/sa.json"}, "WARREN_PUSH_FCM_CREDENTIALS"),
        (
            {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/sa.json"},
            "GOOGLE_APPLICATION_CREDENTIALS",
        ),
        ({}, "WARREN_PUSH_FCM_CREDENTIALS"),
    ],
)
def test_fcm_without_usable_credentials_exits_2_naming_the_setting(
    env: dict[str, str], setting: str, tmp_path: Path
) -> None:
    clean = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    done = subprocess.run([*WARREN, "run", "push-sender"], capture_output=True, text=True,
                          env={**clean, "WARREN_PUSH_PROVIDER": "fcm", **env}, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert setting in done.stderr


def test_a_broken_credentials_file_is_named_not_echoed(tmp_path: Path) -> None:
    bad = tmp_path / "sa.json"
    bad.write_text('{"type": "service_account", "private_key": "SECRET-MATERIAL"}')
    done = subprocess.run([*WARREN, "run", "push-sender"], capture_output=True, text=True,
                          env={**os.environ, "WARREN_PUSH_PROVIDER": "fcm",
                               "WARREN_PUSH_FCM_CREDENTIALS": str(bad)}, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "WARREN_PUSH_FCM_CREDENTIALS" in done.stderr and str(bad) in done.stderr
    assert "SECRET-MATERIAL" not in done.stderr


async def test_permanent_failures_are_counted_not_retried(stack: Stack, broker: Broker) -> None:
    async with all_three(stack) as (sender, _api), httpx.AsyncClient() as client:
        await stack.faults(invalid_tokens=["dead-device"])
        await post(client, stack, to="dead-device")
        await post(client, stack, to="live-device")
        registry = sender.metrics.registry

        def permanent() -> float:
            value = registry.get_sample_value("warren_push_permanent_failures_total",
                                              {"reason": "410"})  # fmt: skip
            return value or 0.0

        await wait_until(lambda: permanent() == 1.0)
        await stack.wait_received(1)
        await anyio.sleep(0.5)  # would a retry come? (it must not)
        got = await stack.received()
    assert got["distinct"] == 1
    assert got["attempts"] == 2, "the refused push was tried once, the good one once"
    # a 410 from a webhook: the device token is dead, and the application hears of it
    events = await anyio.to_thread.run_sync(
        lambda: broker.drain(f"{stack.queue}.invalid_tokens", expect=1)
    )
    event = json.loads(events.bodies[0])
    assert event["event"] == "push.invalid_token" and event["token"] == "dead-device"
    assert event["reason"] == "410" and event["provider"] == "webhook"
    assert event["message_id"].startswith("push-")


async def test_fcm_dead_tokens_become_events(broker_url: str, broker: Broker) -> None:
    """UNREGISTERED, and INVALID_ARGUMENT on message.token: one event each, on
    ``WARREN_PUSH_INVALID_TOKENS_QUEUE``; a live device's push is delivered, no event."""
    s = Stack(broker_url, WARREN_PUSH_PROVIDER="fcm", WARREN_PUSH_FCM_TOKEN="t")
    s.env["WARREN_PUSH_PROVIDER_URL"] = f"{s.fake}/v1/projects/demo/messages:send"
    try:
        async with all_three(s), httpx.AsyncClient() as client:
            await s.faults(invalid_tokens=["gone-device"], malformed_tokens=["not-a-token"])
            for to in ("gone-device", "not-a-token", "live-device"):
                await post(client, s, to=to)
            await s.wait_received(1)
            events = await anyio.to_thread.run_sync(
                lambda: broker.drain(f"{s.queue}.invalid_tokens", expect=2)
            )
        got = {json.loads(b)["token"]: json.loads(b)["reason"] for b in events.bodies}
        assert got == {"gone-device": "unregistered", "not-a-token": "invalid_argument"}
        assert broker.depth(f"{s.queue}.dlq") == 0
    finally:
        s.cleanup(broker)


@pytest.mark.scenario  # slow (5 s): make scenarios
async def test_a_throttling_provider_slows_the_whole_sender(stack: Stack) -> None:
    """One 429 with Retry-After: 2 pauses every push, not only the refused one: the pushes
    posted meanwhile wait instead of hitting the provider (and its quota) again."""
    async with all_three(stack) as (sender, _api), httpx.AsyncClient() as client:
        await stack.faults(throttle_for=2)
        await post(client, stack)
        await stack.wait_received(1, count="throttled")
        for _ in range(9):
            await post(client, stack)
        with anyio.move_on_after(1.0):  # the quiet time: no attempt may come in it
            await stack.wait_received(2, within=2, count="attempts")
            pytest.fail("a push reached the provider while it was throttling")
        got = await stack.wait_received(10, within=20)
        registry = sender.metrics.registry
        events = registry.get_sample_value("warren_push_throttled_total")
        waited = registry.get_sample_value("warren_push_throttled_seconds_total")
    assert got["distinct"] == 10 and got["duplicates"] == 0
    assert got["throttled"] == 1, got
    assert events == 1 and waited is not None and waited >= 1.0


@pytest.mark.scenario  # slow (5 s): make scenarios
async def test_retry_after_is_honoured(stack: Stack) -> None:
    async with all_three(stack), httpx.AsyncClient() as client:
        await stack.faults(fail_first=1, retry_after=1)
        started = time.monotonic()
        await post(client, stack)
        await stack.wait_received(1)
        waited = time.monotonic() - started
        got = await stack.received()
    assert got["attempts"] == 2
    assert waited >= 1.0, f"retried after {waited:.2f}s, before Retry-After: 1"


async def test_api_validation(stack: Stack) -> None:
    async with running(api.service, stack.env), httpx.AsyncClient() as client:
        await wait_http(f"{stack.api}/messages/none")
        r = await client.post(f"{stack.api}/messages", content=b"{nope")
        assert r.status_code == 400
        r = await client.post(f"{stack.api}/messages", json={"from": "a", "to": "", "text": "x"})
        assert r.status_code == 422 and r.json()["field"] == "to"
        r = await client.post(f"{stack.api}/messages", json=["not", "an", "object"])
        assert r.status_code == 422
        # FCM v1 takes only string data values: refused here, not by the provider later
        base = {"from": "a", "to": "b", "text": "x"}
        for data, field in (({"n": 1}, "data.n"), ({"ok": "v", "b": True}, "data.b"),
                            ({"google.x": "v"}, "data.google.x"), ("str", "data"),
                            ({f"k{i}": "v" for i in range(33)}, "data"),
                            ({"k": "v" * 4000}, "data")):  # fmt: skip
            r = await client.post(f"{stack.api}/messages", json={**base, "data": data})
            assert r.status_code == 422 and r.json()["field"] == field, (data, r.text)
        assert (await client.get(f"{stack.api}/messages/unknown")).status_code == 404


async def _latencies(client: httpx.AsyncClient, s: Stack, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        body = await post(client, s)
        out.append(time.perf_counter() - t)
        assert body["push"] == "queued"
    return out


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1]


@pytest.mark.scenario
async def test_api_keeps_answering_while_the_broker_link_is_blackholed(
    rabbit_proxy: ProxiedBroker, broker: Broker
) -> None:
    s = Stack(rabbit_proxy.url)
    try:
        async with running(api.service, s.env) as api_ctx, httpx.AsyncClient() as client:
            await wait_http(f"{s.api}/messages/none")
            await _latencies(client, s, 50)  # warm up
            up = await _latencies(client, s, 200)
            async with partition(rabbit_proxy.proxy):
                # Jobs still unconfirmed when the link is cut may have reached the broker
                # (their confirms were what the cut ate): they are sent again, so each may
                # arrive twice, never more. Nothing is confirmed until the heal.
                unconfirmed_at_cut = api_ctx.metrics.registry.get_sample_value(
                    "warren_buffer_depth", {"worker": "api"}
                )
                assert unconfirmed_at_cut is not None
                down = await _latencies(client, s, 200)
                depth = api_ctx.metrics.registry.get_sample_value(
                    "warren_buffer_depth", {"worker": "api"}
                )
                assert depth is not None and depth > 0, "jobs wait in the buffer"

            def flushed() -> bool:
                value = api_ctx.metrics.registry.get_sample_value(
                    "warren_buffer_depth", {"worker": "api"}
                )
                return value == 0

            await wait_until(flushed, within=30)
        # Nothing waits for the broker: a request held by the link would take about the
        # heartbeat (2 s) or more. The tail is compared at p95, not p99: p99 of 200 requests
        # is their second slowest, and one disk hiccup in a commit on a shared CI machine
        # put it at 133 ms once while every other request took 4 ms.
        assert max(down) < 1.0, max(down)
        assert pct(down, 95) <= 2 * pct(up, 95) + 0.02, (pct(up, 95), pct(down, 95))
        arrived = await anyio.to_thread.run_sync(lambda: broker.drain_all(s.queue))
        assert arrived.distinct == 450, "every accepted message arrived"
        assert arrived.duplicates <= unconfirmed_at_cut
    finally:
        s.cleanup(broker)


@pytest.mark.scenario
async def test_api_stores_before_it_pushes(broker_url: str, broker: Broker, tmp_path: Any) -> None:
    """A message the API cannot store (the database is locked) is answered 503 and sends no
    push: a client retrying it must not send the push twice."""
    import sqlite3

    db = tmp_path / "api.sqlite3"
    queue = f"warren.test.order.{uuid.uuid4().hex[:8]}"
    addr = f"127.0.0.1:{free_port()}"
    env = {"WARREN_AMQP_URL": broker_url, "WARREN_API_ADDR": addr, "WARREN_API_DB": str(db),
           "WARREN_PUSH_QUEUE": queue}  # fmt: skip
    try:
        async with running(api.service, env) as ctx, httpx.AsyncClient(timeout=30) as client:
            await wait_http(f"http://{addr}/messages/none")
            locker = sqlite3.connect(db, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            try:
                r = await client.post(f"http://{addr}/messages",
                                      json={"from": "a", "to": "b", "text": "hi"})  # fmt: skip
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            assert r.status_code == 503, r.text
            assert ctx.metrics.publishers()["api"].submitted == 0, "pushed an unstored message"
            r = await client.post(f"http://{addr}/messages",
                                  json={"from": "a", "to": "b", "text": "hi"})  # fmt: skip
            assert r.status_code == 202 and r.json()["push"] == "queued"
    finally:
        for name in (queue, f"{queue}.dlq"):
            broker.delete_queue(name)


@pytest.mark.scenario
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_two_push_sender_replicas_send_each_push_once_through_a_partition(
    rabbit_proxy: ProxiedBroker, broker: Broker, redis_url: str, anyio_backend: str
) -> None:
    """Replica A reaches RabbitMQ through the fault proxy, replica B directly; both share
    Redis (WARREN_DEDUP_URL). A's link goes silent while it holds its prefetch window: the
    pushes whose acks the cut ate come back to B, which finds them done and does not send
    them again. 0 lost, 0 duplicates at the provider."""
    s = Stack(rabbit_proxy.direct_url, WARREN_DEDUP_URL=redis_url, WARREN_PUSH_CONCURRENCY="1",
              WARREN_HEARTBEAT="1")  # fmt: skip
    n = 300
    try:
        async with running(fake_push_provider.service, s.env):
            await wait_http(f"{s.fake}/received")
            await s.faults(latency_ms=10)
            broker.declare_queue(s.queue, durable=True, arguments={"x-queue-type": "quorum"})
            for i in range(n):
                job = {"message_id": f"p{i}", "to": "device", "title": "t", "body": "b",
                       "data": {}}  # fmt: skip
                broker.publish(s.queue, json.dumps(job).encode(), message_id=f"p{i}")
            a_env = {**s.env, "WARREN_AMQP_URL": rabbit_proxy.url}
            async with running(push_sender.service, a_env) as a, running(push_sender.service,
                                                                          s.env):  # fmt: skip
                await s.wait_received(30)
                async with partition(rabbit_proxy.proxy):
                    await wait_until(
                        lambda: a.metrics.consumers()["push-sender"].connected is False,
                        within=10,
                    )
                    await anyio.sleep(1.0)  # the cut outlasts the detection
                got = await s.wait_received(n, within=60)
                await wait_until(lambda: broker.depth(s.queue) == 0, within=30)
        assert got["distinct"] == n
        assert got["duplicates"] == 0, got["duplicates"]
    finally:
        s.cleanup(broker)
