"""Warren's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures for testing your own workers against partitions:

- ``warren_amqp_url``: the broker (``WARREN_TEST_AMQP_URL``, default the local one). Missing
  broker: skip, except under ``CI=true``, where it fails.
- ``fault_proxy_server``: a ``ToxiproxyClient`` for a fault proxy server: Warren's own, run in
  a background thread, or a real Toxiproxy if ``WARREN_TOXIPROXY_URL`` is set.
- ``rabbit_proxy``: a fresh proxy in front of the broker; a ``ProxiedBroker`` with the AMQP
  ``url`` that goes through it and the ``proxy`` to inject faults on.
- ``rabbit_node``: a throwaway RabbitMQ node (session-scoped) for destructive tests.
- ``rabbit_cluster``: a throwaway three-node cluster (session-scoped) with a fault proxy in
  front of each node; a ``ProxiedCluster``.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import pytest

from warren._config.connection import DEFAULT_PORTS, node_address
from warren.testing._client import ProxyHandle, ToxiproxyClient
from warren.testing._proxy_api import run_in_thread
from warren.testing._rabbit_cluster import RabbitCluster
from warren.testing._rabbit_node import RabbitNode
from warren.testing._rabbit_tls import RabbitTlsNode

if TYPE_CHECKING:
    from collections.abc import Iterator

DEFAULT_TEST_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True)
class ProxiedBroker:
    """The broker behind a fault proxy."""

    url: str  # AMQP URL through the proxy: give this to the worker under test
    direct_url: str  # straight to the broker: for the test's own independent checks
    proxy: ProxyHandle


@dataclass(frozen=True)
class ProxiedCluster:
    """A throwaway cluster with a fault proxy in front of each node (in node order)."""

    cluster: RabbitCluster
    proxies: list[ProxyHandle]

    @property
    def urls(self) -> list[str]:
        """AMQP URLs through the proxies: give these to the worker under test."""
        return [p.amqp_url() for p in self.proxies]

    @property
    def direct_urls(self) -> list[str]:
        """Straight to the nodes: for the test's own independent checks."""
        return self.cluster.urls

    def index_of(self, address: str) -> int:
        """Which node (its index) a proxy or node address (``host:port``) leads to; a
        worker's ``statistics().node`` is such an address."""
        for i, proxy in enumerate(self.proxies):
            if address == f"{proxy.host}:{proxy.port}":
                return i
        return self.cluster.nodes.index(self.cluster.node_at(address))


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def warren_amqp_url() -> str:
    url = os.environ.get("WARREN_TEST_AMQP_URL", DEFAULT_TEST_URL)
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 5672)
    if not _answers(host, port):
        if os.environ.get("CI") == "true":
            pytest.fail(f"RabbitMQ is not answering on {host}:{port} (CI requires it)")
        pytest.skip(f"RabbitMQ is not answering on {host}:{port} (outside CI, so skipping)")
    return url


@pytest.fixture(scope="session")
def fault_proxy_server() -> Iterator[ToxiproxyClient]:
    external = os.environ.get("WARREN_TOXIPROXY_URL")
    if external:
        client = ToxiproxyClient(external)
        client.reset()
        yield client
        return
    with run_in_thread() as server:
        yield ToxiproxyClient(server.api_url)


@pytest.fixture
def rabbit_proxy(
    fault_proxy_server: ToxiproxyClient, warren_amqp_url: str
) -> Iterator[ProxiedBroker]:
    parts = urlsplit(warren_amqp_url)
    upstream = node_address(warren_amqp_url) or "127.0.0.1:5672"
    name = f"rabbitmq-{uuid.uuid4().hex[:8]}"
    info = fault_proxy_server.create_proxy(name, upstream, "127.0.0.1:0")
    handle = ProxyHandle(fault_proxy_server, name, "127.0.0.1", info.port)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{info.port}" if userinfo else f"127.0.0.1:{info.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    try:
        yield ProxiedBroker(url=url, direct_url=warren_amqp_url, proxy=handle)
    finally:
        fault_proxy_server.delete_proxy(name)


@pytest.fixture(scope="session")
def rabbit_node() -> Iterator[RabbitNode]:
    with RabbitNode() as node:
        yield node


@pytest.fixture(scope="session")
def rabbit_tls_node() -> Iterator[RabbitTlsNode]:
    """A throwaway node with a TLS listener, its own CA and a client certificate (needs the
    ``testing`` extra for the certificates): ``rabbit_tls_node.tls_url()``,
    ``TlsConfig(ca_file=str(rabbit_tls_node.ca_file))``."""
    with RabbitTlsNode() as node:
        yield node


@pytest.fixture(scope="session")
def rabbit_cluster(fault_proxy_server: ToxiproxyClient) -> Iterator[ProxiedCluster]:
    with RabbitCluster() as cluster:
        names = [f"cluster-{uuid.uuid4().hex[:8]}" for _ in cluster.nodes]
        proxies = []
        for name, node in zip(names, cluster.nodes, strict=True):
            info = fault_proxy_server.create_proxy(name, f"{node.host}:{node.amqp_port}")
            proxies.append(ProxyHandle(fault_proxy_server, name, "127.0.0.1", info.port))
        try:
            yield ProxiedCluster(cluster, proxies)
        finally:
            for name in names:
                fault_proxy_server.delete_proxy(name)
