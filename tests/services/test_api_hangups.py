"""A client that hangs up mid-request is not an error (#34): counted in
``warren_http_client_gone_total{server="api"}``, logged at DEBUG, no traceback, and the api
goes on serving."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from tests.support.helpers import free_port, running, wait_http, wait_until
from warren_services import api

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


HEAD = b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    "sent",
    [
        HEAD + b"Content-Length: 1000\r\n\r\n" + b'{"from": "a", ',  # mid-body
        HEAD + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"fro',  # mid-chunk
    ],
    ids=["content-length", "chunked"],
)
async def test_a_client_hanging_up_mid_request_is_counted_not_an_error(
    broker_url: str,
    push_queue: str,
    tmp_path: Path,
    sent: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    env = {"WARREN_AMQP_URL": broker_url, "WARREN_API_ADDR": addr,
           "WARREN_API_DB": f"{tmp_path}/api.sqlite3", "WARREN_PUSH_QUEUE": push_queue}  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="warren.http")
    async with running(api.service, env) as ctx:
        await wait_http(f"http://{addr}/messages/none")
        registry = ctx.metrics.registry

        def gone() -> float:
            value = registry.get_sample_value("warren_http_client_gone_total", {"server": "api"})
            return value or 0.0

        for _ in range(3):
            client = await anyio.connect_tcp("127.0.0.1", int(addr.rsplit(":", 1)[1]))
            await client.send(sent)
            await client.aclose()
        await wait_until(lambda: gone() == 3, within=10)
        async with httpx.AsyncClient() as http:  # and it goes on serving
            r = await http.post(f"http://{addr}/messages", json={"from": "a", "to": "b",
                                                                "text": "hi"})  # fmt: skip
            assert r.status_code == 202, r.text
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not errors, [r.getMessage() for r in errors]
    assert not any(r.exc_info for r in caplog.records), "no traceback"
    gone_lines = [r for r in caplog.records if r.getMessage().startswith("http.client_gone")]
    assert len(gone_lines) == 3 and all(r.levelno == logging.DEBUG for r in gone_lines)
