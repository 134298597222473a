"""Workers over TLS, against a throwaway node with a TLS listener and a private CA (the test
kit's ``RabbitTlsNode``): what managed and most self-hosted brokers require."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.support.helpers import run_warren, wait_until
from warren import (
    AccessRefused,
    BrokerError,
    ConnectionConfig,
    Consumer,
    ConsumerConfig,
    Message,
    Metrics,
    Publisher,
    PublisherConfig,
    Queue,
    TlsConfig,
    TlsRefused,
    Topology,
    redact_url,
)
from warren.testing import ProxyHandle, RabbitTlsNode, ToxiproxyClient, delete_queues, partition

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from prometheus_client import CollectorRegistry

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


@pytest.fixture
def tls_node(rabbit_tls_node: RabbitTlsNode) -> RabbitTlsNode:
    """The test kit's session-wide TLS node (its public fixture)."""
    return rabbit_tls_node


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


async def test_a_silent_partition_over_tls_is_noticed_healed_and_loses_nothing(
    tls_node: RabbitTlsNode, fault_proxy_server: ToxiproxyClient, anyio_backend: str
) -> None:
    """The fault proxy between the worker and the TLS port blackholes the link (no FIN, no
    RST) while jobs keep coming: noticed within heartbeat + 1 s, every job confirmed after
    the heal, and the queue holds each one once."""
    from prometheus_client import CollectorRegistry

    name = f"tls-{uuid.uuid4().hex[:8]}"
    info = fault_proxy_server.create_proxy(name, f"127.0.0.1:{tls_node.tls_port}", "127.0.0.1:0")
    proxy = ProxyHandle(fault_proxy_server, name, "127.0.0.1", info.port)
    queue = f"warren.tls.cut.{uuid.uuid4().hex[:8]}"
    url = f"amqps://guest:guest@127.0.0.1:{info.port}/%2F"
    tls = TlsConfig(ca_file=str(tls_node.ca_file))
    link = ConnectionConfig(urls=url, tls=tls, heartbeat=1, backoff_base=0.05, backoff_cap=0.3)
    config = PublisherConfig(connection=link)
    topology = Topology(queues=(Queue(name=queue),))
    try:
        async with Publisher(config, metrics=Metrics(CollectorRegistry()), name="tls-cut",
                             topology=topology) as pub:  # fmt: skip
            await pub.wait_connected()
            ids = {pub.submit({"i": i}, routing_key=queue) for i in range(100)}
            async with partition(proxy):
                ids |= {pub.submit({"i": i}, routing_key=queue) for i in range(100, 300)}
                # noticed within heartbeat 1 + 1 s (with room for a busy machine)
                await wait_until(lambda: not pub.statistics().connected, within=5)
            with anyio.fail_after(30):
                await pub.wait_flushed()
            stats = pub.statistics()
        assert stats.confirmed == 300 and stats.reconnects >= 1 and stats.buffer_depth == 0
        depth = await anyio.to_thread.run_sync(queue_depth, tls_node, queue)
        assert depth >= 300 and len(ids) == 300
    finally:
        fault_proxy_server.delete_proxy(name)
        await anyio.to_thread.run_sync(lambda: tls_node.node.ctl("delete_queue", queue))


def queue_depth(node: RabbitTlsNode, queue: str) -> int:
    rows = node.node.ctl("list_queues", "name", "messages")
    for line in rows.splitlines():
        parts = line.split()
        if parts and parts[0] == queue:
            return int(parts[1])
    raise AssertionError(f"no queue {queue}: {rows}")


@pytest.fixture(scope="module")
def strict_tls12_node() -> Iterator[RabbitTlsNode]:
    """TLS 1.2 only, a client certificate required, no EXTERNAL login."""
    with RabbitTlsNode(require_client_cert=True, external=False, tls_versions=["tlsv1.2"]) as n:
        yield n


