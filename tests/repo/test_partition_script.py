"""deploy/chaos/partition.sh run for real, without a Docker engine: the api, the push sender
and the fake provider run here against the shared broker, and ``docker`` on the script's
PATH is a stand-in whose ``network disconnect`` blackholes the api's link to RabbitMQ (a fault
proxy with Toxiproxy's API: silent, no FIN, no RST) and whose ``network connect`` heals it.

The script must see the partition in the api's metrics, wait for the drain, find every
accepted message at the provider and exit 0; when the provider forgets what it got (the
stand-in resets it on reconnect), it must report the loss and exit 1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from tests.support.broker import Broker
from tests.support.container_tools import PARTITION, tool
from tests.support.helpers import WARREN, free_port, wait_serving

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

# `docker` as partition.sh calls it. Anything else it is asked exits 1, failing the script.
DOCKER_STAND_IN = """#!{python}
import json, os, sys, urllib.request

args = sys.argv[1:]
with open(os.environ["DOCKER_CALLS"], "a") as log:
    print(" ".join(args), file=log)
project = "label=com.docker.compose.project=warren"


def toxics(method, path="", body=None):
    data = None if body is None else json.dumps(body).encode()
    url = os.environ["PROXY_API"] + "/proxies/rabbit/toxics" + path
    urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=5)


if args[:2] == ["ps", "-q"] and project in args and "label=com.docker.compose.service=api" in args:
    print("api-container")
elif args[:3] == ["network", "ls", "-q"] and project in args \\
        and "label=com.docker.compose.network=broker" in args:
    print("broker-network")
elif args == ["network", "disconnect", "broker-network", "api-container"]:
    for stream in ("upstream", "downstream"):
        toxics("POST", body={{"name": "cut_" + stream, "type": "timeout", "stream": stream,
                             "attributes": {{"timeout": 0}}}})
elif args[:2] == ["network", "connect"] and args[-2:] == ["broker-network", "api-container"]:
    for stream in ("upstream", "downstream"):
        toxics("DELETE", "/cut_" + stream)
    if os.environ.get("FORGET_ON_CONNECT"):
        urllib.request.urlopen(urllib.request.Request(
            os.environ["PROVIDER_URL"] + "/reset", data=b"", method="POST"), timeout=5)
else:
    sys.exit("docker stand-in: unexpected call: " + " ".join(args))
