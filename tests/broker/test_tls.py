"""Workers over TLS, against a throwaway node with a TLS listener and a private CA (the test
kit's ``RabbitTlsNode``): what managed and most self-hosted brokers require."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.support.helpers import run_warren, wait_until
from warren import (
    ConnectionConfig,
    Consumer,
    ConsumerConfig,
    Message,
    Metrics,
    Publisher,
    PublisherConfig,
    TlsConfig,
    TlsRefused,
)
from warren.testing import RabbitTlsNode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from prometheus_client import CollectorRegistry

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def tls_node() -> Iterator[RabbitTlsNode]:
    with RabbitTlsNode() as node:
        yield node


def link(url: str, tls: TlsConfig) -> ConnectionConfig:
    return ConnectionConfig(urls=url, tls=tls, heartbeat=2, backoff_base=0.05, backoff_cap=0.5)


async def round_trip(
    url: str,
    tls: TlsConfig,
    registry: CollectorRegistry,
    n: int = 300,
    while_connected: Callable[[], None] = lambda: None,
) -> None:
    """``n`` jobs published over ``url`` and consumed back over it, each once."""
    queue = f"warren.tls.{uuid.uuid4().hex[:8]}"
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(str(message.message_id))

    metrics = Metrics(registry)
    consumer_config = ConsumerConfig(connection=link(url, tls), queue=queue)
    async with Consumer(consumer_config, handler, metrics=metrics, name="tls-in") as consumer:
        await consumer.wait_connected()
        config = PublisherConfig(connection=link(url, tls))
        async with Publisher(config, metrics=metrics, name="tls-out") as pub:
            await pub.wait_connected()
            await anyio.to_thread.run_sync(while_connected)
            assert pub.statistics().node == f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}"
            ids = {pub.submit({"i": i, "pad": "x" * 2000}, routing_key=queue) for i in range(n)}
            with anyio.fail_after(60):
                await pub.wait_flushed()
            assert pub.statistics().confirmed == n
        await wait_until(lambda: len(seen) >= n, within=60)
    assert sorted(seen) == sorted(ids)


async def test_publisher_and_consumer_over_tls_with_a_private_ca(
    tls_node: RabbitTlsNode, anyio_backend: str
) -> None:
    """The CA bundle is the setting's, not the system's; verification is on."""
    from prometheus_client import CollectorRegistry

    await round_trip(
        tls_node.tls_url(), TlsConfig(ca_file=str(tls_node.ca_file)), CollectorRegistry()
    )


async def test_a_client_certificate_logs_in_as_its_user_with_external(
    tls_node: RabbitTlsNode, anyio_backend: str
) -> None:
    """A URL with no user and a client certificate: RabbitMQ's EXTERNAL mechanism logs the
    worker in as the certificate's common name."""
    from prometheus_client import CollectorRegistry

    tls = TlsConfig(
        ca_file=str(tls_node.ca_file),
        cert_file=str(tls_node.client.cert),
        key_file=str(tls_node.client.key),
    )
    logins: list[str] = []

    def who() -> None:
        logins.append(tls_node.node.ctl("list_connections", "user", "auth_mechanism", "ssl"))

    await round_trip(tls_node.tls_url(password=False), tls, CollectorRegistry(),
                     while_connected=who)  # fmt: skip
    rows = [line.split() for line in logins[0].splitlines() if line.strip()]
    assert ["warren-client", "EXTERNAL", "true"] in rows, logins[0]


async def refused(url: str, tls: TlsConfig, caplog: pytest.LogCaptureFixture) -> TlsRefused:
    """The publisher's start fails for good with ``TlsRefused``: no retry, one log line."""
    from prometheus_client import CollectorRegistry

    caplog.set_level(logging.WARNING)
    config = PublisherConfig(connection=link(url, tls))

    async def start() -> None:
        async with Publisher(config, metrics=Metrics(CollectorRegistry()), name="tls-bad") as pub:
            await pub.wait_connected()

    with anyio.fail_after(20), pytest.raises(TlsRefused) as info:
        await start()
    lines = [r.getMessage() for r in caplog.records if "tls-bad" in r.getMessage()]
    assert len([x for x in lines if "connection.tls_refused" in x]) == 1, lines
    assert not [x for x in lines if "connection.failed" in x], "retried like a network error"
    assert "guest:guest" not in caplog.text
    return info.value