@pytest.mark.scenario  # a node of its own (TLS 1.2 only): make scenarios
async def test_over_tls_1_2_a_missing_client_certificate_is_refused_for_good(
    strict_tls12_node: RabbitTlsNode, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """TLS 1.2 brokers refuse a missing certificate with a bare HANDSHAKE_FAILURE alert (1.3
    has CERTIFICATE_REQUIRED): final too, not retried forever."""
    tls = TlsConfig(ca_file=str(strict_tls12_node.ca_file))
    exc = await refused(strict_tls12_node.tls_url(), tls, caplog)
    assert "HANDSHAKE_FAILURE" in exc.detail


@pytest.mark.scenario  # a node of its own (TLS 1.2 only): make scenarios
async def test_a_client_certificate_login_the_broker_does_not_offer_is_final_with_a_hint(
    strict_tls12_node: RabbitTlsNode, anyio_backend: str
) -> None:
    """A password-less URL with a certificate asks for EXTERNAL; a broker without it is a
    setting to fix (AccessRefused, exit 4), said with what to do."""
    from prometheus_client import CollectorRegistry

    node = strict_tls12_node
    tls = TlsConfig(ca_file=str(node.ca_file), cert_file=str(node.client.cert),
                    key_file=str(node.client.key))  # fmt: skip
    config = PublisherConfig(connection=link(node.tls_url(password=False), tls))

    async def start() -> None:
        async with Publisher(config, metrics=Metrics(CollectorRegistry()), name="no-ext") as pub:
            await pub.wait_connected()

    with anyio.fail_after(20), pytest.raises(AccessRefused) as info:
        await start()
    assert not isinstance(info.value, TlsRefused)
    assert "rabbitmq_auth_mechanism_ssl" in str(info.value)


async def test_delete_queues_reaches_a_tls_broker_with_the_workers_settings(
    tls_node: RabbitTlsNode, anyio_backend: str
) -> None:
    """The clean-up helper takes the same ``TlsConfig``; without the private CA it is
    refused, and says so without the URL's password."""
    from prometheus_client import CollectorRegistry

    queue = f"warren.tls.delete.{uuid.uuid4().hex[:8]}"
    tls = TlsConfig(ca_file=str(tls_node.ca_file))
    config = PublisherConfig(connection=link(tls_node.tls_url(), tls))
    topology = Topology(queues=(Queue(name=queue),))
    async with Publisher(config, metrics=Metrics(CollectorRegistry()), topology=topology) as pub:
        await pub.wait_connected()
    with pytest.raises(BrokerError) as info:
        await anyio.to_thread.run_sync(lambda: delete_queues(tls_node.tls_url(), [queue]))
    assert "guest:guest" not in str(info.value)
    assert queue in tls_node.node.ctl("list_queues", "name")
    await anyio.to_thread.run_sync(lambda: delete_queues(tls_node.tls_url(), [queue], tls=tls))
    assert queue not in tls_node.node.ctl("list_queues", "name")


@contextlib.contextmanager
def impostor(tls_node: RabbitTlsNode) -> Iterator[str]:
    """A TLS server on loopback whose certificate a CA the worker does not trust signed (a
    node with the wrong certificate): yields its ``amqps://`` URL."""
    files = tls_node.other_ca().issue("impostor", hosts=("127.0.0.1", "localhost"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"amqps://guest:guest@127.0.0.1:{listener.getsockname()[1]}/%2F"
    finally:
        stop.set()
        thread.join(10)
        listener.close()


async def test_one_node_whose_certificate_is_refused_does_not_stop_the_worker(
    tls_node: RabbitTlsNode, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Certificates are per node: a cluster URL list whose first node presents a certificate
    we refuse goes on to the next node (a warning), and the jobs flow there."""
    from prometheus_client import CollectorRegistry

    caplog.set_level(logging.WARNING)
    tls = TlsConfig(ca_file=str(tls_node.ca_file))
    with impostor(tls_node) as bad:
        await round_trip(f"{bad},{tls_node.tls_url()}", tls, CollectorRegistry(), n=20)
    failed = [r.getMessage() for r in caplog.records if "connection.failed" in r.getMessage()]
    assert failed and "certificate refused (other nodes left to try)" in failed[0], failed
    assert "CERTIFICATE_VERIFY_FAILED" in failed[0]
    assert "connection.tls_refused" not in caplog.text


async def test_every_node_refusing_its_certificate_is_final(
    tls_node: RabbitTlsNode, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """When each node's last try was a refused certificate, the worker stops for good, as
    with one node: one ``connection.tls_refused`` line (after one retried failure)."""
    from prometheus_client import CollectorRegistry

    caplog.set_level(logging.WARNING)
    tls = TlsConfig(ca_file=str(tls_node.ca_file))
    with impostor(tls_node) as first, impostor(tls_node) as second:
        config = PublisherConfig(connection=link(f"{first},{second}", tls))
        with anyio.fail_after(20), pytest.raises(TlsRefused) as info:
            async with Publisher(config, metrics=Metrics(CollectorRegistry()),
                                 name="tls-all") as pub:  # fmt: skip
                await pub.wait_connected()
    lines = [r.getMessage() for r in caplog.records if "tls-all" in r.getMessage()]
    assert len([x for x in lines if "connection.tls_refused" in x]) == 1, lines
    assert len([x for x in lines if "connection.failed" in x]) == 1, lines
    assert info.value.url == redact_url(second)
