"""``TlsStream``, the TLS socket pika drives for ``amqps://``, against a real TLS server on a
socket pair: what it must keep of ``SSLSocket``'s behaviour (verification, the WANT errors
pika reads by ``errno``, end of stream clean and not) and what it is for (the records that
arrived together come back from one ``recv()``), and no byte lost or reordered when the
socket will not take everything (the held-back last byte)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest

from warren._amqp.pika_internals import input_waiting
from warren._amqp.tls import url_parameters
from warren._amqp.tls_stream import TlsStream
from warren._config.tls import TlsConfig
from warren.testing import TestCA

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


def server_context(ca: TestCA, host: str = "localhost") -> ssl.SSLContext:
    files = ca.issue("server", hosts=(host,))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    return context


class Server:
    """A TLS server on one end of a loopback TCP connection, running ``serve`` in a
    thread."""

    def __init__(self, context: ssl.SSLContext, serve: Callable[[ssl.SSLSocket], None]) -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:  # TCP, as to a broker
            self.client_end = socket.create_connection(listener.getsockname()[:2])
            self._server_end, _ = listener.accept()
        self.client_end.setblocking(False)
        self.error: BaseException | None = None

        def run() -> None:
            try:
                with context.wrap_socket(self._server_end, server_side=True) as tls:
                    serve(tls)
            except BaseException as exc:  # reported by the test that joins
                self.error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(20)
        assert not self._thread.is_alive(), "the server never finished"
        if self.error is not None:
            raise self.error


@pytest.fixture
def serve(ca: TestCA) -> Iterator[Callable[[Callable[[ssl.SSLSocket], None]], Server]]:
    servers: list[Server] = []

    def start(body: Callable[[ssl.SSLSocket], None]) -> Server:
        servers.append(Server(server_context(ca), body))
        return servers[-1]

    yield start
    for server in servers:
        server.client_end.close()


def client(server: Server, ca: TestCA, host: str = "localhost") -> TlsStream:
    return TlsStream(server.client_end, ssl.create_default_context(cafile=str(ca.cert)), host)


def wait_for(sock: TlsStream, error: ssl.SSLError) -> None:
    """What pika does on a WANT error: wait for the socket to be readable or writable."""
    assert error.errno in (ssl.SSL_ERROR_WANT_READ, ssl.SSL_ERROR_WANT_WRITE), error
    writing = error.errno == ssl.SSL_ERROR_WANT_WRITE
    ready = select.select([] if writing else [sock], [sock] if writing else [], [], 10)
    assert ready != ([], [], []), "the socket never became ready"


def handshake(sock: TlsStream) -> None:
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLError as exc:
            if exc.errno not in (ssl.SSL_ERROR_WANT_READ, ssl.SSL_ERROR_WANT_WRITE):
                raise
            wait_for(sock, exc)


def recv(sock: TlsStream, size: int = 65536) -> bytes:
    while True:
        try:
            return sock.recv(size)
        except ssl.SSLError as exc:
            if exc.errno not in (ssl.SSL_ERROR_WANT_READ, ssl.SSL_ERROR_WANT_WRITE):
                raise
            wait_for(sock, exc)


def send_all(sock: TlsStream, data: bytes, on_partial: Callable[[], None] = lambda: None) -> int:
    """pika's way: offer what is left, keep the part not taken, wait when told to. Returns
    how many sends took less than offered."""
    partial = 0
    view = memoryview(data)
    while view:
        try:
            taken = sock.send(bytes(view))
        except ssl.SSLError as exc:
            wait_for(sock, exc)
            continue
        if taken < len(view):
            partial += 1
            on_partial()
        view = view[taken:]
    return partial


def test_a_wait_is_the_errno_pika_reads(serve: Callable[..., Server], ca: TestCA) -> None:
    done = threading.Event()
    server = serve(lambda tls: done.wait(10))
    sock = client(server, ca)
    handshake(sock)
    with pytest.raises(ssl.SSLWantReadError) as info:
        sock.recv(100)  # nothing sent
    assert info.value.errno == ssl.SSL_ERROR_WANT_READ
    assert sock.version() in ("TLSv1.2", "TLSv1.3")
    done.set()
    server.join()


def test_records_that_arrived_together_come_back_from_one_recv(
    serve: Callable[..., Server], ca: TestCA
) -> None:
    """300 small writes (a broker's deliveries, a record each) read back in a few recv()
    calls of up to 64 KB, not one per record; every byte in order."""
    sent = [f"{i:06d}".encode() * 50 for i in range(300)]  # 300 bytes each: 90 KB in all
    written = threading.Event()

    def body(tls: ssl.SSLSocket) -> None:
        for chunk in sent:
            tls.sendall(chunk)
        written.set()
        tls.recv(1)  # until the client is done

    server = serve(body)
    sock = client(server, ca)
    handshake(sock)
    assert written.wait(10)
    got: list[bytes] = []
    while sum(map(len, got)) < 90_000:
        got.append(recv(sock))
    assert b"".join(got) == b"".join(sent)
    assert max(map(len, got)) > 16 * 1024, "never more than one record per recv()"
    assert len(got) <= 4
    send_all(sock, b"x")
    server.join()


def test_nothing_lost_or_reordered_when_the_socket_takes_only_part(
    serve: Callable[..., Server], ca: TestCA
) -> None:
    """8 MB sent into a small send buffer, the server reading only once the client was told
    to wait: sends take less than offered (the held-back byte), and the server gets every
    byte, in order."""
    data = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)
    blocked = threading.Event()
    received: list[bytes] = []

    def body(tls: ssl.SSLSocket) -> None:
        assert blocked.wait(10)
        while sum(map(len, received)) < len(data):
            chunk = tls.recv(1 << 20)
            assert chunk, "the stream ended early"
            received.append(chunk)
        tls.sendall(b"done")

    server = serve(body)
    server.client_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    sock = client(server, ca)
    handshake(sock)
    partial = send_all(sock, data, on_partial=blocked.set)
    server.join()
    assert recv(sock) == b"done"
    assert partial > 0, "the socket took everything at once: the test tested nothing"
    assert b"".join(received) == data


def test_the_end_of_the_stream_clean_and_not(serve: Callable[..., Server], ca: TestCA) -> None:
    """close_notify then FIN: recv() returns b"" (the clean end); a FIN without close_notify:
    SSLEOFError, as SSLSocket with suppress_ragged_eofs=False (pika's choice) raises."""

    def clean(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"last")
        with contextlib.suppress(OSError):  # our close_notify never comes (nor pika's)
            tls.unwrap()

    server = serve(clean)
    sock = client(server, ca)
    handshake(sock)
    assert recv(sock) == b"last"
    assert recv(sock) == b""
    sock.close()
    server.join()

    def cut(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"partial")
        tls.shutdown(socket.SHUT_RDWR)  # the TCP stream ends, no close_notify

    server = serve(cut)
    sock = client(server, ca)
    handshake(sock)
    assert recv(sock) == b"partial"
    with pytest.raises(ssl.SSLEOFError):
        recv(sock)
    server.join()


def test_verification_is_the_contexts(
    serve: Callable[..., Server], ca: TestCA, tmp_path: Path
) -> None:
    """An unknown CA and another host name are refused in the handshake, with the same error
    an SSLSocket raises (close_reasons maps it to TlsRefused)."""
    (tmp_path / "other").mkdir()
    for context, host in (
        (ssl.create_default_context(cafile=str(TestCA(tmp_path / "other").cert)), "localhost"),
        (ssl.create_default_context(cafile=str(ca.cert)), "broker.example.com"),
    ):
        server = serve(lambda tls: None)
        sock = TlsStream(server.client_end, context, host)
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(sock)
        with pytest.raises(ssl.SSLError) as told:
            server.join()
        # our alert reached the server (its log says why), not a bare end of stream
        assert "ALERT" in str(told.value).upper(), told.value
        server.client_end.close()


def test_bytes_decrypted_and_not_yet_returned_count_as_waiting(
    serve: Callable[..., Server], ca: TestCA
) -> None:
    """The watchdog's look: what sits in the stream counts, though the kernel has nothing."""
    done = threading.Event()

    def body(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"x" * 8000)
        done.wait(10)

    server = serve(body)
    sock = client(server, ca)
    handshake(sock)
    assert recv(sock, 100) == b"x" * 100
    conn = SimpleNamespace(_transport=SimpleNamespace(_sock=sock))
    assert sock.pending() == 7900 and input_waiting(conn)
    assert len(recv(sock, 8000)) == 7900
    assert sock.pending() == 0 and not input_waiting(conn)
    done.set()
    server.join()


def test_pika_is_given_a_context_that_makes_a_tls_stream(ca: TestCA) -> None:
    """url_parameters hands pika an SSLContext (pika checks) whose wrap_socket, with pika's
    arguments, makes a TlsStream under the process's own context."""
    tls = TlsConfig(ca_file=str(ca.cert), server_name="broker.example.com")
    params = url_parameters("amqps://u:p@10.0.0.1/%2F", tls)
    context = params.ssl_options.context
    assert isinstance(context, ssl.SSLContext)
    a, b = socket.socketpair()
    with a, b:
        made = context.wrap_socket(a, server_side=False, do_handshake_on_connect=False,
                                   suppress_ragged_eofs=False,
                                   server_hostname=params.ssl_options.server_hostname)  # fmt: skip
        assert type(made).__name__ == "TlsStream"
        assert made.fileno() == a.fileno()


def fill_the_send_path(sock: TlsStream) -> None:
    """Offer bytes until the socket takes only part: our ciphertext then waits here, and
    pika holds our last byte (the peer is not reading)."""
    for _ in range(200):
        offered = b"q" * 256 * 1024
        if sock.send(offered) < len(offered):
            return
    raise AssertionError("the socket took everything: the peer is reading after all")


def test_reading_goes_on_while_our_own_bytes_wait(serve: Callable[..., Server], ca: TestCA) -> None:
    """A broker that stops reading (an alarm, a slow link) still sends heartbeats and
    connection.blocked: they are read though our bytes wait (they were not: recv() asked
    to wait for writability first, which never came)."""
    stalled, spoke, heard = threading.Event(), threading.Event(), threading.Event()

    def body(tls: ssl.SSLSocket) -> None:
        assert stalled.wait(10)
        tls.sendall(b"heartbeat")
        spoke.set()
        heard.wait(15)  # still not reading until the client has read it
        with contextlib.suppress(OSError):
            while tls.recv(1 << 20):  # the stall is over: read it all, to the end
                pass

    server = serve(body)
    server.client_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    sock = client(server, ca)
    handshake(sock)
    fill_the_send_path(sock)
    stalled.set()
    assert spoke.wait(10)
    try:
        assert recv(sock) == b"heartbeat"
    finally:
        heard.set()
    sock.close()
    server.join()


class SendingFails:
    """A socket whose sending side is gone (a peer that reset it, a broken pipe) while
    what already arrived can still be read: ``full`` first, then ``broken``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.mode = "open"

    def send(self, data: Any) -> int:
        if self.mode == "full":
            raise BlockingIOError(11, "Resource temporarily unavailable")
        if self.mode == "broken":
            raise BrokenPipeError(32, "Broken pipe")
        return self._sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_a_failed_send_does_not_hide_what_the_broker_said(
    serve: Callable[..., Server], ca: TestCA
) -> None:
    """The broker's last frame arrived, and our bytes wait on a socket whose sending side
    is gone: the frame is read first, then the end (the send's error hid both)."""
    spoke = threading.Event()

    def body(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"bye")
        spoke.set()  # then the TCP stream ends (no close_notify)

    server = serve(body)
    wrapped = SendingFails(server.client_end)
    sock = TlsStream(
        cast("socket.socket", wrapped), ssl.create_default_context(cafile=str(ca.cert)),
        "localhost",
    )  # fmt: skip
    handshake(sock)
    wrapped.mode = "full"
    assert sock.send(b"ack") == 2  # encrypted, not sent: its last byte held back
    wrapped.mode = "broken"
    assert spoke.wait(10)
    server.join()
    assert recv(sock) == b"bye"
    with pytest.raises(ssl.SSLEOFError):
        recv(sock)
    with pytest.raises(BrokenPipeError):
        sock.send(b"k")  # the send side reports its own failure


def test_one_send_encrypts_a_bounded_slice(serve: Callable[..., Server], ca: TestCA) -> None:
    """pika offers its whole joined buffer: at most 512 KB of it is encrypted per call (an
    8 MB offer made 16 MB of ciphertext at once, held until the socket took it)."""
    done = threading.Event()
    server = serve(lambda tls: done.wait(10))
    sock = client(server, ca)
    handshake(sock)
    assert sock.send(b"z" * (8 << 20)) <= 512 * 1024
    done.set()
    server.join()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_tls_1_2_renegotiation_while_we_write(ca: TestCA) -> None:
    """The server renegotiates (as Erlang's ssl does every 2^28 records) while we keep
    writing: TLS must read the server's handshake before it can write. Every line arrives
    (send() spun forever, asking to wait for readability and never reading)."""
    files = ca.issue("server", hosts=("localhost",))
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    command = ["openssl", "s_server", "-tls1_2", "-accept", str(port), "-cert",
               str(files.cert), "-key", str(files.key), "-msg"]  # fmt: skip
    pipe = subprocess.PIPE
    with subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=subprocess.STDOUT) as server:
        try:
            seen = talk_through_a_renegotiation(server, port, ca)
        finally:
            server.kill()
    assert seen.count(b"ClientHello") == 2, "no renegotiation happened: the test tested nothing"
    assert all(b"line %d\n" % i in seen for i in range(300))


def talk_through_a_renegotiation(server: subprocess.Popen[bytes], port: int, ca: TestCA) -> bytes:
    """Connect to ``openssl s_server``, have it renegotiate while we write 300 lines, and
    return what it printed."""
    deadline = time.monotonic() + 10
    while True:  # polled with a deadline: the server's port is the event
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=1)
            break
        except OSError:
            assert time.monotonic() < deadline, "openssl s_server never listened"
            time.sleep(0.05)
    raw.setblocking(False)
    sock = TlsStream(raw, ssl.create_default_context(cafile=str(ca.cert)), "localhost")
    handshake(sock)
    assert sock.version() == "TLSv1.2"
    send_all(sock, b"before\n")
    assert server.stdin is not None
    server.stdin.write(b"r\n")  # s_server's command: renegotiate
    server.stdin.flush()
    for i in range(300):
        send_all(sock, b"line %d\n" % i)
        with contextlib.suppress(ssl.SSLWantReadError):
            sock.recv(65536)  # as pika's reader would, when readable
    send_all(sock, b"after\n")
    deadline = time.monotonic() + 10
    seen = b""
    assert server.stdout is not None
    os.set_blocking(server.stdout.fileno(), False)
    while b"after" not in seen:  # polled with a deadline: s_server prints what it got
        assert time.monotonic() < deadline, seen[-500:]
        seen += server.stdout.read() or b""
        time.sleep(0.02)
    sock.close()
    return seen