async def test_a_broker_certificate_from_an_unknown_ca_is_refused_for_good(
    tls_node: RabbitTlsNode, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the private CA (the system's trust store), verification fails: reported once
    with the host and the reason, final (exit code 6 for ``warren run``)."""
    exc = await refused(tls_node.tls_url(), TlsConfig(), caplog)
    assert "CERTIFICATE_VERIFY_FAILED" in exc.detail and "127.0.0.1" in exc.url


async def test_a_broker_certificate_for_another_host_is_refused(
    tls_node: RabbitTlsNode, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The certificate names localhost and 127.0.0.1; ``server_name`` says to expect
    another host: refused. With the right name, the same address connects."""
    wrong = TlsConfig(ca_file=str(tls_node.ca_file), server_name="broker.example.com")
    exc = await refused(tls_node.tls_url(), wrong, caplog)
    assert "broker.example.com" in exc.detail or "mismatch" in exc.detail.lower()
    from prometheus_client import CollectorRegistry

    right = TlsConfig(ca_file=str(tls_node.ca_file), server_name="localhost")
    await round_trip(tls_node.tls_url(), right, CollectorRegistry(), n=10)


async def test_a_client_certificate_the_broker_does_not_trust_is_refused_for_good(
    tls_node: RabbitTlsNode, anyio_backend: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The broker verifies client certificates: one signed by another CA ends in its TLS
    alert, final as well."""
    stranger = tls_node.other_ca().issue("stranger", client=True)
    tls = TlsConfig(ca_file=str(tls_node.ca_file), cert_file=str(stranger.cert),
                    key_file=str(stranger.key))  # fmt: skip
    exc = await refused(tls_node.tls_url(password=False), tls, caplog)
    assert "ALERT" in exc.detail.upper(), exc.detail


async def test_verification_turned_off_connects_and_says_so_loudly(
    tls_node: RabbitTlsNode, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``verify=False`` (``WARREN_AMQP_TLS_VERIFY=off``): the unknown CA is accepted, and
    every worker start logs a warning saying the broker is not verified."""
    from prometheus_client import CollectorRegistry

    caplog.set_level(logging.WARNING)
    await round_trip(tls_node.tls_url(), TlsConfig(verify=False), CollectorRegistry(), n=10)
    warnings = [r for r in caplog.records if "tls.verify_off" in r.getMessage()]
    assert warnings and all(r.levelno == logging.WARNING for r in warnings)


def test_warren_run_exits_6_on_a_refused_certificate_and_2_on_a_bad_file(
    tls_node: RabbitTlsNode, tmp_path: Path
) -> None:
    """The process's view: a certificate refused is exit code 6, one line naming the host
    and the reason; a TLS file that is not one is exit code 2 naming the variable and path."""
    env = {"WARREN_AMQP_URL": tls_node.tls_url(), "WARREN_HEARTBEAT": "2"}
    done = run_warren("run", "demo-publisher", env={**env, "WARREN_DEMO_JOBS": "1"})
    assert done.returncode == 6, done.stderr[-2000:]
    assert done.stderr.count("connection.tls_refused") == 1
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr and "guest:guest" not in done.stderr
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate")
    done = run_warren("run", "demo-publisher", env={**env, "WARREN_AMQP_CA_FILE": str(junk)})
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"WARREN_AMQP_CA_FILE: {junk} holds no PEM certificate" in done.stderr
    good = {**env, "WARREN_AMQP_CA_FILE": str(tls_node.ca_file), "WARREN_DEMO_JOBS": "5"}
    done = run_warren("run", "demo-publisher", env=good)
    assert done.returncode == 0, done.stderr[-2000:]
