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

import pytest


def missing_requirements() -> str | None:
    """Why kernel-level partitions cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool!r} (apt-get install iproute2 nftables)"
    return None


def require_kernel_partitions() -> None:
    """Skip the calling test where kernel-level partitions cannot run; in CI, fail it."""
    why = missing_requirements()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"kernel-level partition tests must run in CI: {why}")
        pytest.skip(f"kernel-level partition tests skipped: {why}")


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


class BridgedNamespaces:
    """``count`` namespaces on one bridge (a LAN of hosts), each at ``ips[i]`` named
    ``names[i]``; the bridge gives this namespace ``10.214.x.1``. Each namespace resolves the
    others' names (``/etc/netns/<ns>/hosts``, which ``ip netns exec`` mounts on /etc/hosts), so
    RabbitMQ nodes in them can cluster with short names. ``isolate(i)`` cuts namespace ``i``
    off from the others (nftables DROP, silent), leaving its path to this namespace up."""

    def __init__(self, count: int) -> None:
        tag = uuid.uuid4().hex[:5]
        subnet = random.randrange(1, 250)
        self.bridge = f"wb{tag}"
        self.gateway = f"10.214.{subnet}.1"
        self.ns = [f"wrn{tag}{i}" for i in range(count)]
        self.ips = [f"10.214.{subnet}.{i + 2}" for i in range(count)]
        self.names = [f"wrn{tag}{i}" for i in range(count)]
        self._veths = [(f"wo{tag}{i}", f"wi{tag}{i}") for i in range(count)]

    def open(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        with open("/etc/hosts") as f:  # keeps this host's own name: erl -sname needs it
            hosts = (
                f.read().rstrip("\n")
                + "\n"
                + "".join(f"{ip} {name}\n" for ip, name in zip(self.ips, self.names, strict=True))
            )
        for ns, ip, (outer, inner) in zip(self.ns, self.ips, self._veths, strict=True):
            etc = f"/etc/netns/{ns}"
            os.makedirs(etc, exist_ok=True)
            with open(f"{etc}/hosts", "w") as f:
                f.write(hosts)
            _run("ip", "netns", "add", ns)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", inner, "netns", ns)
            _run("ip", "link", "set", outer, "master", self.bridge)
            _run("ip", "link", "set", outer, "up")
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", inner)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")

    def isolate(self, i: int) -> None:
        """Drop every packet between namespace ``i`` and the other namespaces, both ways."""
        peers = "{ " + ", ".join(ip for j, ip in enumerate(self.ips) if j != i) + " }"
        hook = "type filter hook {} priority 0;"
        rules = (
            "table inet warren {\n"
            f"  chain input {{ {hook.format('input')} ip saddr {peers} drop; }}\n"
            f"  chain output {{ {hook.format('output')} ip daddr {peers} drop; }}\n"
            "}\n"
        )
        cmd = ["ip", "netns", "exec", self.ns[i], "nft", "-f", "-"]
        subprocess.run(cmd, input=rules.encode(), check=True, capture_output=True, timeout=30)

    def rejoin(self, i: int) -> None:
        _run("ip", "netns", "exec", self.ns[i], "nft", "delete", "table", "inet", "warren")

    def close(self) -> None:
        """Remove the namespaces (ending what runs in them), the veths, the bridge."""
        for ns, (outer, _inner) in zip(self.ns, self._veths, strict=True):
            _run("ip", "link", "del", outer, check=False)
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                  timeout=30, check=False).stdout.split()  # fmt: skip
            for pid in pids:
                _run("kill", "-9", pid, check=False)
            _run("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        _run("ip", "link", "del", self.bridge, check=False)
