"""The watchdog's "are bytes waiting?" over TLS: bytes already decrypted and held in the TLS
layer count, though the raw socket has nothing left to read (#30)."""

from __future__ import annotations

import socket
import ssl
import threading
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from warren._amqp.pika_internals import input_waiting
from warren.testing import TestCA

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(20)


def test_bytes_held_inside_the_tls_layer_count_as_waiting(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    server_cert = ca.issue("server", hosts=("localhost",))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(server_cert.cert, server_cert.key)
    client_ctx = ssl.create_default_context(cafile=str(ca.cert))
    a, b = socket.socketpair()
    with a, b:
        done = threading.Event()

        def serve() -> None:
            with server_ctx.wrap_socket(a, server_side=True) as tls:
                tls.sendall(b"x" * 8000)  # one TLS record
                done.wait(10)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with client_ctx.wrap_socket(b, server_hostname="localhost") as tls:
                first = tls.recv(100)  # the whole record leaves the kernel; 100 bytes of it here
                assert first == b"x" * 100
                conn = SimpleNamespace(_transport=SimpleNamespace(_sock=tls))
                assert tls.pending() == 7900
                assert input_waiting(conn)
                rest = b""
                while len(rest) < 7900:
                    rest += tls.recv(8000)
                assert not input_waiting(conn)  # all read: nothing waits anywhere
        finally:
            done.set()
            thread.join(10)
