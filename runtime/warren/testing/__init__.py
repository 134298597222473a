"""Warren's test kit (public API): test workers against real failures.

- A fault proxy with Toxiproxy's HTTP API (``FaultProxyServer``, ``fault_proxy_in_thread``,
  ``warren proxy``) and a client for it or a real Toxiproxy (``ToxiproxyClient``).
- ``partition()`` / ``link_down()``: a silent partition or a downed link, as context managers.
- ``delete_queues()``: clean up the queues a test or demo declared.
- ``RabbitNode``: a throwaway RabbitMQ node for destructive tests; ``RabbitCluster``: several
  of them joined into one cluster (quorum queues, failover, partitions); ``RabbitTlsNode``:
  one with a TLS listener, its own CA and client certificates (``TestCA`` makes more).
- ``FakeLinks`` / ``FakeLink``: pass ``connection=FakeLinks()`` to a ``Publisher`` or
  ``Consumer`` and play the broker from the test (connects, losses, confirms, nacks,
  returns, deliveries) with no broker and no sockets.
- A pytest plugin with fixtures for all of these (``warren.testing.pytest_plugin``).
"""

from warren._amqp import delete_queues
from warren.testing._certs import CertFiles, TestCA
from warren.testing._client import (
    AsyncToxiproxyClient,
    ProxyHandle,
    ProxyInfo,
    ToxiproxyClient,
    ToxiproxyError,
    link_down,
    partition,
    partition_sync,
)
from warren.testing._fakes import FakeLink, FakeLinks
from warren.testing._proxy_api import FaultProxyServer
from warren.testing._proxy_api import run_in_thread as fault_proxy_in_thread
from warren.testing._rabbit_cluster import NodePlacement, RabbitCluster
from warren.testing._rabbit_node import RabbitNode, RabbitNodeError
from warren.testing._rabbit_tls import RabbitTlsNode

__all__ = [
    "AsyncToxiproxyClient",
    "CertFiles",
    "FakeLink",
    "FakeLinks",
    "FaultProxyServer",
    "NodePlacement",
    "ProxyHandle",
    "ProxyInfo",
    "RabbitCluster",
    "RabbitNode",
    "RabbitNodeError",
    "RabbitTlsNode",
    "TestCA",
    "ToxiproxyClient",
    "ToxiproxyError",
    "delete_queues",
    "fault_proxy_in_thread",
    "link_down",
    "partition",
    "partition_sync",
]
