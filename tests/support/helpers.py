"""Helpers shared by the tests (not tests themselves): ports, configs, metrics, polling."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from prometheus_client import CollectorRegistry

from warren import ConnectionConfig, Metrics, PublisherConfig, Service, ServiceContext
from warren._config import CONNECTION_FIELDS
from warren.testing._rabbit_node import free_port as free_port_below_ephemeral

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping
    from pathlib import Path


def free_port() -> int:
    """A loopback port with nothing listening (connections to it are refused), below the
    ephemeral range: a server started on it later (a Redis restarted mid-test) must not find
    it taken by a client that dialed it while it was down and was given it as its own source
    port (Linux lets such a socket connect to itself)."""
    return free_port_below_ephemeral("127.0.0.1")


def connection(url: str, **kw: Any) -> ConnectionConfig:
    """The suite's connection: a fast heartbeat and backoff, so faults resolve in seconds."""
    kw.setdefault("heartbeat", 2)
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_cap", 0.5)
    return ConnectionConfig(urls=url, **kw)


def connection_settings(kw: dict[str, Any]) -> dict[str, Any]:
    """Take the connection settings out of a worker config's keywords (they go in its
    ``ConnectionConfig``)."""
    return {name: kw.pop(name) for name in CONNECTION_FIELDS if name in kw}


def config(url: str, **kw: Any) -> PublisherConfig:
    """A publisher config on ``connection(url)``; connection settings among ``kw`` go there."""
    link = connection_settings(kw)
    kw.setdefault("flush_timeout", 10.0)
    return PublisherConfig(connection=connection(url, **link), **kw)


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def wait_until(predicate: Any, within: float = 20.0, poll: float = 0.02) -> None:
    """Poll with a deadline for state that has no event of its own (counters, flags)."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - polling with a deadline, see docstring
            await anyio.sleep(poll)


WARREN = [sys.executable, "-m", "warren._run.cli"]
"""The ``warren`` command, run with this interpreter."""


def run_warren(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "WARREN_METRICS_ADDR": f"127.0.0.1:{free_port()}", **(env or {})}
    return subprocess.run([*WARREN, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, check=False)  # fmt: skip


def wait_serving(proc: subprocess.Popen[Any], port: int, within: float = 20) -> None:
    """Until a ``warren run`` process's ops server answers /healthz (it is up); fails if the
    process exits first."""
    deadline = time.monotonic() + within
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, "the service never served /healthz"
            time.sleep(0.05)


def outbox_rows(path: Path) -> int:
    """Jobs in an outbox file, read with a connection of the test's own."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM warren_outbox").fetchone()[0])
    finally:
        db.close()


@asynccontextmanager
async def running(service: Service, env: Mapping[str, str]) -> AsyncIterator[ServiceContext]:
    ctx = ServiceContext(env=env, metrics=Metrics(CollectorRegistry()),
                         publisher_config=PublisherConfig.from_env(env))  # fmt: skip
    async with anyio.create_task_group() as tg:
        tg.start_soon(service.main, ctx)
        try:
            yield ctx
        finally:
            ctx.stopping.set()


async def wait_http(url: str) -> None:
    async with httpx.AsyncClient() as client:
        with anyio.fail_after(15):
            while True:
                try:
                    await client.get(url)
                    return
                except httpx.TransportError:
                    await anyio.sleep(0.05)


class RedisServer:
    """A throwaway ``redis-server`` on ``port`` (no persistence): ``restart()`` it mid-test."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port, self._dir = port, directory
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def redis_server(port: int, directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(port, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fcm_service_account(tmp: Path, token_uri: str) -> tuple[Path, Path, str]:
    """A service-account credentials file (as Google issues them) with a fresh test key, and
    the key's public half for the fake provider. Returns (credentials, public key, PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()  # fmt: skip
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    public = key.public_key().public_bytes(serialization.Encoding.PEM, spki)
    creds = tmp / "service-account.json"
    creds.write_text(json.dumps({
        "type": "service_account", "project_id": "warren-test", "private_key_id": "k1",
        "private_key": pem, "client_email": "push@warren-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri,
    }))  # fmt: skip
    (tmp / "public.pem").write_bytes(public)
    return creds, tmp / "public.pem", pem
