"""A throwaway RabbitMQ cluster: ``RabbitNode``s sharing an Erlang cookie, joined into one.

Failover tests need what production has: several nodes, quorum queues replicated across them,
and a partition-handling mode. The nodes start in parallel, then each joins the first one with
``rabbitmqctl join_cluster``; ``close()`` stops them and deletes their files. On loopback (the
default) it needs no privileges; ``placements`` put nodes elsewhere, e.g. one network namespace
each, so a test can cut one node off from the others at the kernel level.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self, final

from warren._config.connection import node_address
from warren.testing._rabbit_node import RabbitNode, RabbitNodeError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType


@dataclass(frozen=True)
class NodePlacement:
    """Where one node runs: its AMQP address, network namespace and node-name host."""

    host: str = "127.0.0.1"
    netns: str | None = None
    node_host: str = "localhost"


@final
class RabbitCluster:
    """A cluster of ``size`` throwaway nodes. Use as a context manager, or start()/close().

    Args:
        size: how many nodes (3 by default: the smallest cluster with a majority left
            after losing one).
        net_ticktime: seconds after which a silent peer counts as down (Erlang's
            ``net_ticktime``: noticed within 0.75x-1.25x of it). 10 here, so a partition
            test takes seconds; production keeps the default 60.
        partition_handling: ``cluster_partition_handling`` (``pause_minority`` by default:
            a node that finds itself in a minority stops serving clients until it is back).
        placements: one per node; loopback, no namespace, by default.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        partition_handling: str = "pause_minority",
        net_ticktime: int = 10,
        placements: Sequence[NodePlacement] | None = None,
    ) -> None:
        if placements is None:
            placements = [NodePlacement() for _ in range(size)]
        if len(placements) != size or size < 1:
            raise ValueError(f"need {size} placements, got {len(placements)}")
        cookie = secrets.token_hex(16).upper()
        config = [f"cluster_partition_handling = {partition_handling}"]
        advanced = f"[{{kernel, [{{net_ticktime, {int(net_ticktime)}}}]}}].\n"
        self.nodes: list[RabbitNode] = [
            RabbitNode(
                host=p.host,
                netns=p.netns,
                node_host=p.node_host,
                cookie=cookie,
                config=config,
                advanced_config=advanced,
            )
            for p in placements
        ]

    @property
    def urls(self) -> list[str]:
        """The AMQP URL of each node, in node order."""
        return [node.url for node in self.nodes]

    def node_at(self, address: str) -> RabbitNode:
        """The node whose AMQP listener is ``address`` (``host:port``, or an AMQP URL)."""
        if "://" in address:
            address = node_address(address) or address
        for node in self.nodes:
            if f"{node.host}:{node.amqp_port}" == address:
                return node
        raise RabbitNodeError(f"no node of this cluster listens on {address}")

    def start(self, timeout: float = 120) -> None:
        """Start every node (in parallel), then join the others to the first one."""
        _in_parallel([lambda n=n: n.start(timeout) for n in self.nodes])  # type: ignore[misc]
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            _join(node, seed)
        self.await_online(timeout)

    def await_online(self, timeout: float = 120) -> None:
        """Wait until every node runs and serves as a member of the cluster. A node that
        paused itself (``pause_minority``) restarts its app some time after its peers are
        back, and ``await_online_nodes`` refuses to wait on a node whose app is stopped (CI
        saw that): so first each node's app, then the membership."""
        for node in self.nodes:
            node.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 10)
            node.ctl("await_online_nodes", str(len(self.nodes)), "--timeout", str(int(timeout)),
                     timeout=timeout + 10)  # fmt: skip

    def running_nodes(self) -> list[RabbitNode]:
        """The nodes whose process runs."""
        return [n for n in self.nodes if n.running]

    def leader_of(self, queue: str) -> RabbitNode:
        """The node that leads quorum queue ``queue`` now (asked of a running node)."""
        ask = self.running_nodes()[0]
        rows = json.loads(ask.ctl("list_queues", "name", "leader", "--formatter", "json"))
        for row in rows:
            if row.get("name") == queue:
                for node in self.nodes:
                    if node.name == row.get("leader"):
                        return node
                raise RabbitNodeError(f"queue {queue!r} has no leader in this cluster: {row}")
        raise RabbitNodeError(f"no queue {queue!r} in this cluster")

    def start_stopped(self, timeout: float = 120) -> None:
        """Start again every node that was stopped or killed (they rejoin by themselves),
        and wait until all are online."""
        _in_parallel([lambda n=n: n.start(timeout) for n in self.nodes if not n.running])  # type: ignore[misc]
        self.await_online(timeout)

    def close(self) -> None:
        """Stop every node and delete its files."""
        _in_parallel([n.close for n in self.nodes])

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _join(node: RabbitNode, seed: RabbitNode, attempts: int = 3) -> None:
    """Join ``node`` to ``seed``'s cluster. A join that hangs (seen once in CI on a loaded
    machine: ``join_cluster`` timed out after 60 s) is tried again from a reset node; the
    last failure carries the node's own account of it."""
    node.ctl("stop_app")
    for attempt in range(1, attempts + 1):
        try:
            node.ctl("join_cluster", seed.name, timeout=90)
            break
        except RabbitNodeError:
            if _is_member(node, seed):
                break  # the join went through; only its answer was late
            if attempt == attempts:
                raise RabbitNodeError(
                    f"{node.name} could not join {seed.name} in {attempts} attempts:\n"
                    f"{node.log_tail()}"
                ) from None
            node.ctl("force_reset", timeout=60)
    node.ctl("start_app")


def _is_member(node: RabbitNode, seed: RabbitNode) -> bool:
    try:
        return seed.name in node.ctl("cluster_status", timeout=30)
    except RabbitNodeError:
        return False


def _in_parallel(calls: Sequence[Callable[[], None]]) -> None:
    """Run blocking calls in threads; re-raise the first failure once all have ended."""
    errors: list[BaseException] = []

    def run(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
