"""End to end, as deployed: ``warren run api``, ``push-sender`` and ``fake-push-provider`` as
their own processes on the local broker, driven by concurrent HTTP clients. Sustained
requests/s with the API's latency, and where the CPU goes (a baseline; no peer)."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pika

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CLIENTS = 32
WARMUP = 3.0
SECONDS = 15.0
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    requests_per_s: float
    delivered_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: dict[str, float]  # process -> CPU ms per accepted request


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _broker_pids() -> list[int]:
    done = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return [int(p) for p in done.stdout.split()]


def measure() -> Result:
    queue = f"warren.bench.e2e.{uuid.uuid4().hex[:6]}"
    api, fake, workdir = _port(), _port(), Path(tempfile.mkdtemp(prefix="warren-e2e-"))
    env = {
        **os.environ,
        "WARREN_AMQP_URL": URL,
        "WARREN_PUSH_QUEUE": queue,
        "WARREN_PUSH_INVALID_TOKENS_QUEUE": "",
        "WARREN_FAKE_PUSH_ADDR": f"127.0.0.1:{fake}",
        "WARREN_PUSH_PROVIDER_URL": f"http://127.0.0.1:{fake}/webhook",
        "WARREN_PUSH_CONCURRENCY": "100",
        "WARREN_API_ADDR": f"127.0.0.1:{api}",
        "WARREN_API_DB": str(workdir / "api.sqlite3"),
        "WARREN_LOG_LEVEL": "WARNING",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("fake-push-provider", "push-sender", "api"):
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "warren._run.cli", "run", name],
                env={**env, "WARREN_METRICS_ADDR": f"127.0.0.1:{_port()}"},
            )
        return anyio.run(_drive, f"http://127.0.0.1:{api}", f"http://127.0.0.1:{fake}", procs)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=60)
        conn = pika.BlockingConnection(pika.URLParameters(URL))
        channel = conn.channel()
        for suffix in ("", ".dlq", *(f".retry.{ms}ms" for ms in (1000, 2000, 4000, 8000))):
            channel.queue_delete(queue + suffix)
        conn.close()


async def _drive(api: str, fake: str, procs: dict[str, subprocess.Popen[bytes]]) -> Result:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=CLIENTS)) as c:
        with anyio.fail_after(30):
            while True:
                try:
                    if (await c.get(f"{api}/messages/none")).status_code == 404:
                        break
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.1)
        latencies: list[float] = []
        accepted = 0
        measuring = False

        async def client(stop_at: float) -> None:
            nonlocal accepted
            body = {"from": "bench", "to": "device", "text": "x" * 100}
            while (now := time.perf_counter()) < stop_at:
                r = await c.post(f"{api}/messages", json=body)
                if measuring and r.status_code == 202:
                    latencies.append(time.perf_counter() - now)
                    accepted += 1

        async def phase(seconds: float) -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(CLIENTS):
                    tg.start_soon(client, time.perf_counter() + seconds)

        await phase(WARMUP)
        delivered_before = (await c.get(f"{fake}/received")).json()["distinct"]
        pids = {name: proc.pid for name, proc in procs.items()}
        cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        brokers = _broker_pids()
        broker_before = sum(_cpu_seconds(p) for p in brokers)
        own_before = time.process_time()
        measuring = True
        started = time.perf_counter()
        await phase(SECONDS)
        elapsed = time.perf_counter() - started
        measuring = False
        cpu = {name: _cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        cpu["RabbitMQ"] = sum(_cpu_seconds(p) for p in brokers) - broker_before
        cpu["load generator"] = time.process_time() - own_before
        delivered = (await c.get(f"{fake}/received")).json()["distinct"] - delivered_before
    latencies.sort()
    return Result(
        requests_per_s=accepted / elapsed,
        delivered_per_s=delivered / elapsed,
        p50_ms=statistics.median(latencies) * 1e3,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1e3,
        cpu_ms_per_request={name: s * 1e3 / max(1, accepted) for name, s in cpu.items()},
    )


def rows(r: Result) -> list[str]:
    where = ", ".join(f"{name} {ms:.2f}" for name, ms in r.cpu_ms_per_request.items())
    return [
        f"| end to end: api -> RabbitMQ -> push-sender -> fake provider, {CLIENTS} HTTP clients"
        f" | {r.requests_per_s:,.0f} requests/s accepted, {r.delivered_per_s:,.0f} pushes/s "
        f"delivered; API p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms | baseline |",
        f"| end to end: CPU ms per request, by process | {where} | |",
    ]
