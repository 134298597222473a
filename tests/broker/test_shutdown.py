"""Stopping workers and `warren run` processes: on time, with the right exit code, on both
backends.

Every service exits 0 on SIGTERM when it had nothing to lose (a deploy must not look like a
crash), the stop is bounded even while the broker link is silently blackholed, and a second
signal forces the process out within a second.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.support.broker import Broker, rabbitmqctl
from tests.support.helpers import WARREN, free_port, wait_serving, wait_until
from warren import Backoff, ConnectionConfig, Metrics, Publisher, PublisherClosed, PublisherConfig
from warren.testing import partition

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from warren.testing.pytest_plugin import ProxiedBroker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]
BACKENDS = ["asyncio", "trio"]


def start(service: str, backend: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    full = {**os.environ, "WARREN_METRICS_ADDR": f"127.0.0.1:{port}", **env}
    cmd = [*WARREN, "run", service, "--backend", backend]
    proc = subprocess.Popen(cmd, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    return proc, port


def stop(proc: subprocess.Popen[str], within: float) -> tuple[float, str, str]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=within + 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return time.monotonic() - started, out, err


def service_env(service: str, tmp_path: Path) -> dict[str, str]:
    return {
        "api": {"WARREN_API_ADDR": f"127.0.0.1:{free_port()}",
                "WARREN_API_DB": str(tmp_path / "api.sqlite3")},
        "fake-push-provider": {"WARREN_FAKE_PUSH_ADDR": f"127.0.0.1:{free_port()}"},
        "push-sender": {},
        "demo-publisher": {"WARREN_DEMO_JOBS": "0"},
    }[service]  # fmt: skip


@pytest.fixture
def cleanup_queues() -> Iterator[str]:
    """A queue name prefix; every queue with it is deleted afterwards."""
    prefix = f"warren.test.stop.{uuid.uuid4().hex[:8]}"
    yield prefix
    names = rabbitmqctl("list_queues", "--quiet", "--no-table-headers", "name").split()
    with Broker() as broker:
        for name in names:
            if name.startswith(prefix):
                broker.delete_queue(name)


@pytest.mark.scenario  # every service's process (10 s): make scenarios
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("service", ["api", "fake-push-provider", "push-sender"])
def test_sigterm_is_a_clean_exit_for_every_service(
    service: str, backend: str, tmp_path: Path, broker_url: str, cleanup_queues: str
) -> None:
    env = {**service_env(service, tmp_path), "WARREN_PUSH_QUEUE": cleanup_queues}
    proc, port = start(service, backend, env)
    wait_serving(proc, port)
    _, _, err = stop(proc, within=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert "CancelledError" not in err, err


# -- the library: bounded stops ---------------------------------------------------------


class _LongestBackoff(random.Random):
    """Every backoff draw is the longest allowed (full jitter made deterministic)."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_aclose_before_enter_returns(metrics: Metrics) -> None:
    pub = Publisher(PublisherConfig(), metrics=metrics, name="never-started")
    with anyio.fail_after(2):
        await pub.aclose()
    with pytest.raises(PublisherClosed):
        pub.submit({"late": True}, routing_key="q")


async def test_stop_interrupts_the_reconnect_backoff(metrics: Metrics) -> None:
    refused = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    backoff = Backoff(base=30, cap=30, rng=_LongestBackoff())
    config = PublisherConfig(connection=ConnectionConfig(urls=refused), flush_timeout=0.5)
    pub = Publisher(config, metrics=metrics, name="backing-off", backoff=backoff)
    async with pub:
        await wait_until(lambda: pub.statistics().last_error, within=10)  # now waiting 30 s
        started = anyio.current_time()
    took = anyio.current_time() - started
    assert took < config.flush_timeout + 1, f"the stop waited out the backoff: {took:.1f}s"


@pytest.mark.timeout(60)
async def test_stop_during_a_silent_partition_is_bounded(
    rabbit_proxy: ProxiedBroker, metrics: Metrics, queue_name: str
) -> None:
    """heartbeat 10: without a bound, pika's close handshake waits ~30 s on a dead link."""
    config = PublisherConfig(
        connection=ConnectionConfig(urls=rabbit_proxy.url, heartbeat=10), flush_timeout=1.0
    )
    pub = Publisher(config, metrics=metrics, name="partitioned")
    async with pub:
        await pub.wait_connected()
        async with partition(rabbit_proxy.proxy):
            for i in range(20):
                pub.submit({"i": i}, routing_key=queue_name)
            started = anyio.current_time()
            with anyio.fail_after(30):
                await pub.aclose()
            took = anyio.current_time() - started
    assert took < config.flush_timeout + 1, f"stop took {took:.1f}s"
    stats = pub.statistics()
    assert stats.dropped["shutdown"] + stats.confirmed == 20
    assert stats.buffer_depth == 0


