"""`make soak`: the services as an operator runs them, long enough to tell a leak from warm-up.

``warren run api``, ``push-sender`` (Redis deduplication) and ``fake-push-provider`` as
processes; the api's and the sender's links to RabbitMQ go through a fault proxy. First
steady load, then the same load with both links silently cut (no FIN, no RST) for
``--cut-for`` seconds at the start of every interval. At the end of every interval (just
before the next cut, so every sample sits at the same phase) it samples each process's RSS,
descriptors and threads, the api's buffer depth and database size, and the latency of that
interval's requests. At the end: every accepted push delivered, none twice; then a
least-squares slope per process over the samples after warm-up, failing past the bounds.
The last line prints the slopes.

    python -m tests.chaos.service_soak --steady-minutes 5 --cut-minutes 20   # by hand
    python -m tests.chaos.service_soak --short                               # CI's form
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.helpers import WARREN, free_port
from warren.testing import (
    ProxyHandle,
    ToxiproxyClient,
    ToxiproxyError,
    delete_queues,
    partition,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
SERVICES = ("fake-push-provider", "push-sender", "api")
CONNECTIONS = 32  # kept-alive connections the load is offered over
# what is judged for growth: the fake provider keeps every push it got in memory by design
JUDGED = ("push-sender", "api")


@dataclass(frozen=True)
class Bounds:
    rss_mb_per_h: float
    fds_per_h: float
    threads_per_h: float


@dataclass
class Sample:
    at: float  # minutes since the start
    phase: str
    rss_mb: dict[str, float]
    fds: dict[str, int]
    threads: dict[str, int]
    buffer_depth: float
    db_mb: float
    p50_ms: float
    p99_ms: float
    requests: int


@dataclass
class Load:
    accepted: set[str] = field(default_factory=set)  # push message ids answered "queued"
    dropped: int = 0
    failed: int = 0  # no 202 (an error status, or no answer in time)
    latencies: list[float] = field(default_factory=list)  # this interval's, in seconds

    def take_latencies(self) -> list[float]:
        taken, self.latencies = self.latencies, []
        return taken


def _proc_stats(pid: int, http_ports: set[int]) -> tuple[float, int, int]:
    """(RSS in MB, open descriptors, threads) of a live process, from /proc.

    HTTP connections to or from ``http_ports`` are not counted: how many the load keeps
    open is the load's choice (its pool), not a leak; what is left — AMQP, Redis, files,
    listeners, pipes — must stay level."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields["VmRSS"].split()[0])
    http = _http_sockets(pid, http_ports)
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed since it was listed
            if os.readlink(f"/proc/{pid}/fd/{fd}") not in http:
                fds += 1
    return rss_kb / 1024, fds, int(fields["Threads"])


def _http_sockets(pid: int, ports: set[int]) -> set[str]:
    """``socket:[inode]`` of the process's TCP sockets with either end on ``ports``."""
    found = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                local, remote = (int(a.rsplit(":", 1)[1], 16) for a in cols[1:3])
                if local in ports or remote in ports:
                    found.add(f"socket:[{cols[9]}]")
    return found


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, value) points, per hour."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return 60.0 * sum((x - mx) * (y - my) for x, y in points) / var