"""


@dataclass
class Stack:
    """The three services and a fault proxy between the api and the broker."""

    tmp: Path
    queue: str = field(default_factory=lambda: f"push.test.{uuid.uuid4().hex[:8]}")
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=log, stderr=log)
        log.close()
        self.procs.append(proc)
        return proc

    def service(self, name: str, env: dict[str, str]) -> None:
        self.ports[f"{name} ops"] = ops = free_port()
        env = {"WARREN_METRICS_ADDR": f"127.0.0.1:{ops}", "WARREN_PUSH_QUEUE": self.queue, **env}
        wait_serving(self.start(name, [*WARREN, "run", name], env), ops, within=30)

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def _wait_until_connected(stack: Stack) -> None:
    """Poll the api's metrics (a worker's state has no event outside its process)."""
    deadline = time.monotonic() + 30
    url = f"http://127.0.0.1:{stack.ports['api ops']}/metrics"
    while 'warren_connection_up{worker="api"} 1.0' not in _get(url):
        assert time.monotonic() < deadline, "the api never connected through the proxy"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tool("curl", "apt-get install curl")
    stack = Stack(tmp_path_factory.mktemp("partition"))
    proxy_api, rabbit = free_port(), free_port()
    config = stack.tmp / "proxies.json"
    config.write_text(json.dumps([{"name": "rabbit", "listen": f"127.0.0.1:{rabbit}",
                                   "upstream": "127.0.0.1:5672"}]))  # fmt: skip
    stack.ports["proxy api"] = proxy_api
    for name in ("api", "fake-push-provider"):
        stack.ports[name] = free_port()
    try:
        stack.start("proxy", [*WARREN, "proxy", "--port", str(proxy_api), "--config",
                              str(config)], {})  # fmt: skip
        provider = f"127.0.0.1:{stack.ports['fake-push-provider']}"
        stack.service("fake-push-provider", {"WARREN_FAKE_PUSH_ADDR": provider})
        webhook = f"http://{provider}/webhook"
        stack.service("push-sender", {"WARREN_AMQP_URL": broker_url,
                                      "WARREN_PUSH_PROVIDER_URL": webhook})  # fmt: skip
        stack.service("api", {
            "WARREN_AMQP_URL": broker_url.replace(":5672/", f":{rabbit}/"),
            "WARREN_API_ADDR": f"127.0.0.1:{stack.ports['api']}",
            "WARREN_API_DB": str(stack.tmp / "api.sqlite3"),
            "WARREN_HEARTBEAT": "1", "WARREN_BACKOFF_BASE": "0.1", "WARREN_BACKOFF_CAP": "1",
        })  # fmt: skip
        yield stack
    finally:
        stack.stop()
        with Broker(broker_url) as broker:
            for suffix in ("", ".dlq", ".retry.1000ms", ".retry.2000ms", ".retry.4000ms",
                           ".retry.8000ms"):  # fmt: skip
                broker.delete_queue(stack.queue + suffix)


def _partition(
    stack: Stack, seconds: int, **env: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    _wait_until_connected(stack)
    bin_dir = stack.tmp / f"bin-{uuid.uuid4().hex[:6]}"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(DOCKER_STAND_IN.format(python=sys.executable))
    (bin_dir / "docker").chmod(0o755)
    calls = bin_dir / "calls.log"
    provider = f"http://127.0.0.1:{stack.ports['fake-push-provider']}"
    done = subprocess.run(
        ["bash", str(PARTITION), str(seconds)], capture_output=True, text=True, timeout=150,
        check=False, env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "DOCKER_CALLS": str(calls),
            "PROXY_API": f"http://127.0.0.1:{stack.ports['proxy api']}",
            "API_URL": f"http://127.0.0.1:{stack.ports['api']}",
            "API_OPS_URL": f"http://127.0.0.1:{stack.ports['api ops']}",
            "PROVIDER_URL": provider, "RATE": "20", "DRAIN_TIMEOUT": "60",
            **env,
        },
    )  # fmt: skip
    return done, calls.read_text() if calls.exists() else ""


def _lines(output: str, phase: str) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in re.findall(r"(\w+)=([\d.e+-]+)", line)}
            for line in output.splitlines() if line.startswith(f"{phase} ")]  # fmt: skip


@pytest.mark.scenario
def test_the_partition_script_sees_the_outage_and_finds_nothing_lost(stack: Stack) -> None:
    done, calls = _partition(stack, 6)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "nothing lost" in done.stdout
    assert re.search(r"^network disconnect broker-network api-container\n"
                     r"network connect --alias api broker-network api-container$", calls,
                     re.MULTILINE), calls  # fmt: skip
    (before,), during, (after,) = _lines(out, "before"), _lines(out, "during"), _lines(out, "after")
    assert before["connection_up"] == 1 and before["submitted"] > 0, out
    assert any(d["connection_up"] == 0 for d in during), out  # the api noticed the partition
    assert after["connection_up"] == 1 and after["buffer_depth"] == 0, out
    assert after["reconnects"] > before["reconnects"], out
    posted = re.search(r"posted (\d+): queued (\d+), dropped 0, refused 0", done.stdout)
    assert posted and int(posted[1]) == int(posted[2]) > 100, out  # 20/s for ~12 s
    assert f"delivered {posted[2]} of {posted[2]} queued" in done.stdout


@pytest.mark.scenario
def test_the_partition_script_reports_a_loss_and_fails(stack: Stack) -> None:
    done, _ = _partition(stack, 2, FORGET_ON_CONNECT="1", DRAIN_TIMEOUT="12")
    assert done.returncode == 1, done.stdout + done.stderr
    lost = re.search(r"^LOST (\d+): push-", done.stdout, re.MULTILINE)
    assert lost and int(lost[1]) > 0, done.stdout
    assert "messages were lost" in done.stderr
