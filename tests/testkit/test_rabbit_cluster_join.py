"""How a throwaway cluster's node joins the first one: a hung join is tried again.

CI once failed because ``rabbitmqctl join_cluster`` timed out once on a loaded machine; the
cluster fixture gave up at the first timeout. These run against a stand-in node (the real
joins run in ``make cluster-test``)."""

from __future__ import annotations

import pytest

from warren.testing._rabbit_cluster import RabbitCluster, _join
from warren.testing._rabbit_node import RabbitNodeError

pytestmark = pytest.mark.timeout(10)


class _Node:
    """Answers ``ctl`` like a RabbitNode: ``join_cluster`` times out ``hangs`` times."""

    def __init__(self, hangs: int, joined_anyway: bool = False) -> None:
        self.name = "warren-b@host"
        self.calls: list[str] = []
        self._hangs = hangs
        self._joined_anyway = joined_anyway
        self._member = False

    def ctl(self, *args: str, timeout: float = 60) -> str:
        self.calls.append(args[0])
        if args[0] == "join_cluster":
            if self._hangs > 0:
                self._hangs -= 1
                self._member = self._joined_anyway
                raise RabbitNodeError("rabbitmqctl join_cluster timed out")
            self._member = True
        if args[0] == "cluster_status":
            return "Disk Nodes\n\nwarren-a@host\nwarren-b@host\n" if self._member else ""
        return ""

    def log_tail(self) -> str:
        return "the node's own words"


class _Seed:
    name = "warren-a@host"


def test_a_join_that_times_out_once_is_tried_again_from_a_reset_node() -> None:
    node = _Node(hangs=1)
    _join(node, _Seed())  # type: ignore[arg-type]
    assert node.calls == [
        "stop_app",
        "join_cluster",
        "cluster_status",
        "force_reset",
        "join_cluster",
        "start_app",
    ]


def test_a_join_whose_answer_was_late_but_went_through_is_not_repeated() -> None:
    node = _Node(hangs=1, joined_anyway=True)
    _join(node, _Seed())  # type: ignore[arg-type]
    assert node.calls == ["stop_app", "join_cluster", "cluster_status", "start_app"]


def test_a_join_that_never_answers_fails_with_the_nodes_log() -> None:
    node = _Node(hangs=5)
    with pytest.raises(RabbitNodeError, match="could not join warren-a@host in 3 attempts"
                       ) as caught:  # fmt: skip
        _join(node, _Seed())  # type: ignore[arg-type]
    assert "the node's own words" in str(caught.value)
    assert node.calls.count("join_cluster") == 3
    assert "start_app" not in node.calls


class _PausedNode:
    """A node whose app is stopped (paused by pause_minority) until ``await_startup``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.app_running = False
        self.calls: list[str] = []

    def ctl(self, *args: str, timeout: float = 60) -> str:
        self.calls.append(args[0])
        if args[0] == "await_startup":
            self.app_running = True
        if args[0] == "await_online_nodes" and not self.app_running:
            raise RabbitNodeError("this command requires the 'rabbit' app to be running")
        return ""


def test_await_online_waits_for_a_paused_nodes_app_before_its_membership() -> None:
    """CI failed when a node paused by pause_minority had not restarted its app yet:
    ``await_online_nodes`` refuses at once instead of waiting."""
    cluster = RabbitCluster.__new__(RabbitCluster)
    cluster.nodes = [_PausedNode(f"warren-{i}@host") for i in range(3)]  # type: ignore[misc]
    cluster.await_online(timeout=5)
    for node in cluster.nodes:
        assert node.calls == ["await_startup", "await_online_nodes"]  # type: ignore[attr-defined]
