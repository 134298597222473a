"""deploy/compose.yaml on a real engine: images, up, down, and the operations the scenarios
perform on it (cut a service off a network, stop, kill, start) and read from it (a
container's health, a service's /metrics, a Prometheus query, the fake provider's record).

Images that can be pulled are pulled; the ones that cannot (no registry reachable) are built
here from Debian's packages by deploy/images/build.sh, and named to compose through its
image variables. The services' image is always built from deploy/Dockerfile.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.container_tools import COMPOSE, DOCKERFILE, ROOT, compose_cli

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.containers.engine import Engine

# not compose.yaml's own name (warren): a developer's stack and its volumes are not the test's
# to take down. deploy/chaos/partition.sh is told it (COMPOSE_PROJECT).
PROJECT = "warren-test"
EXTRA_LABEL = "warren.test.extra=1"  # on containers a scenario runs beside compose's
PORTS = (8080, 8090, 9090, 9100, 9101, 9102, 15672)  # what compose.yaml publishes, Grafana's aside
# Grafana has no Debian package and no registry is reachable in CI: the stack runs without it
SERVICES = ("rabbitmq", "api", "push-sender", "fake-push-provider", "prometheus")
API = "http://127.0.0.1:8080"
PROVIDER = "http://127.0.0.1:8090"
PROMETHEUS = "http://127.0.0.1:9090"
OPS = {"api": "http://127.0.0.1:9100", "push-sender": "http://127.0.0.1:9101"}
WORKER = {"api": "api", "push-sender": "push-sender"}  # the worker label in their metrics
# (variable, the official image compose defaults to, the stand-in deploy/images/build.sh makes)
IMAGES = (
    ("BASE_IMAGE", "python:3.11.11-slim-bookworm", "warren-base:bookworm"),
    ("RABBITMQ_IMAGE", "rabbitmq:3.13.7-management", "warren-rabbitmq:bookworm"),
    ("PROMETHEUS_IMAGE", "prom/prometheus:v2.55.1", "warren-prometheus:bookworm"),
)
WARREN_IMAGE = "warren:local"


def wait_until(what: str, check: Callable[[], bool], within: float, every: float = 0.5) -> float:
    """Poll ``check`` until true; return the seconds it took; fail naming ``what``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: not within {within:g} s")
        time.sleep(every)
    return time.monotonic() - start


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.load(answer)


def post(url: str, body: dict[str, Any] | None = None, timeout: float = 5) -> Any:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        raw = answer.read()
    return json.loads(raw) if raw else None


