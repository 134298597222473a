"""A real network path to cut: a network namespace joined to this one by a veth pair.

Only addresses inside the namespace this creates (10.213.x.0/30) are used, and everything is
removed on close. Needs root, ``ip`` (iproute2) and ``nft`` (nftables).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid


def missing_requirements() -> str | None:
    """Why kernel-level partitions cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool!r} (apt-get install iproute2 nftables)"
    return None


def _run(*cmd: str, check: bool = True) -> None:
    subprocess.run(cmd, check=check, capture_output=True, timeout=30)


class VethLink:
    """Namespace ``ns`` at ``inner_ip``, reachable from here at ``outer_ip`` over a veth."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = f"wrn{tag}"
        self.outer_if = f"wo{tag}"
        self.inner_if = f"wi{tag}"
        subnet = random.randrange(1, 250)
        self.outer_ip = f"10.213.{subnet}.1"
        self.inner_ip = f"10.213.{subnet}.2"

    def open(self) -> None:
        _run("ip", "netns", "add", self.ns)
        _run("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        self.plug()

    def plug(self) -> None:
        """Create the veth pair and addresses (``docker network connect``)."""
        _run("ip", "link", "add", self.outer_if, "type", "veth", "peer", "name", self.inner_if)
        _run("ip", "link", "set", self.inner_if, "netns", self.ns)
        _run("ip", "addr", "add", f"{self.outer_ip}/30", "dev", self.outer_if)
        _run("ip", "link", "set", self.outer_if, "up")
        _run("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.inner_ip}/30",
             "dev", self.inner_if)  # fmt: skip
        _run("ip", "netns", "exec", self.ns, "ip", "link", "set", self.inner_if, "up")

    def unplug(self) -> None:
        """Delete the veth pair (``docker network disconnect``): packets just stop."""
        _run("ip", "link", "del", self.outer_if)

    def drop(self, port: int) -> None:
        """Silently drop the namespace's traffic on ``port`` both ways (no FIN, no RST)."""
        rules = (
            "table inet warren {\n"
            f"  chain input {{ type filter hook input priority 0; tcp dport {port} drop; }}\n"
            f"  chain output {{ type filter hook output priority 0; tcp sport {port} drop; }}\n"
            "}\n"
        )
        subprocess.run(["ip", "netns", "exec", self.ns, "nft", "-f", "-"], input=rules.encode(),
                       check=True, capture_output=True, timeout=30)  # fmt: skip

    def heal(self) -> None:
        _run("ip", "netns", "exec", self.ns, "nft", "delete", "table", "inet", "warren")

    def close(self) -> None:
        """Remove the link and the namespace, and end what still runs inside it (epmd)."""
        _run("ip", "link", "del", self.outer_if, check=False)
        pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True,
                              timeout=30, check=False).stdout.split()  # fmt: skip
        for pid in pids:
            _run("kill", "-9", pid, check=False)
        _run("ip", "netns", "del", self.ns, check=False)
