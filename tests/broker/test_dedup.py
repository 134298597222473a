"""Exactly-once effects: a deduplication store shared by the replicas (Redis), so a message
whose ack was lost in a partition, or whose worker died, runs its handler once.

Without a store, a consumer whose link is silently cut redelivers the acks it lost: the
prefetch window runs twice (measured: about 20 of them with prefetch 20). With the store,
the redelivered ones are acked as duplicates without running the handler.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.support.helpers import connection_settings, free_port, redis_server, wait_until
from warren import (
    Claim,
    ConfigError,
    ConnectionConfig,
    Consumer,
    ConsumerConfig,
    DedupUnavailable,
    MemoryDedupStore,
    Message,
    Metrics,
    RedisDedupStore,
)
from warren.testing import partition

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.broker import Broker
    from warren.testing.pytest_plugin import ProxiedBroker

pytestmark = [pytest.mark.timeout(90)]


@pytest.fixture
def prefix() -> str:
    return f"warren:test:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def dedup_queue(broker: Broker) -> Iterator[str]:
    name = f"warren.test.dedup.{uuid.uuid4().hex[:8]}"
    broker.declare_queue(name, durable=True)
    yield name
    for suffix in ("", ".dlq", ".retry.200ms", ".retry.400ms", ".retry.800ms", ".retry.1600ms"):
        broker.delete_queue(name + suffix)


# -- the stores --------------------------------------------------------------------------


async def _semantics(store: Any, key: str) -> None:
    assert await store.claim([key], 30) == [Claim.CLAIMED]
    assert await store.claim([key], 30) == [Claim.HELD]  # another worker's try
    await store.release(key)
    assert await store.claim([key], 30) == [Claim.CLAIMED]  # the retry can run
    await store.done([key], 60)
    assert await store.claim([key], 30) == [Claim.DONE]
    # many at once, each answered in order: new, done, held, new
    await store.claim([f"{key}-held"], 30)
    assert await store.claim([f"{key}-a", key, f"{key}-held", f"{key}-b"], 30) == [
        Claim.CLAIMED, Claim.DONE, Claim.HELD, Claim.CLAIMED]  # fmt: skip
    assert await store.claim([], 30) == []
    await store.done([f"{key}-a", f"{key}-b"], 60)
    assert await store.claim([f"{key}-b", f"{key}-a"], 30) == [Claim.DONE, Claim.DONE]


async def test_memory_store_semantics() -> None:
    now = [0.0]
    store = MemoryDedupStore(clock=lambda: now[0])
    await _semantics(store, "k")
    assert await store.claim(["lease"], 5) == [Claim.CLAIMED]
    now[0] = 6.0  # the worker died: its lease ran out
    assert await store.claim(["lease"], 5) == [Claim.CLAIMED]


async def test_redis_store_semantics_and_pipelining(redis_url: str, prefix: str) -> None:
    store = RedisDedupStore(redis_url, prefix=prefix)
    other = RedisDedupStore(redis_url, prefix=prefix)  # another replica
    try:
        await _semantics(store, "k")
        assert await store.claim(["mine"], 30) == [Claim.CLAIMED]
        await other.release("mine")  # not its claim: nothing happens
        assert await other.claim(["mine"], 30) == [Claim.HELD]
        assert await store.claim(["short"], 0.2) == [Claim.CLAIMED]
        await anyio.sleep(0.3)  # the lease's own clock is Redis's: let it pass
        assert await other.claim(["short"], 5) == [Claim.CLAIMED]
        # 500 concurrent calls: a handful of round trips, not 500
        before = store.round_trips
        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(store.claim, [f"many-{i}"], 30)
        assert store.round_trips - before < 50, store.round_trips - before
        # 1,000 keys in one call: one round trip
        before = store.round_trips
        claims = await store.claim([f"batch-{i}" for i in range(1000)], 30)
        assert claims == [Claim.CLAIMED] * 1000 and store.round_trips == before + 1
    finally:
        await store.aclose()
        await other.aclose()


async def test_a_malformed_claim_reply_fails_the_call_and_strands_no_caller(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply the store cannot read (a script that answers out of range) is
    DedupUnavailable for that call; the other calls of the round trip still get answers."""
    import warren._dedup.redis as module

    store = RedisDedupStore(redis_url, prefix=prefix)
    monkeypatch.setattr(module, "_CLAIM", "return {7}")
    results: list[object] = []

    async def call(op: str) -> None:
        try:
            results.append(await (store.claim(["x"], 5) if op == "claim" else store.done(["y"], 5)))
        except DedupUnavailable as exc:
            results.append(exc)

    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "claim")
                tg.start_soon(call, "done")
    finally:
        await store.aclose()
    assert sorted(map(type, results), key=str) == sorted([DedupUnavailable, type(None)], key=str)


