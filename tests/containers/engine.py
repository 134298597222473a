"""A Docker engine to run the stack on: the one that answers, else one started here.

An engine that already answers is used as it is and left running. Otherwise (root, Debian's
``docker.io`` installed) ``dockerd`` is started for the run and stopped after it, and the
host is left as it was found: the engine runs with ``--iptables=false --ip-forward=false
--bridge=none``, so it adds no firewall rules, leaves ``ip_forward`` alone and makes no
``docker0``; compose's own bridges go with ``compose down``. ``close()`` checks that.

Containers still reach each other (one bridge per compose network, no routing needed) and
the host reaches their published ports (Docker's userland proxy). They cannot reach the
internet, which nothing in the stack needs; image builds use the host's network.
"""

from __future__ import annotations

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
    """A client that builds with BuildKit, and the engine it talks to."""

    docker: str
    build_env: dict[str, str]
    started: subprocess.Popen[bytes] | None = None
    before: HostState | None = None
    log: Path | None = None
    notes: list[str] = field(default_factory=list)

    def run(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS``; on failure (with ``check``) an AssertionError quoting its output."""
        done = subprocess.run(
            [self.docker, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
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
        self.started.send_signal(signal.SIGTERM)
        try:
            self.started.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.started.kill()
            self.started.wait(timeout=30)
        self.started = None
        assert self.before is not None
        after = HostState.now()
        # a bridge compose made and down did not remove would be the project's leak
        left = sorted(after.links - self.before.links)
        for link in left:
            subprocess.run(
                ["ip", "link", "del", link], capture_output=True, timeout=10, check=False
            )
        assert not left, f"links left behind by the engine: {left}"
        assert after.ip_forward == self.before.ip_forward, "ip_forward changed"


def _can_build(docker: str) -> dict[str, str] | None:
    """The environment under which ``docker build`` uses BuildKit, or None if it cannot.
    Docker 23+ needs the buildx plugin for that; 20.10's client has it built in."""
    try:
        if (
            subprocess.run(
                [docker, "buildx", "version"], capture_output=True, timeout=20, check=False
            ).returncode
            == 0
        ):
            return {}
        version = subprocess.run(
            [docker, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except OSError:
        return None
    major = version.stdout.strip().split(".")[0]
    if major.isdigit() and int(major) < 23:
        return {"DOCKER_BUILDKIT": "1"}
    return None


def _client() -> tuple[str, dict[str, str]]:
    seen: set[str] = set()
    for name in CLIENTS:
        path = shutil.which(name)
        if path is None or os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        env = _can_build(path)
        if env is not None:
            return path, env
    raise EngineUnavailable(
        "no Docker client that builds with BuildKit (a docker with the buildx plugin, or "
        "Debian's docker.io: apt-get install docker.io)"
    )


def _answers(docker: str) -> bool:
    done = subprocess.run(
        [docker, "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        timeout=20,
        check=False,
    )
    return done.returncode == 0


def start_engine(within: float = 60) -> Engine:
    """The engine that answers, else ``dockerd`` started here (root only)."""
    docker, build_env = _client()
    engine = Engine(docker, {**os.environ, **build_env})
    if _answers(docker):
        engine.notes.append("used the Docker engine that was running")
        return engine
    dockerd = shutil.which("dockerd")
    if os.geteuid() != 0 or dockerd is None:
        raise EngineUnavailable(
            "no Docker engine answers and none can be started here "
            + ("(needs root)" if os.geteuid() != 0 else "(apt-get install docker.io)")
        )
    engine.before = HostState.now()
    engine.log = Path(tempfile.mkstemp(prefix="warren-dockerd-", suffix=".log")[1])
    with engine.log.open("wb") as log:
        engine.started = subprocess.Popen(
            [
                dockerd,
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
    while not _answers(docker):
        if engine.started.poll() is not None or time.monotonic() > deadline:
            tail = engine.log.read_text(errors="replace")[-2000:]
            engine.close()
            raise EngineUnavailable(f"dockerd did not start:\n{tail}")
        time.sleep(0.5)
    engine.notes.append("started dockerd for this run; stopped at the end")
    return engine
