"""The services over TLS with a client certificate: api -> RabbitMQ (amqps, EXTERNAL) ->
push-sender -> provider, every message pushed once; no secret in what they print."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.services.test_services import Stack, all_three, post

if TYPE_CHECKING:
    from warren.testing import RabbitTlsNode

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


async def test_the_services_over_tls_log_in_with_a_client_certificate(
    rabbit_tls_node: RabbitTlsNode, caplog: pytest.LogCaptureFixture
) -> None:
    node = rabbit_tls_node
    locked = node.issue_client("warren-client", password="passphrase-never-logged")
    assert locked.key_password_file is not None
    stack = Stack(
        node.tls_url(password=False),
        WARREN_AMQP_CA_FILE=str(node.ca_file),
        WARREN_AMQP_CERT_FILE=str(locked.cert),
        WARREN_AMQP_KEY_FILE=str(locked.key),
        WARREN_AMQP_KEY_PASSWORD_FILE=str(locked.key_password_file),
    )
    caplog.set_level(logging.DEBUG)
    n = 50
    async with all_three(stack) as (_sender, api_ctx), httpx.AsyncClient() as client:
        ids = [(await post(client, stack))["id"] for _ in range(n)]
        got = await stack.wait_received(n, within=30)
        logins = node.node.ctl("list_connections", "user", "auth_mechanism", "ssl", "port")
        api_node = api_ctx.metrics.publishers()["api"].node
    assert got["distinct"] == n and got["duplicates"] == 0
    assert set(got["ids"]) == {f"push-{i}" for i in ids}
    rows = [line.split() for line in logins.splitlines()[2:] if line.strip()]  # after the header
    assert rows and all(r[:3] == ["warren-client", "EXTERNAL", "true"] for r in rows), logins
    assert api_node == f"127.0.0.1:{node.tls_port}"
    assert "passphrase-never-logged" not in caplog.text
