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
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.support.container_tools import COMPOSE, DOCKERFILE, ROOT, compose_cli

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.containers.engine import Engine

PROJECT = "warren"  # compose.yaml's name:, and deploy/chaos/partition.sh's default
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
    env: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # variable -> what was used
    built: list[str] = field(default_factory=list)

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
            done = subprocess.run(
                [str(ROOT / "deploy/images/build.sh")],
                env={**self.engine.build_env, "DOCKER": self.engine.docker},
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            self.built = [line for line in done.stdout.splitlines() if line]
        self.env = {**os.environ, **self.images, "WARREN_IMAGE": WARREN_IMAGE}

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
            env=self.engine.build_env,
        )
        return time.monotonic() - start

    # -- compose --------------------------------------------------------------------------

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cli = compose_cli()
        env = {**self.env, "DOCKER_HOST": os.environ.get("DOCKER_HOST", "")}
        if not env["DOCKER_HOST"]:
            del env["DOCKER_HOST"]
        done = subprocess.run(
            [*cli, "-f", str(COMPOSE), "-p", PROJECT, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)} failed ({done.returncode}):\n"
                f"{(done.stderr or done.stdout)[-3000:]}"
            )
        return done

    def up(self) -> float:
        start = time.monotonic()
        self.compose(
            "up", "-d", "--no-build", "--wait", "--wait-timeout", "180", *SERVICES, timeout=240
        )
        return time.monotonic() - start

    def down(self) -> None:
        """``compose down -v``: containers, networks and volumes, also after a failure."""
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

    def connect(self, service: str, network: str = "broker") -> None:
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
