"""Helpers for the Toxiproxy compatibility suites: raw HTTP calls to whatever
``fault_proxy_server`` runs (Warren's proxy or a real Toxiproxy) and a threaded echo server."""

from __future__ import annotations

import json
import socketserver
import threading
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anyio.abc import SocketStream

    from warren.testing import ToxiproxyClient


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def call(api: ToxiproxyClient, method: str, path: str, body: object = None) -> Answer:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api.api_url + path, data=data, method=method,
                                 headers={"User-Agent": "compat-test"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Answer(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers, exc.read())


def unique_name(made: list[str]) -> str:
    """A fresh proxy name, remembered in ``made`` so the fixture deletes it."""
    name = f"compat-{uuid.uuid4().hex[:8]}"
    made.append(name)
    return name


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


@contextmanager
def echo_server() -> Iterator[int]:
    """An echo server in a thread (the proxy's upstream), for sync and async tests alike;
    yields its port."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield int(server.server_address[1])
        server.shutdown()


async def roundtrip(conn: SocketStream, data: bytes, within: float = 5) -> bytes:
    """Send ``data`` through an echo and read back as many bytes (failing after ``within``)."""
    await conn.send(data)
    got = b""
    with anyio.fail_after(within):
        while len(got) < len(data):
            got += await conn.receive()
    return got
