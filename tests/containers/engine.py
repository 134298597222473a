"""A Docker engine to run the stack on: the one that answers, else one started here.

An engine that already answers (``DOCKER_HOST``, else the default socket) is used as it is
and left running. Otherwise (root, Debian's ``docker.io`` installed) a ``dockerd`` of the
test's own is started for the run and stopped after it: its own socket, pid file, exec root
and data root (``/run/warren-test-docker*``, ``/var/lib/warren-test-docker``, which keeps the
image cache for the next run), so it never mixes with a packaged engine, and a run that was
killed before it could stop its engine is recognised and its engine stopped by the next.

It runs with ``--iptables=false --ip-forward=false --bridge=none``: no firewall rules,
``ip_forward`` left alone, no ``docker0``. ``close()`` checks that no link appeared or
disappeared and that ``ip_forward`` is unchanged. Containers still reach each other (one
bridge per compose network) and the host reaches their published ports (Docker's userland
proxy); they cannot reach the internet, which nothing in the stack needs. Image builds use
the host's network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CLIENTS = ("docker", "/usr/bin/docker")  # PATH's, then Debian's (20.10: BuildKit built in)
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
OWN_SOCKET = "/run/warren-test-docker.sock"
OWN_PIDFILE = Path("/run/warren-test-docker.pid")
OWN_EXEC_ROOT = "/run/warren-test-docker"
OWN_DATA_ROOT = "/var/lib/warren-test-docker"


class EngineUnavailable(RuntimeError):
    """No engine answers and none can be started here (the message says what is missing)."""


def _links() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


@dataclass(frozen=True)
class HostState:
    """What an engine could change on the host: its links and IPv4 forwarding."""

    links: frozenset[str]
    ip_forward: str

    @classmethod
    def now(cls) -> HostState:
        forward = FORWARD.read_text().strip() if FORWARD.exists() else "?"
        return cls(frozenset(_links()), forward)


@dataclass
class Engine:
    """A client that builds with BuildKit, and the engine it talks to (``env`` says which)."""

    docker: str
    env: dict[str, str]
    started: subprocess.Popen[bytes] | None = None
    before: HostState | None = None
    log: Path | None = None
    notes: list[str] = field(default_factory=list)

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS``; on failure (with ``check``) an AssertionError quoting its output."""
        done = subprocess.run(
            [self.docker, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({done.returncode}):\n"
                f"{(done.stderr or done.stdout)[-2000:]}"
            )
        return done

    def close(self) -> None:
        """Stop the engine if it was started here, and check the host is as it was."""
        if self.started is None:
            return
        _stop(self.started.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.started.wait(timeout=5)
        self.started = None
        if self.log is not None:
            self.log.unlink(missing_ok=True)
        assert self.before is not None
        after = HostState.now()
        appeared = sorted(after.links - self.before.links)
        vanished = sorted(self.before.links - after.links)
        # a compose bridge (br-<network id>) that `down` did not remove is this run's own leak
        for link in appeared:
            if link.startswith("br-"):
                subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10,
                               check=False)  # fmt: skip
        assert not appeared and not vanished, f"links: new {appeared}, gone {vanished}"
        assert after.ip_forward == self.before.ip_forward, "ip_forward changed"


def _stop(pid: int) -> None:
    """SIGTERM a dockerd of ours and wait; then SIGKILL its process group (its containerd)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _can_build(docker: str) -> bool:
    """Whether ``docker build`` uses BuildKit with DOCKER_BUILDKIT=1: Docker 23+ needs the
    buildx plugin for that; 20.10's client has it built in."""
    try:
        version = subprocess.run(
            [docker, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
        major = version.split(".")[0]
        if major.isdigit() and int(major) < 23:
            return True
        buildx = [docker, "buildx", "version"]
        return subprocess.run(buildx, capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _client() -> str:
    seen: set[str] = set()
    for name in CLIENTS:
        path = shutil.which(name)
        if path is None or os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        if _can_build(path):
            return path
    raise EngineUnavailable(
        "no Docker client that builds with BuildKit (a docker with the buildx plugin, or "
        "Debian's docker.io: apt-get install docker.io)"
    )


def _answers(docker: str, env: dict[str, str]) -> bool:
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=20,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _stop_leftover() -> None:
    """A run killed before it could stop its own engine left it running: stop it now."""
    try:
        pid = int(OWN_PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return
    if _alive(pid) and "dockerd" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
        _stop(pid)


def start_engine(within: float = 60) -> Engine:
    """The engine that answers, else a ``dockerd`` of the test's own (root only)."""
    docker = _client()
    base = {**os.environ, "DOCKER_BUILDKIT": "1"}
    if _answers(docker, base):
        return Engine(docker, base, notes=["used the Docker engine that was running"])
    dockerd = shutil.which("dockerd")
    if os.geteuid() != 0 or dockerd is None:
        raise EngineUnavailable(
            "no Docker engine answers and none can be started here "
            + ("(needs root)" if os.geteuid() != 0 else "(apt-get install docker.io)")
        )
    _stop_leftover()
    engine = Engine(docker, {**base, "DOCKER_HOST": f"unix://{OWN_SOCKET}"})
    engine.before = HostState.now()
    fd, log_name = tempfile.mkstemp(prefix="warren-test-dockerd-", suffix=".log")
    engine.log = Path(log_name)
    try:
        with os.fdopen(fd, "wb") as log:
            engine.started = subprocess.Popen(
                [
                    dockerd,
                    f"--host=unix://{OWN_SOCKET}",
                    f"--pidfile={OWN_PIDFILE}",
                    f"--exec-root={OWN_EXEC_ROOT}",
                    f"--data-root={OWN_DATA_ROOT}",
                    "--iptables=false",
                    "--ip-forward=false",
                    "--bridge=none",
                    "--storage-driver=overlay2",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + within
        while not _answers(docker, engine.env):
            if engine.started.poll() is not None or time.monotonic() > deadline:
                tail = engine.log.read_text(errors="replace")[-2000:]
                raise EngineUnavailable(f"dockerd did not start:\n{tail}")
            time.sleep(0.5)
    except BaseException:
        with contextlib.suppress(AssertionError):  # the failure to start says more
            engine.close()
        raise
    engine.notes.append("started dockerd for this run; stopped at the end")
    return engine