def metric(service: str, name: str) -> float:
    """``name`` summed over the service's own worker's series, from its /metrics (0 if none)."""
    with urllib.request.urlopen(f"{OPS[service]}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    total = 0.0
    label = f'worker="{WORKER[service]}"'
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Stack:
    engine: Engine
    env: dict[str, str] = field(default_factory=dict)  # for compose and partition.sh
    images: dict[str, str] = field(default_factory=dict)  # variable -> what was used
    built: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the engine's client first on PATH, so partition.sh talks to the same engine with it
        bin_dir = Path(tempfile.mkdtemp(prefix="warren-test-bin-"))
        (bin_dir / "docker").symlink_to(self.engine.docker)
        self._bin_dir = bin_dir
        path = f"{bin_dir}{os.pathsep}{self.engine.env.get('PATH', '')}"
        self.env = {**self.engine.env, "PATH": path, "COMPOSE_PROJECT": PROJECT,
                    "WARREN_IMAGE": WARREN_IMAGE}  # fmt: skip

    def close(self) -> None:
        for entry in self._bin_dir.iterdir():
            entry.unlink()
        self._bin_dir.rmdir()

    # -- images ---------------------------------------------------------------------------

    def resolve_images(self) -> None:
        """Each third-party image: present or pulled, else the stand-in (built once)."""
        standins = False
        for variable, official, standin in IMAGES:
            if (
                self._present(official)
                or self.engine.run("pull", "-q", official, timeout=300, check=False).returncode == 0
            ):
                self.images[variable] = official
            else:
                self.images[variable] = standin
                standins = True
        if standins:
            self.built = _run_group([str(ROOT / "deploy/images/build.sh")],
                                    {**self.env, "DOCKER": self.engine.docker}, 900)  # fmt: skip
        self.env.update(self.images)

    def _present(self, image: str) -> bool:
        return self.engine.run("image", "inspect", image, check=False).returncode == 0

    def build(self) -> float:
        """Build the services' image from deploy/Dockerfile; return the seconds it took."""
        start = time.monotonic()
        self.engine.run(
            "build",
            "-q",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={self.images['BASE_IMAGE']}",
            "-f",
            str(DOCKERFILE),
            "-t",
            WARREN_IMAGE,
            str(ROOT),
            timeout=600,
        )
        return time.monotonic() - start

    # -- compose --------------------------------------------------------------------------

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*compose_cli(), "-f", str(COMPOSE), "-p", PROJECT, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)} failed ({done.returncode}):\n"
                f"{(done.stderr or done.stdout)[-3000:]}"
            )
        return done

    def up(self) -> float:
        """Bring the stack up (each service healthy); on a running stack, heal what a failed
        scenario left: a stopped container started, a cut network connected again."""
        start = time.monotonic()
        running = self.engine.run(
            "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"
        )
        if not running.stdout.strip():
            busy = [port for port in PORTS if _listening(port)]
            assert not busy, f"ports the stack publishes are taken on 127.0.0.1: {busy}"
        for service in ("api", "push-sender"):
            self.connect(service, heal=True)
        self.compose(
            "up", "-d", "--no-build", "--wait", "--wait-timeout", "180", *SERVICES, timeout=240
        )
        return time.monotonic() - start

    def down(self) -> None:
        """``compose down -v``: containers, networks and volumes, also after a failure; first
        any container of the project compose does not know (the health check's)."""
        extra = self.engine.run("ps", "-aq", "--filter", f"label={EXTRA_LABEL}", check=False)
        if extra.stdout.split():
            self.engine.run("rm", "-f", *extra.stdout.split(), check=False)
        self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180, check=False)

    def leftovers(self) -> list[str]:
        """Whatever of this project the engine still holds (after ``down``: nothing)."""
        label = f"label=com.docker.compose.project={PROJECT}"
        found: list[str] = []
        for kind in ("ps -a", "network ls", "volume ls"):
            out = self.engine.run(*kind.split(), "-q", "--filter", label).stdout.split()
            found += [f"{kind.split()[0]}:{item}" for item in out]
        return found

    # -- what the scenarios do to it --------------------------------------------------------

    def container(self, service: str) -> str:
        return f"{PROJECT}-{service}-1"

    def network(self, name: str) -> str:
        return f"{PROJECT}_{name}"

    def disconnect(self, service: str, network: str = "broker") -> None:
        self.engine.run("network", "disconnect", self.network(network), self.container(service))

    def connect(self, service: str, network: str = "broker", heal: bool = False) -> None:
        """``docker network connect`` (with the service's alias, as compose gives it). With
        ``heal``, only if the container exists and is not connected (an earlier scenario's
        failure left it cut off); compose makes the missing ones."""
        if heal:
            found = self.engine.run(
                "inspect", "-f", "{{json .NetworkSettings.Networks}}", self.container(service),
                check=False,
            )  # fmt: skip
            if found.returncode != 0 or f'"{self.network(network)}"' in found.stdout:
                return
        self.engine.run(
            "network", "connect", "--alias", service, self.network(network), self.container(service)
        )

    def health(self, service: str) -> str:
        fmt = "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}"
        return self.engine.run("inspect", "-f", fmt, self.container(service)).stdout.strip()

    def wait_healthy(self, service: str, within: float = 90) -> float:
        return wait_until(
            f"{service} healthy", lambda: self.health(service) == "running/healthy", within
        )

    def prometheus(self, query: str) -> float | None:
        """The value of an instant query with one series (None: no series yet)."""
        url = f"{PROMETHEUS}/api/v1/query?query={urllib.parse.quote(query)}"
        result = get_json(url)["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _run_group(cmd: list[str], env: dict[str, str], timeout: float) -> list[str]:
    """Run ``cmd`` in a process group of its own; on a timeout (or an interrupt) SIGTERM the
    whole group, so a debootstrap under it stops too (build.sh cleans up on TERM)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
        raise
    assert proc.returncode == 0, out
    return [line for line in out.splitlines() if line]
