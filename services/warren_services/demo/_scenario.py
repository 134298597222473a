"""The incident, run: API -> fault proxy -> RabbitMQ -> push sender -> fake provider, under a
steady load, with the API's link silently cut for a while and healed.

Every service runs in this process with its own metrics registry, as ``warren run`` would run
it; the demo reads their registries (what ``/metrics`` would say) and the fake provider's
record of what it received. Nothing here is mocked but the push provider's cloud.
"""

from __future__ import annotations

import math
import shutil
import socket
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
from prometheus_client import CollectorRegistry

from warren import BrokerError, Metrics, PublisherConfig, ServiceContext
from warren.testing import (
    AsyncToxiproxyClient,
    FaultProxyServer,
    ProxyHandle,
    delete_queues,
    partition,
)
from warren_services import api, fake_push_provider, push_sender

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """The run's shape (seconds, and POSTs per second)."""

    duration: float = 60.0  # of load; draining comes after
    partition_at: float = 20.0
    partition_seconds: float = 15.0
    rate: float = 50.0
    heartbeat: int = 5
    drain_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.partition_at <= 0 or self.partition_at + self.partition_seconds >= self.duration:
            raise ValueError("the partition must start after 0 and end before the load does")
        if self.rate <= 0 or self.partition_seconds <= 0:
            raise ValueError("rate and partition length must be > 0")


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the load started
    accepted: int  # POSTs answered 202
    depth: int  # the API's buffer: accepted, not yet confirmed by the broker
    up: bool  # the API's link to the broker
    reconnects: int
    delivered: int  # distinct pushes the provider received
    duplicates: int
    dropped: int  # jobs the API's publisher gave up on (lost, counted)


@dataclass
class Run:
    """What happened, for the view and the report."""

    config: DemoConfig
    broker: str
    queue: str
    phase: str = "starting"
    samples: list[Sample] = field(default_factory=list)
    requests: list[tuple[float, float, int]] = field(default_factory=list)  # sent, s, status
    accepted_ids: list[str] = field(default_factory=list)
    delivered_ids: set[str] = field(default_factory=set)
    partition_start: float | None = None
    partition_end: float | None = None
    load_end: float | None = None
    drained: float | None = None
    cleanup_error: str | None = None

    @property
    def last(self) -> Sample | None:
        return self.samples[-1] if self.samples else None


async def run_scenario(config: DemoConfig, broker_url: str, on_sample: Callable[[Run], None],
                       *, origin: str = "") -> Run:  # fmt: skip
    """Run the incident once; return what happened. Cleans up its queues and files."""
    queue = f"warren.demo.{uuid.uuid4().hex[:8]}"
    run = Run(config, origin or _host(broker_url), queue)
    workdir = Path(tempfile.mkdtemp(prefix="warren-demo-"))
    proxy_server = FaultProxyServer("127.0.0.1", 0)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(proxy_server.serve)
            proxy = await _proxy_to(proxy_server, broker_url)
            env = _env(config, broker_url, queue, workdir)
            api_env = {**env, "WARREN_AMQP_URL": _through(broker_url, proxy)}
            contexts = [_context(env), _context(env), _context(api_env)]
            services = (fake_push_provider.service, push_sender.service, api.service)
            async with anyio.create_task_group() as running:
                for service, ctx in zip(services, contexts, strict=True):
                    running.start_soon(service.main, ctx)
                await _wait_http(f"http://{env['WARREN_FAKE_PUSH_ADDR']}/received")
                await _wait_http(f"http://{env['WARREN_API_ADDR']}/messages/none")
                await _drive(run, config, contexts, proxy, env, on_sample)
                for ctx in reversed(contexts):  # the api first: it flushes what it holds
                    ctx.stopping.set()
            tg.cancel_scope.cancel()  # the proxy
    finally:
        with anyio.CancelScope(shield=True):  # a cancelled run cleans up too
            run.cleanup_error = await anyio.to_thread.run_sync(
                _cleanup, broker_url, queue_names(queue), workdir
            )
    return run


