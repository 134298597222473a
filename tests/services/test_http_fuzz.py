"""Pathological requests to every HTTP endpoint Warren serves: the api, the ops server and
the fault proxy's API. Deep nesting, 1e999, NaN, lone surrogates, wrong types, oversized
bodies: each is a 4xx, never a 500, and the server keeps answering.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.support.broker import Broker
from tests.support.helpers import free_port, running, wait_http
from warren import Metrics, OpsServer
from warren.testing import fault_proxy_in_thread
from warren_services import api

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(180)

NASTY = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"from": "a", "to": "b", "text": 1e999}',
    b'{"from": NaN, "to": "b", "text": "c"}',
    b'{"from": "a", "to": "b", "text": Infinity}',
    b'{"from": "\\ud800", "to": "b", "text": "c"}',
    b'{"from": "a", "to": "\\udfff\\ud800", "text": "c"}',
    b'{"from": 1, "to": ["b"], "text": {"c": null}}',
    b'{"from": "a", "to": "' + b"x" * 500_000 + b'", "text": "c"}',
    b'{"name": 5, "listen": [], "upstream": {"x": 1}}',
    b'{"type": "latency", "attributes": "not a dict"}',
    b'{"type": "latency", "attributes": {"latency": "slow"}, "toxicity": "x"}',
    b"\xff\xfe\x00garbage",
    b'"just a string"',
    b"null",
]
BODIES = st.one_of(
    st.sampled_from(NASTY),
    st.binary(max_size=200),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                  st.floats(allow_nan=False, allow_infinity=False)),
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=20,
    ).map(lambda v: json.dumps(v).encode()),
)  # fmt: skip


def _check(status: int) -> None:
    assert status < 500, f"status {status}"


@pytest.fixture(scope="module")
def proxy_api() -> Iterator[str]:
    with fault_proxy_in_thread() as server:
        yield f"http://127.0.0.1:{server.port}"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=BODIES, path=st.sampled_from(["/proxies", "/populate", "/proxies/p/toxics",
                                          "/proxies/p"]))  # fmt: skip
def test_the_fault_proxy_api_refuses_bad_bodies_and_lives(
    proxy_api: str, body: bytes, path: str
) -> None:
    with httpx.Client(base_url=proxy_api, timeout=10) as client:
        client.post("/proxies", json={"name": "p", "listen": "127.0.0.1:0",
                                      "upstream": "127.0.0.1:1"})  # fmt: skip
        _check(client.post(path, content=body).status_code)
        assert client.get("/version").status_code == 200  # still serving
        client.post("/reset")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_ops_server_refuses_bad_and_oversized_requests() -> None:
    metrics = Metrics(CollectorRegistry())
    async with OpsServer(metrics, "127.0.0.1:0") as ops:
        base = f"http://127.0.0.1:{ops.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for body in NASTY:
                _check((await client.post("/metrics", content=body)).status_code)
            too_big = await client.post("/healthz", content=b"x" * (2 * 1024 * 1024))
            assert too_big.status_code == 413
            assert (await client.get("/metrics")).status_code == 200


@pytest.mark.broker
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_api_answers_4xx_to_pathological_bodies(
    broker_url: str, tmp_path: object
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    queue = f"warren.test.fuzz.{uuid.uuid4().hex[:8]}"  # fresh: nothing left by other runs
    env = {"WARREN_AMQP_URL": broker_url, "WARREN_API_ADDR": addr,
           "WARREN_API_DB": f"{tmp_path}/api.sqlite3",
           "WARREN_PUSH_QUEUE": queue}  # fmt: skip
    async with running(api.service, env), httpx.AsyncClient(timeout=30) as client:
        await wait_http(f"http://{addr}/messages/none")
        for body in NASTY:
            r = await client.post(f"http://{addr}/messages", content=body)
            _check(r.status_code)
            assert r.status_code in (400, 413, 422), (body[:60], r.status_code, r.text[:200])
        over = await client.post(f"http://{addr}/messages", content=b" " * 70_000)
        assert over.status_code == 413
        try:  # refused on its Content-Length, unread: a 413, or a reset while still sending
            huge = await client.post(f"http://{addr}/messages", content=b" " * (8 << 20))
            assert huge.status_code == 413
        except httpx.TransportError:
            pass
        ok = await client.post(f"http://{addr}/messages",
                               json={"from": "a", "to": "b", "text": "still serving"})  # fmt: skip
        assert ok.status_code == 202
    with Broker(broker_url) as broker:
        for name in (queue, f"{queue}.dlq"):
            broker.delete_queue(name)