async def test_one_str_is_not_taken_for_a_list_of_keys(redis_url: str, prefix: str) -> None:
    store = RedisDedupStore(redis_url, prefix=prefix)
    for s in (store, MemoryDedupStore()):
        with pytest.raises(TypeError, match="list of keys"):
            await s.claim("key", 5)  # the old one-key form
        with pytest.raises(TypeError, match="list of keys"):
            await s.done("key", 5)
    await store.aclose()


async def test_an_unreachable_store_raises_dedup_unavailable() -> None:
    store = RedisDedupStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(DedupUnavailable, match="redis"):
        await store.claim(["k"], 5)


def test_a_bad_redis_url_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="dedup_url"):
        RedisDedupStore("http://nope")


# -- the consumer --------------------------------------------------------------------------


def _config(url: str, queue: str, **kw: Any) -> ConsumerConfig:
    kw.setdefault("heartbeat", 1)
    link = {"backoff_base": 0.05, "backoff_cap": 0.5, **connection_settings(kw)}
    return ConsumerConfig(
        connection=ConnectionConfig(urls=url, **link),
        queue=queue,
        retry_base=0.2,
        **kw,
    )


async def _partitioned_run(
    rabbit_proxy: ProxiedBroker, broker: Broker, queue: str, store: Any, n: int = 400
) -> tuple[Counter[str], dict[str, int]]:
    """Two replicas (prefetch 20, one handler each, 10 ms per message) share a backlog of
    ``n``; replica A's link is silently cut for 4 s while it holds its window. Returns how
    often each id ran its handler (the "provider"), and the two replicas' outcomes."""
    effects: Counter[str] = Counter()

    async def handler(message: Message) -> None:
        await anyio.sleep(0.01)
        effects[str(message.message_id)] += 1

    for i in range(n):
        broker.publish(queue, f"{i}".encode(), message_id=f"m{i}")
    cfg = {"prefetch": 20, "concurrency": 1}
    a_cfg = _config(rabbit_proxy.url, queue, **cfg)
    b_cfg = _config(rabbit_proxy.direct_url, queue, **cfg)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    async with (
        Consumer(a_cfg, handler, metrics=metrics, name="a", dedup=store) as a,
        Consumer(b_cfg, handler, metrics=metrics, name="b", dedup=store) as b,
    ):
        await a.wait_connected()
        await b.wait_connected()
        await wait_until(lambda: len(effects) >= 40)
        async with partition(rabbit_proxy.proxy):
            await wait_until(lambda: not a.statistics().connected, within=10)
            await anyio.sleep(1.0)  # A's unacked window goes back to the queue meanwhile
        await wait_until(lambda: len(effects) == n, within=60)
        await wait_until(lambda: broker.depth(queue) == 0 and a.statistics().in_flight == 0
                         and b.statistics().in_flight == 0, within=30)  # fmt: skip
        outcomes: Counter[str] = Counter()
        for c in (a, b):
            outcomes.update(c.statistics().outcomes)
    return effects, dict(outcomes)


@pytest.mark.scenario
@pytest.mark.broker
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_partition_runs_no_handler_twice_with_the_store(
    rabbit_proxy: ProxiedBroker, broker: Broker, dedup_queue: str, redis_url: str, prefix: str
) -> None:
    store = RedisDedupStore(redis_url, prefix=prefix)
    try:
        effects, outcomes = await _partitioned_run(rabbit_proxy, broker, dedup_queue, store)
    finally:
        await store.aclose()
    assert len(effects) == 400  # nothing lost
    assert max(effects.values()) == 1, f"{sum(effects.values()) - 400} handled twice"
    assert outcomes["duplicate"] + outcomes["claimed_elsewhere"] >= 1, outcomes


@pytest.mark.scenario
@pytest.mark.broker
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_same_partition_without_a_store_runs_some_twice(
    rabbit_proxy: ProxiedBroker, broker: Broker, dedup_queue: str
) -> None:
    """The baseline the store removes: the acks the cut ate come back as redeliveries."""
    effects, _ = await _partitioned_run(rabbit_proxy, broker, dedup_queue, None)
    assert len(effects) == 400
    # measured here: 20, the prefetch window, every run
    assert sum(effects.values()) - 400 >= 10, "no duplicates: the scenario did not bite"