def test_a_second_signal_forces_the_exit_within_a_second() -> None:
    """First SIGTERM: flush (up to a minute here, and the broker never answers); second:
    out within a second, the jobs it gave up on counted and the exit code saying so."""
    env = {
        "WARREN_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
        "WARREN_BUFFER_SIZE": "50",
        "WARREN_FLUSH_TIMEOUT": "60",
        "WARREN_DEMO_JOBS": "1000",
    }
    proc, port = start("demo-publisher", "asyncio", env)
    wait_serving(proc, port)
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    for line in proc.stderr:  # the first signal is handled: the flush has begun
        if "shutdown.requested" in line:
            break
    assert proc.poll() is None, "exited on the first signal although it could not flush"
    took, _, err = stop(proc, within=1)
    assert took < 1.0, f"the second signal took {took:.1f}s"
    assert proc.returncode == 5, err
    assert "shutdown.forced" in err
    assert "shutdown.unflushed_total jobs_dropped=50" in err


class _HeldBroker:
    """A TCP port in front of the real broker that holds each client's protocol header
    until ``release()``: until then a connection stays in the middle of its AMQP handshake.
    Never released, it is a broker that accepts and then hangs."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self._upstream = upstream
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.greeted = threading.Event()  # a client sent its protocol header
        self._released = threading.Event()
        self._socks: list[socket.socket] = [self._sock]
        threading.Thread(target=self._serve, daemon=True).start()

    def release(self) -> None:
        self._released.set()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._socks.append(conn)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        header = conn.recv(8)
        self.greeted.set()
        self._released.wait()
        up = socket.create_connection(self._upstream)
        self._socks.append(up)
        up.sendall(header)
        threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()
        self._pump(conn, up)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._released.set()
        for sock in self._socks:
            sock.close()


def _close_reached_pika(caplog: pytest.LogCaptureFixture) -> bool:
    """pika's I/O loop has run our close request (its DEBUG line says so)."""
    return any(
        "invoking callback" in r.getMessage() and "_close_intentionally" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("broker_answers", [True, False], ids=["answers", "hangs"])
async def test_stop_in_the_middle_of_the_handshake_is_quiet_and_bounded(
    broker_answers: bool, broker_url: str, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop that lands while the AMQP handshake is under way (a SIGTERM right after start)
    lets a broker that answers finish it and closes cleanly, without a word at ERROR; one
    that hangs is cut after the close grace, without a traceback and without leaking the
    socket. pika 1.4's own close() during the handshake reports its abort as a class instead
    of an instance and logs an AssertionError traceback (seen in CI on a clean SIGTERM)."""
    held = _HeldBroker()
    try:
        config = PublisherConfig(
            connection=ConnectionConfig(
                urls=f"amqp://guest:guest@127.0.0.1:{held.port}/%2F", connect_timeout=20
            ),
            flush_timeout=1.0,
        )
        # pika's own level too: the runner's configure_logging (run in-process by other
        # tests) sets it to WARNING, and this test reads pika's DEBUG lines
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="pika"):
            pub = Publisher(config, metrics=metrics, name="handshaking")
            async with pub:
                await wait_until(held.greeted.is_set, within=10)
                started = anyio.current_time()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pub.aclose)
                    await wait_until(lambda: _close_reached_pika(caplog))
                    if broker_answers:
                        held.release()
            took = anyio.current_time() - started
    finally:
        held.close()
    assert took < config.flush_timeout + 1, f"stop took {took:.1f}s"
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks
    if broker_answers:
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, errors
        assert any("Closing connection (200)" in r.getMessage() for r in caplog.records)


def test_a_close_that_lands_before_the_declarations_is_not_a_pika_traceback() -> None:
    """CI once showed pika's traceback from a clean exit 2: one worker's topology was
    refused, the service began closing its other worker's connection, and that connection's
    ``confirm.select-ok`` then arrived and Warren declared its topology on a channel already
    closing (``ChannelWrongStateError`` raised inside pika's frame handler, logged with a
    traceback, the connection aborted). A channel that is not open is left alone: its close
    is already on its way."""
    import pika.exceptions

    from warren import PublisherConfig, Queue, Topology
    from warren._amqp.thread import PikaSession

    events: list[object] = []
    session = PikaSession(session=1, url="amqp://127.0.0.1/", attempt=1,
                          config=PublisherConfig(), topology=Topology(queues=(Queue(name="q"),)),
                          emit=events.append, name="t")  # fmt: skip

    class ClosingChannel:
        is_open = False

        def queue_declare(self, *args: object, **kwargs: object) -> None:
            raise pika.exceptions.ChannelWrongStateError("Channel is closing.")

    session._channel = ClosingChannel()
    session._declare()  # the confirm.select-ok callback
    assert events == []  # not announced as connected either