async def _drive(run: Run, config: DemoConfig, contexts: list[ServiceContext],
                 proxy: ProxyHandle, env: Mapping[str, str],
                 on_sample: Callable[[Run], None]) -> None:  # fmt: skip
    api_metrics = contexts[2].metrics.registry
    provider = f"http://{env['WARREN_FAKE_PUSH_ADDR']}/received"
    post_url = f"http://{env['WARREN_API_ADDR']}/messages"
    start = anyio.current_time()

    def now() -> float:
        return anyio.current_time() - start

    async with httpx.AsyncClient(timeout=30) as client, anyio.create_task_group() as tg:

        async def sample() -> None:
            got = (await client.get(provider)).json()
            run.delivered_ids = set(got["ids"])
            run.samples.append(Sample(
                t=now(), accepted=len(run.accepted_ids),
                depth=int(_value(api_metrics, "warren_buffer_depth")),
                up=_value(api_metrics, "warren_connection_up") == 1,
                reconnects=int(_value(api_metrics, "warren_reconnects_total")),
                delivered=int(got["distinct"]), duplicates=int(got["duplicates"]),
                dropped=int(_sum(api_metrics, "warren_jobs_dropped_total")),
            ))  # fmt: skip
            on_sample(run)

        async def sampling() -> None:
            while True:
                await sample()
                await anyio.sleep(0.25)

        async def post(seq: int) -> None:
            sent = now()
            body = {"from": "demo", "to": f"device-{seq % 97}", "text": f"message {seq}"}
            try:
                r = await client.post(post_url, json=body)
            except httpx.HTTPError:
                run.requests.append((sent, now() - sent, 0))
                return
            run.requests.append((sent, now() - sent, r.status_code))
            if r.status_code == 202:
                run.accepted_ids.append(str(r.json()["id"]))

        async def load() -> None:
            async with anyio.create_task_group() as posts:
                for seq in range(math.floor(config.duration * config.rate)):
                    await _sleep_until(start + seq / config.rate)
                    posts.start_soon(post, seq)
            run.load_end = now()

        async def fault() -> None:
            run.phase = "steady"
            await _sleep_until(start + config.partition_at)
            async with partition(proxy):
                run.partition_start, run.phase = now(), "partition"
                await _sleep_until(start + config.partition_at + config.partition_seconds)
            run.partition_end, run.phase = now(), "healed: flushing"

        tg.start_soon(sampling)
        tg.start_soon(fault)
        await load()
        run.phase = "draining"
        with anyio.move_on_after(config.drain_timeout):
            while not _drained(run):  # noqa: ASYNC110 - the provider is polled over HTTP
                await anyio.sleep(0.1)
        await sample()
        run.drained = now() if _drained(run) else None
        run.phase = "done"
        on_sample(run)
        tg.cancel_scope.cancel()


def _drained(run: Run) -> bool:
    last = run.last
    return (last is not None and last.depth == 0
            and {f"push-{i}" for i in run.accepted_ids} <= run.delivered_ids)  # fmt: skip


async def _sleep_until(deadline: float) -> None:
    await anyio.sleep(max(0.0, deadline - anyio.current_time()))


def _context(env: Mapping[str, str]) -> ServiceContext:
    return ServiceContext(env=env, metrics=Metrics(CollectorRegistry()),
                          publisher_config=PublisherConfig.from_env(env))  # fmt: skip


def _env(config: DemoConfig, broker_url: str, queue: str, workdir: Path) -> dict[str, str]:
    fake = f"127.0.0.1:{_free_port()}"
    return {
        "WARREN_AMQP_URL": broker_url,
        "WARREN_HEARTBEAT": str(config.heartbeat),
        "WARREN_PUSH_QUEUE": queue,
        "WARREN_PUSH_INVALID_TOKENS_QUEUE": f"{queue}.invalid_tokens",
        "WARREN_FAKE_PUSH_ADDR": fake,
        "WARREN_PUSH_PROVIDER_URL": f"http://{fake}/webhook",
        "WARREN_API_ADDR": f"127.0.0.1:{_free_port()}",
        "WARREN_API_DB": str(workdir / "api.sqlite3"),
    }


def queue_names(queue: str) -> list[str]:
    """Every queue the services declare for ``queue`` (push-sender's retry queues too)."""
    env = {"WARREN_PUSH_QUEUE": queue}
    ctx = _context(env)
    config = push_sender.consumer_config(ctx)
    retries = [f"{queue}.retry.{int(d * 1000)}ms" for d in config.retry_delays()]
    return [queue, f"{queue}.dlq", f"{queue}.invalid_tokens", *retries]


def _cleanup(broker_url: str, queues: list[str], workdir: Path) -> str | None:
    """Delete the run's queues and files; what went wrong, if anything (never raises: the
    run's own outcome matters more)."""
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        delete_queues(broker_url, queues)
    except BrokerError as exc:
        return f"could not delete the queues {', '.join(queues)}: {exc}"
    return None


async def _proxy_to(server: FaultProxyServer, broker_url: str) -> ProxyHandle:
    parts = urlsplit(broker_url)
    upstream = f"{parts.hostname}:{parts.port or 5672}"  # amqp:// only (checked before)
    client = AsyncToxiproxyClient(server.api_url)
    info = await client.create_proxy("warren-demo-api", upstream)
    return ProxyHandle(client.sync, "warren-demo-api", "127.0.0.1", info.port)


def _through(broker_url: str, proxy: ProxyHandle) -> str:
    """The broker URL (credentials, vhost, options) with the proxy as host and port."""
    parts = urlsplit(broker_url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@{proxy.host}:{proxy.port}" if auth else f"{proxy.host}:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_http(url: str, within: float = 30) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        with anyio.fail_after(within):
            while True:
                try:
                    if (await client.get(url)).status_code < 500:
                        return
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.05)


def _value(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name, {"worker": "api"}) or 0.0


def _sum(registry: CollectorRegistry, name: str) -> float:
    return sum(s.value for m in registry.collect() for s in m.samples
               if s.name == name and s.labels.get("worker") == "api")  # fmt: skip
