"""The throwaway node's ports: outside the kernel's ephemeral range.

A client that keeps dialing a stopped node's port from an ephemeral port can, on Linux, be
given that very port as its source and connect to itself (TCP simultaneous open); the port is
then taken and the node cannot start again (seen in CI: ``eaddrinuse`` restarting a node while
the fault proxy retried its upstream). Ports below the ephemeral range are never handed out
as source ports, so a node's ports stay free for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from warren.testing import RabbitNode

pytestmark = pytest.mark.timeout(30)


def _ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_a_nodes_ports_are_never_a_clients_source_port() -> None:
    low, high = _ephemeral_range()
    for _ in range(20):
        node = RabbitNode()  # picks its ports; starts nothing
        try:
            for port in (node.amqp_port, node.dist_port):
                assert not low <= port <= high, f"port {port} is in the ephemeral range"
                assert port >= 1024
        finally:
            node.close()
