"""Servers that run out of file descriptors pause accepting and keep serving.

A worker's ops server and the fault proxy each accept connections in a loop. When the
process is out of file descriptors (idle or half-open clients holding them), ``accept``
fails with EMFILE; that must pause the loop, not end it (it used to kill the process).
Each test runs the real command under a low RLIMIT_NOFILE and floods it with idle clients.
"""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import socket
import subprocess
import time
import urllib.request
from typing import IO, TYPE_CHECKING

import pytest

from tests.support.helpers import WARREN, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(90)
NOFILE = 96  # the child's descriptor limit; the flood opens more clients than that


def _limited(nofile: int) -> None:
    """preexec_fn: the child may open ``nofile`` descriptors at most."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))


@contextlib.contextmanager
def _process(cmd: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    import os

    with subprocess.Popen(cmd, env={**os.environ, **(env or {})}, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          preexec_fn=lambda: _limited(NOFILE)) as proc:  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def _wait_for_line(stream: IO[str], needle: str, proc: subprocess.Popen[str]) -> None:
    """Read ``stream`` until a line holds ``needle`` (fails if the process ends first)."""
    seen = []
    for line in stream:
        seen.append(line)
        if needle in line:
            return
    pytest.fail(f"exited {proc.wait()} before {needle!r}:\n{''.join(seen[-30:])}")


def _flood(port: int, count: int) -> list[socket.socket]:
    """``count`` idle clients (connected at TCP level; the server may not have accepted)."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def _get(url: str, within: float = 20) -> bytes:
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bytes(resp.read())
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered again"
            time.sleep(0.05)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ops_server_out_of_descriptors_pauses_and_serves_again(backend: str) -> None:
    port = free_port()
    env = {"WARREN_METRICS_ADDR": f"127.0.0.1:{port}",
           "WARREN_FAKE_PUSH_ADDR": f"127.0.0.1:{free_port()}"}  # fmt: skip
    with _process([*WARREN, "run", "fake-push-provider", "--backend", backend], env) as proc:
        assert proc.stderr is not None
        _get(f"http://127.0.0.1:{port}/healthz")
        clients = _flood(port, 2 * NOFILE)
        _wait_for_line(proc.stderr, "accept.paused", proc)
        assert proc.poll() is None
        for client in clients:
            client.close()
        assert b"warren_info" in _get(f"http://127.0.0.1:{port}/metrics")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert proc.returncode == 0


def test_fault_proxy_out_of_descriptors_pauses_and_serves_again(
    tmp_path: Path, broker_url: str
) -> None:
    from warren.testing import ToxiproxyClient

    config = tmp_path / "proxies.json"
    proxy_port = free_port()
    spec = {"name": "rabbit", "listen": f"127.0.0.1:{proxy_port}", "upstream": "127.0.0.1:5672"}
    config.write_text(json.dumps([spec]))
    api_port = free_port()
    with _process([*WARREN, "proxy", "--port", str(api_port), "--config", str(config)]) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert "API on" in proc.stdout.readline()
        clients = _flood(proxy_port, 2 * NOFILE)
        _wait_for_line(proc.stderr, "accept.paused", proc)
        assert proc.poll() is None
        for client in clients:
            client.close()
        _get(f"http://127.0.0.1:{api_port}/version")
        assert ToxiproxyClient(f"http://127.0.0.1:{api_port}").get_proxy("rabbit").enabled
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as amqp:
            amqp.sendall(b"AMQP\x00\x00\x09\x01")
            assert amqp.recv(1), "the proxy relays to the broker again"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert proc.returncode == 0