def _replica(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.support.dedup_child", *args],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.scenario
@pytest.mark.broker
async def test_a_replica_killed_mid_handler_is_completed_once_by_another(
    broker_url: str, broker: Broker, dedup_queue: str, redis_url: str, prefix: str
) -> None:
    """kill -9 while its handler runs: the claim outlives it, so the redelivery waits
    (claimed_elsewhere) until the lease expires, then the other replica runs it once."""
    child = _replica(broker_url, dedup_queue, redis_url, prefix)
    try:
        broker.publish(dedup_queue, b"block", message_id="the-one")
        with anyio.fail_after(30):
            line = await anyio.to_thread.run_sync(child.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == "claimed"
    finally:
        child.kill()  # SIGKILL: no release, no ack
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    runs: list[float] = []
    killed_at = time.monotonic()

    async def handler(message: Message) -> None:
        runs.append(time.monotonic() - killed_at)

    store = RedisDedupStore(redis_url, prefix=prefix)
    config = _config(broker_url, dedup_queue, handler_timeout=3.0)  # the same lease: 11 s
    try:
        async with Consumer(config, handler, metrics=Metrics(CollectorRegistry()),
                            dedup=store) as b:  # fmt: skip
            await wait_until(lambda: len(runs) == 1, within=30)
            await anyio.sleep(0.5)  # would it run again? (it must not)
            held = b.statistics().outcomes["claimed_elsewhere"]
    finally:
        await store.aclose()
    assert len(runs) == 1
    assert held >= 1, "the redelivery did not wait for the dead replica's claim"
    assert runs[0] >= 5, f"ran {runs[0]:.1f}s after the kill, before the lease ran out"


@pytest.mark.broker
@pytest.mark.parametrize("policy", ["at-least-once", "pause"])
async def test_a_store_unreachable_from_the_start(
    broker_url: str, broker: Broker, dedup_queue: str, policy: str, tmp_path: Any
) -> None:
    """``at-least-once``: handlers run, the failures are counted. ``pause``: nothing runs
    until the store answers; then everything does, once."""
    port = free_port()
    store = RedisDedupStore(f"redis://127.0.0.1:{port}/0", timeout=0.3)
    seen: Counter[str] = Counter()

    async def handler(message: Message) -> None:
        seen[str(message.message_id)] += 1

    config = _config(broker_url, dedup_queue, dedup_on_error=policy)
    async with Consumer(config, handler, metrics=Metrics(CollectorRegistry()),
                        dedup=store) as c:  # fmt: skip
        await c.wait_connected()
        for i in range(20):
            broker.publish(dedup_queue, b"x", message_id=f"u{i}")
        if policy == "at-least-once":
            await wait_until(lambda: len(seen) == 20)
            assert c.statistics().dedup_unavailable >= 20
        else:
            await wait_until(lambda: c.statistics().dedup_unavailable >= 3)
            assert not seen  # paused
            with redis_server(port, tmp_path):
                await wait_until(lambda: len(seen) == 20, within=30)
                await store.aclose()
    assert max(seen.values()) == 1


@pytest.mark.broker
async def test_redis_restarted_mid_run_loses_nothing(
    broker_url: str, broker: Broker, dedup_queue: str, tmp_path: Any
) -> None:
    port = free_port()
    seen: Counter[str] = Counter()

    async def handler(message: Message) -> None:
        seen[str(message.message_id)] += 1

    with redis_server(port, tmp_path) as server:
        store = RedisDedupStore(f"redis://127.0.0.1:{port}/0", timeout=0.5)
        async with Consumer(_config(broker_url, dedup_queue), handler,
                            metrics=Metrics(CollectorRegistry()), dedup=store) as c:  # fmt: skip
            await c.wait_connected()
            for i in range(100):
                broker.publish(dedup_queue, b"x", message_id=f"r{i}")
            await wait_until(lambda: len(seen) >= 50 or len(seen) == 100)
            server.restart()
            for i in range(100, 200):
                broker.publish(dedup_queue, b"x", message_id=f"r{i}")
            await wait_until(lambda: len(seen) == 200, within=30)
        await store.aclose()
    assert max(seen.values()) == 1


async def test_the_resp_reader_takes_replies_split_anywhere() -> None:
    """The hand-written RESP2 reader against replies cut at every byte boundary."""
    from warren._dedup.resp import RespConnection, RespError, encode

    wire = b"+OK\r\n$-1\r\n$4\r\ndone\r\n:1\r\n-ERR wrong\r\n*2\r\n$1\r\na\r\n:7\r\n$0\r\n\r\n"
    expected = [b"OK", None, b"done", 1, "ERR wrong", [b"a", 7], b""]
    assert encode("SET", b"k", 5) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"

    class Chunks:
        def __init__(self, data: bytes, size: int) -> None:
            self.chunks = [data[i : i + size] for i in range(0, len(data), size)]
            self.sent = b""

        async def send(self, data: bytes) -> None:
            self.sent += data

        async def receive(self, max_bytes: int = 65536) -> bytes:
            return self.chunks.pop(0)

        async def aclose(self) -> None:
            pass

    for size in range(1, len(wire) + 1):
        stream = Chunks(wire, size)
        conn = RespConnection(stream)  # type: ignore[arg-type]
        got = await conn.pipeline([encode("PING")] * len(expected))
        got = [str(r) if isinstance(r, RespError) else r for r in got]
        assert got == expected, size