class Soak:
    def __init__(self, args: argparse.Namespace, proxies: list[ProxyHandle], redis: str) -> None:
        self.args = args
        self.proxies = proxies
        self.dir = Path(tempfile.mkdtemp(prefix="warren-soak-"))
        self.queue = f"push.soak.{uuid.uuid4().hex[:8]}"
        self.fake = f"127.0.0.1:{free_port()}"
        self.api = f"127.0.0.1:{free_port()}"
        self.api_metrics = f"127.0.0.1:{free_port()}"
        self.db = self.dir / "api.sqlite3"
        self.env = {
            **os.environ,
            "WARREN_LOG_LEVEL": "INFO",
            "WARREN_PUSH_QUEUE": self.queue,
            "WARREN_PUSH_INVALID_TOKENS_QUEUE": "",
            "WARREN_FAKE_PUSH_ADDR": self.fake,
            "WARREN_PUSH_PROVIDER_URL": f"http://{self.fake}/webhook",
            "WARREN_DEDUP_URL": redis,
            "WARREN_API_ADDR": self.api,
            "WARREN_API_DB": str(self.db),
            "WARREN_HEARTBEAT": str(args.heartbeat),
            # short, so that the database reaches its steady size within the run
            "WARREN_API_RETENTION": str(args.retention),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.load = Load()
        self.samples: list[Sample] = []
        self.started = time.monotonic()

    @contextlib.contextmanager
    def services(self) -> Iterator[None]:
        urls = {"api": self.proxies[0].amqp_url(), "push-sender": self.proxies[1].amqp_url()}
        try:
            for name in SERVICES:
                metrics = self.api_metrics if name == "api" else f"127.0.0.1:{free_port()}"
                env = {
                    **self.env,
                    "WARREN_METRICS_ADDR": metrics,
                    "WARREN_AMQP_URL": urls.get(name, BROKER),
                }
                with (self.dir / f"{name}.log").open("wb") as log:
                    self.procs[name] = subprocess.Popen(
                        [*WARREN, "run", name], env=env, stdout=log, stderr=subprocess.STDOUT
                    )
            yield
        finally:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    async def _ready(self, client: httpx.AsyncClient) -> None:
        with anyio.fail_after(30):
            for url in (f"http://{self.fake}/received", f"http://{self.api}/messages/none"):
                while True:
                    try:
                        await client.get(url)
                        break
                    except httpx.TransportError:
                        self._check_alive()
                        await anyio.sleep(0.1)

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{name} exited {proc.returncode}:\n{tail}")

    async def _offer(self, until: float) -> None:
        """``--rate`` requests a second on a fixed schedule, over ``CONNECTIONS`` kept-alive
        connections: a plain HTTP/1.1 client on sockets (httpx costs the load generator
        more CPU than the api spends answering, on a 2-core machine)."""
        next_index = iter(range(10**12))
        host, port = self.api.rsplit(":", 1)
        async with anyio.create_task_group() as tg:
            for _ in range(CONNECTIONS):
                tg.start_soon(self._connection, host, int(port), next_index, until)

    async def _connection(self, host: str, port: int, indices: Iterator[int], until: float) -> None:
        stream: anyio.abc.SocketStream | None = None
        buffered = b""
        while True:
            i = next(indices)
            due = self.started + i / self.args.rate
            if due >= until:
                break
            await anyio.sleep(max(0.0, due - time.monotonic()))
            text = f"message {i}: ".ljust(100, "x")  # a text of 100 characters
            body = json.dumps({"from": "soak", "to": f"device-{i % 1000}", "text": text})
            request = (
                f"POST /messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
            ).encode()
            started = time.monotonic()
            try:
                with anyio.fail_after(30):
                    if stream is None:
                        stream = await anyio.connect_tcp(host, port)
                        buffered = b""
                    await stream.send(request)
                    status, answer, buffered = await _response(stream, buffered)
            except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream):
                self.load.failed += 1
                if stream is not None:
                    await stream.aclose()
                stream = None
                continue
            self.load.latencies.append(time.monotonic() - started)
            if status != 202:
                self.load.failed += 1
                continue
            doc = json.loads(answer)
            if doc["push"] == "queued":
                self.load.accepted.add(f"push-{doc['id']}")
            else:
                self.load.dropped += 1
        if stream is not None:
            await stream.aclose()

    async def _metric(self, client: httpx.AsyncClient, name: str) -> float:
        text = (await client.get(f"http://{self.api_metrics}/metrics")).text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name
        )

    async def _sample(self, client: httpx.AsyncClient, phase: str) -> Sample:
        ports = {int(addr.rsplit(":", 1)[1]) for addr in (self.api, self.fake)}
        stats = {name: _proc_stats(self.procs[name].pid, ports) for name in SERVICES}
        latencies = sorted(self.load.take_latencies())

        def pick(q: float) -> float:
            return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

        db = sum(p.stat().st_size for p in self.dir.glob("api.sqlite3*"))
        sample = Sample(
            at=(time.monotonic() - self.started) / 60,
            phase=phase,
            rss_mb={n: s[0] for n, s in stats.items()},
            fds={n: s[1] for n, s in stats.items()},
            threads={n: s[2] for n, s in stats.items()},
            buffer_depth=await self._metric(client, "warren_buffer_depth"),
            db_mb=db / 2**20,
            p50_ms=pick(0.5) if latencies else 0.0,
            p99_ms=pick(0.99) if latencies else 0.0,
            requests=len(latencies),
        )
        self.samples.append(sample)
        rss = " ".join(f"{n}={sample.rss_mb[n]:.1f}" for n in SERVICES)
        fds = " ".join(f"{n}={sample.fds[n]}" for n in SERVICES)
        print(
            f"  {sample.at:5.1f} min {phase:<6} rss_mb {rss}  fds {fds}  "
            f"depth={sample.buffer_depth:.0f} db_mb={sample.db_mb:.1f} "
            f"p50={sample.p50_ms:.0f}ms p99={sample.p99_ms:.0f}ms n={sample.requests}",
            flush=True,
        )
        return sample

    async def run(self) -> int:
        a = self.args
        interval = a.interval
        steady = int(a.steady_minutes * 60 / interval)
        cuts = int(a.cut_minutes * 60 / interval)
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as c:
            await self._ready(c)
            self.started = time.monotonic()
            end = self.started + (steady + cuts) * interval
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._offer, end)
                for n in range(steady + cuts):
                    begin = self.started + n * interval
                    await anyio.sleep(max(0.0, begin - time.monotonic()))
                    phase = "steady" if n < steady else "cuts"
                    if phase == "cuts":
                        async with contextlib.AsyncExitStack() as stack:
                            for proxy in self.proxies:
                                await stack.enter_async_context(partition(proxy))
                            await anyio.sleep(a.cut_for)
                    await anyio.sleep(max(0.0, begin + interval - time.monotonic()))
                    await self._sample(c, phase)
            return await self._verdict(c)

    async def _verdict(self, client: httpx.AsyncClient) -> int:
        accepted = self.load.accepted
        got: dict[str, Any] = {}
        # the sender drains what the broker still holds; wait while it makes progress
        received, counts, last, idle_since = f"http://{self.fake}/received", {"ids": "0"}, -1, 0.0
        while True:
            distinct = (await client.get(received, params=counts)).json()["distinct"]
            if distinct >= len(accepted):
                break
            if distinct != last:
                last, idle_since = distinct, time.monotonic()
            elif time.monotonic() - idle_since > 60:
                break  # a minute without one more delivery: what is missing is lost
            await anyio.sleep(1)  # an HTTP server: no event to wait on
        got = (await client.get(f"http://{self.fake}/received")).json()
        delivered = set(got["ids"])
        lost = len(accepted - delivered)
        stranger = len(delivered - accepted)
        duplicates = int(got["duplicates"])
        warm = [s for s in self.samples if s.at >= self.args.warmup_minutes]
        bounds = Bounds(
            self.args.max_rss_mb_per_h, self.args.max_fds_per_h, self.args.max_threads_per_h
        )
        failures: list[str] = []
        slopes: list[str] = []
        for name in SERVICES:
            rss = slope_per_hour([(s.at, s.rss_mb[name]) for s in warm])
            fds = slope_per_hour([(s.at, s.fds[name]) for s in warm])
            threads = slope_per_hour([(s.at, s.threads[name]) for s in warm])
            slopes.append(f"{name}: rss={rss:+.2f}MB/h fds={fds:+.1f}/h threads={threads:+.1f}/h")
            if name in JUDGED:
                for what, value, bound in (
                    ("rss MB/h", rss, bounds.rss_mb_per_h),
                    ("fds/h", fds, bounds.fds_per_h),
                    ("threads/h", threads, bounds.threads_per_h),
                ):
                    if value > bound:
                        failures.append(f"{name} {what} {value:+.2f} > {bound}")
        p99 = slope_per_hour([(s.at, s.p99_ms) for s in warm if s.phase == "steady"])
        settled = [s for s in warm if s.at * 60 >= self.args.retention + 60]
        db = slope_per_hour([(s.at, s.db_mb) for s in settled])
        if len(settled) >= 3 and db > self.args.max_db_mb_per_h:
            failures.append(f"api database {db:+.1f} MB/h > {self.args.max_db_mb_per_h}")
        depth = [s.buffer_depth for s in self.samples]
        stuck = [s for s in self.samples if s.buffer_depth > 2 * self.args.rate]
        if stuck:
            failures.append(f"buffer not drained before {len(stuck)} samples (max {max(depth)})")
        if lost:
            failures.append(f"{lost} accepted pushes never delivered")
        if stranger:
            failures.append(f"{stranger} pushes delivered that were never accepted")
        if duplicates:
            failures.append(f"{duplicates} duplicate deliveries (dedup is on)")
        codes = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if codes:
            failures.append(f"processes ended early: {codes}")
        reconnects = await self._metric(client, "warren_reconnects_total")
        cut_samples = sum(1 for s in self.samples if s.phase == "cuts")
        if reconnects < cut_samples:
            failures.append(f"{cut_samples} cuts but the api reconnected {reconnects:.0f} times")
        kept = min(len(accepted), self.args.retention * self.args.rate)
        per_message = (self.samples[-1].db_mb * 2**20 / kept) if kept else 0.0
        print()
        print(
            f"soak: {len(self.samples)} samples of {self.args.interval:g}s, "
            f"{self.args.rate:g} requests/s, cuts of {self.args.cut_for:g}s"
        )
        print(
            f"  accepted {len(accepted)}  delivered {len(delivered & accepted)}  lost {lost}  "
            f"duplicates {duplicates}  dropped {self.load.dropped}  "
            f"failed {self.load.failed}  api reconnects {reconnects:.0f}"
        )
        print(
            f"  api database {self.samples[-1].db_mb:.1f} MB ({per_message:.0f} B per message "
            f"kept, {self.args.retention:g} s retention), slope {db:+.1f} MB/h after it filled; "
            f"steady p99 slope {p99:+.1f} ms/h; logs in {self.dir}"
        )
        for failure in failures:
            print(f"  FAIL {failure}")
        verdict = "FAIL" if failures else "PASS"
        print(
            f"soak {verdict} slopes after {self.args.warmup_minutes:g} min warm-up: "
            + "; ".join(slopes)
        )
        return 1 if failures else 0


