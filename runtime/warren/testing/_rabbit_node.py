"""A throwaway RabbitMQ node: its own node name, ports, data and logs in a temp dir.

Destructive tests (restart the broker, raise a memory alarm) run against one of these and
never against the shared broker. Uses the installed ``rabbitmq-server`` (Debian's 3.10 here)
directly, as the current user, with ``HOME`` in the temp dir so its Erlang cookie is its own.
Starting takes about 5 s; ``stop()`` halts it and frees the ports.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Self, final

from warren._exceptions import WarrenError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

_BIN_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin", "/opt/rabbitmq/sbin")


class RabbitNodeError(WarrenError):
    """The throwaway node could not be started or controlled."""


def free_port(host: str) -> int:
    """A free port below the kernel's ephemeral range: a client dialing a stopped node's port
    from an ephemeral source port can be given that very port and connect to itself (TCP
    simultaneous open), taking the port the node needs to start again."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10_000, low)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded machine: any free port will do
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
    return max(10_001, low)


def _find_bin(name: str) -> str:
    for directory in _BIN_DIRS:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RabbitNodeError(f"{name} not found (is rabbitmq-server installed?)")
    return found


@final
class RabbitNode:
    """A RabbitMQ node of its own. Use as a context manager, or ``start()`` / ``stop()``.

    Args:
        host: the address its AMQP listener binds (loopback by default).
        amqp_port: the AMQP port; a free one by default. Kept across ``restart()``.
        netns: run inside this network namespace (``ip netns exec``).
        cookie: the Erlang cookie (nodes of one cluster share it); a fresh one by default.
        node_host: the host part of its node name (must resolve where the node runs).
        config: extra ``rabbitmq.conf`` lines.
        advanced_config: the ``advanced.config`` Erlang terms, for what rabbitmq.conf lacks.
        plugins: plugins to enable (e.g. ``rabbitmq_auth_mechanism_ssl``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        amqp_port: int | None = None,
        netns: str | None = None,
        cookie: str | None = None,
        node_host: str = "localhost",
        config: Sequence[str] = (),
        advanced_config: str | None = None,
        plugins: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.netns = netns
        if netns is not None:
            # a fresh namespace has every port free; its loopback is its own
            self.amqp_port = amqp_port or 5672
            self.dist_port = 25672
        else:
            self.amqp_port = amqp_port or free_port(host)
            self.dist_port = free_port("127.0.0.1")
        self.name = f"warren-{uuid.uuid4().hex[:10]}@{node_host}"
        self._dir = Path(tempfile.mkdtemp(prefix="warren-rabbit-"))
        self._proc: subprocess.Popen[bytes] | None = None
        lines = [f"listeners.tcp.default = {host}:{self.amqp_port}", "loopback_users = none"]
        (self._dir / "rabbitmq.conf").write_text("\n".join([*lines, *config, ""]))
        (self._dir / "advanced.config").write_text(advanced_config or "[].\n")
        # Debian's /etc/rabbitmq/rabbitmq-env.conf binds Erlang distribution to loopback: right
        # for a node named @localhost, but one named after its own host in a namespace (private
        # to it) must be reachable by its peers at that address, so it gets an empty one
        self._own_env_conf = netns is not None and node_host != "localhost"
        (self._dir / "rabbitmq-env.conf").write_text("")
        if cookie is not None:  # nodes that share a cookie can form a cluster
            path = self._dir / ".erlang.cookie"
            path.write_text(cookie)
            path.chmod(0o400)
        (self._dir / "enabled_plugins").write_text(f"[{','.join(plugins)}].\n")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"amqp://guest:guest@{host}:{self.amqp_port}/%2F"

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _env(self) -> dict[str, str]:
        d = self._dir
        return {
            **os.environ,
            "HOME": str(d),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            **(
                {"RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf")}
                if self._own_env_conf
                else {}
            ),
        }

    def start(self, timeout: float = 90) -> None:
        """Start the node and wait until it accepts AMQP connections."""
        if self._proc is not None and self._proc.poll() is None:
            return
        (self._dir / "pid").unlink(missing_ok=True)
        if self._own_env_conf:
            # the node's own start-up check may run before it has started epmd there
            subprocess.run([*self._prefix(), _find_bin("epmd"), "-daemon"], env=self._env(),
                           capture_output=True, timeout=30, check=False)  # fmt: skip
        log = (self._dir / "server.out").open("ab")
        self._proc = subprocess.Popen(
            [*self._prefix(), _find_bin("rabbitmq-server")],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            self.ctl("wait", str(self._dir / "pid"), "--timeout", str(int(timeout)),
                     timeout=timeout + 10)  # fmt: skip
        except RabbitNodeError:
            self._kill()
            raise RabbitNodeError(f"node {self.name} did not start:\n{self.log_tail()}") from None

    def log_tail(self, size: int = 2000) -> str:
        """The last ``size`` characters the node printed: why it failed, when it did."""
        try:
            return (self._dir / "server.out").read_text(errors="replace")[-size:]
        except OSError as exc:
            return f"(no output: {exc})"

    def stop(self, timeout: float = 60) -> None:
        """Halt the node (its AMQP port closes) and wait for the process to exit."""
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            self.ctl("stop", timeout=timeout)
            self._proc.wait(timeout=timeout)
        except (RabbitNodeError, subprocess.TimeoutExpired):
            self._kill()

    def restart(self) -> None:
        """Stop and start again on the same ports and data (a broker restart)."""
        self.stop()
        self.start()

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run ``rabbitmqctl -n <this node> ARGS``; return its stdout."""
        cmd = [*self._prefix(), _find_bin("rabbitmqctl"), "-n", self.name, *args]
        try:
            done = subprocess.run(cmd, env=self._env(), capture_output=True, text=True,
                                  timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise RabbitNodeError(f"rabbitmqctl {' '.join(args)} timed out") from exc
        if done.returncode != 0:
            raise RabbitNodeError(
                f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )
        return done.stdout

    def set_memory_alarm(self, on: bool) -> None:
        """Raise (or clear) a memory alarm: the broker blocks publishing connections."""
        if on:
            self.ctl("set_vm_memory_high_watermark", "absolute", "1")
        else:
            self.ctl("set_vm_memory_high_watermark", "0.4")

    @property
    def running(self) -> bool:
        """Whether its process runs (started and neither stopped nor killed)."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """``kill -9`` the node: no goodbye to its clients or its cluster peers."""
        self._kill()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=30)

    def close(self) -> None:
        """Stop the node and delete its files."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
