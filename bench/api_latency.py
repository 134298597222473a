"""API latency with the broker up and with the broker link blackholed.

Three processes, as deployed: ``warren proxy`` (the fault proxy) in front of the local
broker, ``warren run api`` publishing through it, and this process posting messages one at a
time. First with the link up, then while the link is silently blackholed (no FIN, no RST:
``docker network disconnect``), long enough for the watchdog to call the connection dead and
for reconnect attempts to fail: the API must answer as fast as before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pika

from warren.testing import ProxyHandle, ToxiproxyClient, partition_sync

if TYPE_CHECKING:
    from collections.abc import Iterator

BROKER = "127.0.0.1:5672"
QUEUE = "warren.bench.api"
HEARTBEAT = 2


@dataclass(frozen=True)
class Latencies:
    up: list[float]
    down: list[float]
    buffered: int  # jobs the API's publisher held during the partition, at its end

    @staticmethod
    def pct(xs: list[float], p: int) -> float:
        return statistics.quantiles(xs, n=100)[p - 1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _post_timed(client: httpx.Client, url: str, n: int) -> tuple[list[float], list[str]]:
    out: list[float] = []
    push: list[str] = []
    for i in range(n):
        t = time.perf_counter()
        r = client.post(url, json={"from": "bench", "to": f"device-{i % 50}", "text": "hi"})
        out.append(time.perf_counter() - t)
        if r.status_code != 202:
            raise RuntimeError(f"POST /messages answered {r.status_code}: {r.text}")
        push.append(r.json()["push"])
    return out, push


def _buffer_depth(metrics_url: str) -> int:
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith('warren_buffer_depth{worker="api"}'):
            return int(float(line.split()[-1]))
    raise RuntimeError("warren_buffer_depth is missing from /metrics")


def measure(
    requests: int = 2000, partition_seconds: float = 3 * HEARTBEAT + 2, *, outbox: bool = True
) -> Latencies:
    """``outbox``: the api's transactional outbox (its default) or memory only."""
    warren = str(Path(sys.executable).with_name("warren"))
    db = Path(tempfile.mkdtemp(prefix="warren-bench-")) / "api.sqlite3"
    toxi_port, api_port, metrics_port = _free_port(), _free_port(), _free_port()
    with _process([warren, "proxy", "--port", str(toxi_port)], {}):
        client = ToxiproxyClient(f"http://127.0.0.1:{toxi_port}")
        _wait_http(f"http://127.0.0.1:{toxi_port}/version")
        info = client.create_proxy("bench-amqp", BROKER)
        proxy = ProxyHandle(client, "bench-amqp", "127.0.0.1", info.port)
        env = {
            "WARREN_AMQP_URL": proxy.amqp_url(),
            "WARREN_HEARTBEAT": str(HEARTBEAT),
            "WARREN_API_ADDR": f"127.0.0.1:{api_port}",
            "WARREN_API_DB": str(db),
            "WARREN_API_OUTBOX": "on" if outbox else "off",
            "WARREN_PUSH_QUEUE": QUEUE,
            "WARREN_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "WARREN_LOG_LEVEL": "ERROR",
        }
        api = f"http://127.0.0.1:{api_port}"
        with _process([warren, "run", "api"], env), httpx.Client() as http:
            _wait_http(f"{api}/messages/none")
            _post_timed(http, f"{api}/messages", 300)  # warm up
            up, _ = _post_timed(http, f"{api}/messages", requests)
            down: list[float] = []
            with partition_sync(proxy):
                # as many requests as with the link up, and for at least partition_seconds,
                # so the watchdog fires and reconnects fail while requests keep coming
                started = time.monotonic()
                while len(down) < requests or time.monotonic() - started < partition_seconds:
                    times, push = _post_timed(http, f"{api}/messages", 100)
                    if "queued" not in push:
                        raise RuntimeError("the API dropped pushes: its buffer is too small")
                    down += times
                buffered = _buffer_depth(f"http://127.0.0.1:{metrics_port}/metrics")
    _delete_queue()
    return Latencies(up, down, buffered)


def _delete_queue() -> None:
    conn = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@{BROKER}/%2F"))
    for suffix in ("", ".dlq"):
        conn.channel().queue_delete(QUEUE + suffix)
    conn.close()


if __name__ == "__main__":
    lat = measure()
    for name, xs in (("up", lat.up), ("blackholed", lat.down)):
        print(f"{name:<10} n={len(xs)} p50={lat.pct(xs, 50) * 1e3:.2f} ms "
              f"p99={lat.pct(xs, 99) * 1e3:.2f} ms")  # fmt: skip
    print(f"buffered at the end of the partition: {lat.buffered}")