async def _response(stream: anyio.abc.SocketStream, buffered: bytes) -> tuple[int, bytes, bytes]:
    """(status, body, what was read past it) of one HTTP/1.1 response with a Content-Length."""
    while b"\r\n\r\n" not in buffered:
        buffered += await stream.receive()
    head, _, rest = buffered.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(v)
        for k, _, v in (line.partition(":") for line in lines[1:])
        if k.strip().lower() == "content-length"
    )
    while len(rest) < length:
        rest += await stream.receive()
    return status, rest[:length], rest[length:]


def _redis() -> tuple[str, subprocess.Popen[bytes] | None]:
    """The machine's Redis on 6379, else a throwaway one."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
        return "redis://127.0.0.1:6379/0", None
    except OSError:
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", ""], stdout=subprocess.DEVNULL
        )
        return f"redis://127.0.0.1:{port}/0", proc


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos.service_soak")
    ap.add_argument("--steady-minutes", type=float, default=5.0)
    ap.add_argument("--cut-minutes", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=60.0, help="a sample (and a cut) per")
    ap.add_argument("--cut-for", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--heartbeat", type=int, default=5)
    ap.add_argument("--warmup-minutes", type=float, default=5.0)
    ap.add_argument("--max-rss-mb-per-h", type=float, default=10.0)
    ap.add_argument("--max-fds-per-h", type=float, default=6.0)
    ap.add_argument("--max-threads-per-h", type=float, default=6.0)
    ap.add_argument("--retention", type=float, default=300.0, help="WARREN_API_RETENTION")
    ap.add_argument("--max-db-mb-per-h", type=float, default=20.0)
    ap.add_argument(
        "--short",
        action="store_true",
        help="CI's form: 1 + 3 minutes of 20 s intervals at 100/s, looser bounds",
    )
    args = ap.parse_args()
    if args.short:
        args.steady_minutes, args.cut_minutes, args.interval = 1.0, 3.0, 20.0
        # judged from after the first three cuts: they take the buffer (and the allocator)
        # to their high-water mark, a step of a few MB that two minutes would read as a slope
        args.rate, args.warmup_minutes, args.retention = 100.0, 2.0, 60.0
        # two minutes cannot tell a slow leak from noise: these catch a leak per request
        # (200 MB/h is ~500 B a request) or a descriptor or thread per cut
        args.max_rss_mb_per_h, args.max_fds_per_h, args.max_threads_per_h = 200.0, 60.0, 60.0
        args.max_db_mb_per_h = 60.0
    redis, redis_proc = _redis()
    # the fault proxy in a process of its own: in this one it would share a GIL with the load
    proxy_port = free_port()
    proxy_proc = subprocess.Popen([*WARREN, "proxy", "--port", str(proxy_port)],
                                  stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        client = ToxiproxyClient(f"http://127.0.0.1:{proxy_port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.proxies()
                break
            except (ToxiproxyError, OSError):
                if time.monotonic() > deadline or proxy_proc.poll() is not None:
                    raise
                time.sleep(0.1)  # a process starting: nothing to wait on but its port
        proxies = []
        for name in ("soak-api", "soak-sender"):
            info = client.create_proxy(name, "127.0.0.1:5672")
            proxies.append(ProxyHandle(client, name, "127.0.0.1", info.port))
        soak = Soak(args, proxies, redis)
        with soak.services():
            code = anyio.run(soak.run)
        _delete_queues(soak.queue)
        return code
    finally:
        proxy_proc.terminate()
        proxy_proc.wait()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()


def _delete_queues(prefix: str) -> None:
    """The push queue and every queue the sender declared beside it (dead letters, delays)."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "--quiet", "--no-table-headers", "name"],
        capture_output=True,
        text=True,
        check=False,
    )
    delete_queues(BROKER, [q for q in listed.stdout.split() if q.startswith(prefix)])


if __name__ == "__main__":
    sys.exit(main())
