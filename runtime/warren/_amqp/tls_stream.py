"""TLS over memory buffers: the socket pika drives for ``amqps://``, read in large chunks.

Python's ``SSLSocket`` lets OpenSSL read the socket itself: two ``read()`` system calls per
TLS record (its header, then its body) and at most one record (16 KB) per ``recv()``, each a
release of the GIL that the event loop's thread may take and hold. A broker sends many small
records (one per write), so a consumer paid that per record where plain TCP pays it per 64 KB.

``TlsStream`` keeps the same interface pika uses (``do_handshake``, ``recv``, ``send``,
``pending``, ``fileno``, ``shutdown``, ``close``) and raises the same ``ssl`` errors with the
same ``errno`` (``SSL_ERROR_WANT_READ`` / ``_WRITE``), but runs TLS on an ``SSLObject`` over
two ``MemoryBIO``: one ``recv_into`` takes everything the kernel holds (up to 256 KB), the
records in it are decrypted without another system call, and a ``recv()`` returns up to what
was asked. Verification, ciphers and certificates are the ``SSLContext``'s, unchanged.

Writes: the ciphertext the socket would not take waits here. So that pika keeps asking for
the socket to become writable while it waits, a ``send()`` that leaves some behind reports
its last byte as not sent (it is encrypted already, and skipped when pika offers it again).
Reading never waits for that backlog: a broker that stops reading (an alarm, a slow link)
still has its heartbeats, ``connection.blocked`` and last frames read. TLS's own messages
(a key update, a TLS 1.2 renegotiation) go out or come in on whichever side needs them.
"""

from __future__ import annotations

import ssl
from collections import deque
from typing import TYPE_CHECKING, Any, Final, final

if TYPE_CHECKING:
    import socket

_RAW_CHUNK: Final = 256 * 1024  # bytes per recv_into from the kernel
_RECORD: Final = 16 * 1024 + 256  # more than one record's plaintext
_SEND_MAX: Final = 512 * 1024  # plaintext encrypted per send(): pika offers the rest again


def _want_read() -> ssl.SSLWantReadError:
    return ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "The operation did not complete (read)")


def _want_write() -> ssl.SSLWantWriteError:
    return ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE, "The operation did not complete (write)")


@final
class TlsStream:
    """A client TLS connection over a connected, non-blocking socket (see the module doc)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str | None):
        self._socket = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        self._chunk = bytearray(_RAW_CHUNK)
        self._plain: deque[bytes] = deque()  # decrypted, not yet returned (oldest first)
        self._plain_bytes = 0
        self._unsent = memoryview(b"")  # ciphertext the socket has not taken yet
        self._precommitted = 0  # leading bytes of the next send()'s data already encrypted
        self._eof = False
        self._error: OSError | None = None  # what ended the stream, after the data before it

    # -- what pika calls ------------------------------------------------------------------

    def fileno(self) -> int:
        return self._socket.fileno()

    def do_handshake(self) -> None:
        """One step of the handshake; ``SSLWantReadError`` / ``SSLWantWriteError`` until done
        (the socket is non-blocking, as with ``SSLSocket``)."""
        if not self._flush():
            raise _want_write()
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                if not self._flush():
                    raise _want_write() from None
                if not self._fill_if_ready():
                    raise _want_read() from None
                continue
            except ssl.SSLError:
                self._flush_quietly()  # our alert tells the broker why
                raise
            if not self._flush():  # our last handshake message must leave before we say done
                raise _want_write()
            return

    def recv(self, size: int) -> bytes:
        """Up to ``size`` decrypted bytes; ``b""`` at the broker's close_notify; raises
        ``SSLWantReadError`` when nothing is there (``SSLWantWriteError`` when TLS must
        first send something the socket will not take). An error that ends the stream
        comes after every byte that arrived before it (a broker's last frame, then its FIN)."""
        if not self._plain:
            if self._error is not None:
                raise self._error
            try:
                self._decrypt(size)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except OSError as exc:  # ssl.SSLError is one
                if not self._plain:
                    raise
                self._error = exc  # raised by the next recv(), after this data
        plain = self._plain
        taken: list[bytes] = []
        room = size
        while plain and room > 0:
            chunk = plain[0]
            if len(chunk) <= room:
                taken.append(plain.popleft())
                room -= len(chunk)
            else:
                taken.append(chunk[:room])
                plain[0] = chunk[room:]
                room = 0
        data = taken[0] if len(taken) == 1 else b"".join(taken)
        self._plain_bytes -= len(data)
        return data

    def send(self, data: bytes) -> int:
        """Encrypt ``data`` (up to 512 KB of it) and send what the socket takes; the count of
        ``data``'s bytes taken (all but the last while ciphertext waits: the module doc)."""
        if not self._flush():
            raise _want_write()
        view = memoryview(data)[self._precommitted : self._precommitted + _SEND_MAX]
        while view:
            try:
                written = self._tls.write(view)
            except ssl.SSLWantReadError:  # TLS must read first: a TLS 1.2 renegotiation
                if not self._flush():
                    raise _want_write() from None
                if not self._fill_if_ready():
                    raise _want_read() from None
                continue
            except ssl.SSLError:
                self._flush_quietly()
                raise
            self._precommitted += written  # kept if this call ends in an exception
            view = view[written:]
        taken, self._precommitted = self._precommitted, 0
        if self._flush():
            return taken
        self._precommitted = 1
        return taken - 1

    def pending(self) -> int:
        """Bytes read from the socket and not yet returned (decrypted or not)."""
        return self._plain_bytes + self._tls.pending() + self._in.pending

    def shutdown(self, how: int) -> None:
        self._socket.shutdown(how)

    def close(self) -> None:
        self._socket.close()

    def getpeercert(self) -> Any:
        return self._tls.getpeercert()

    def version(self) -> str | None:
        return self._tls.version()

    def __repr__(self) -> str:
        return f"<TlsStream fd={self.fileno()} {self._tls.version() or 'handshaking'}>"

    # -- inside ---------------------------------------------------------------------------

    def _decrypt(self, size: int) -> None:
        """Decrypt what has arrived, reading the socket when TLS needs more, until ``size``
        bytes wait or nothing more is there (then ``SSLWantReadError`` if none waits)."""
        while self._plain_bytes < size:
            try:
                chunk = self._tls.read(_RECORD)
            except ssl.SSLWantReadError:
                if self._fill_if_ready():
                    continue
                if self._plain:
                    return
                # Nothing to read. What TLS itself must send (a key update's answer) goes
                # now; if the socket will not take it and pika is not already waiting to
                # write (it holds our last byte when it is), it must wait for that first.
                if not self._flush_quietly() and not self._precommitted:
                    raise _want_write() from None
                raise _want_read() from None
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLError:
                self._flush_quietly()  # our alert, if TLS made one
                raise
            if not chunk:  # the broker's close_notify (read() says it so): a clean end
                if not self._plain:
                    self._plain.append(b"")  # recv() returns b"": the end of the stream
                return
            self._plain.append(chunk)
            self._plain_bytes += len(chunk)

    def _fill_if_ready(self) -> bool:
        """Move what the kernel holds into TLS; False when it holds nothing."""
        if self._eof:
            return False
        try:
            n = self._socket.recv_into(self._chunk)
        except (BlockingIOError, InterruptedError):
            return False
        if n == 0:  # the TCP stream ended: TLS decides whether that was clean
            self._eof = True
            self._in.write_eof()
            return True
        with memoryview(self._chunk) as view:
            self._in.write(view[:n])
        return True

    def _flush(self) -> bool:
        """Send the ciphertext TLS made; True when none is left waiting."""
        if self._out.pending:
            made = self._out.read()
            self._unsent = (
                memoryview(bytes(self._unsent) + made) if self._unsent else memoryview(made)
            )
        while self._unsent:
            try:
                sent = self._socket.send(self._unsent)
            except (BlockingIOError, InterruptedError):
                return False
            self._unsent = self._unsent[sent:]
        return True

    def _flush_quietly(self) -> bool:
        """``_flush`` from the read side: a failed send is the send side's to report (the
        read side first hands on what the broker said before it)."""
        try:
            return self._flush()
        except OSError:
            return True  # nothing more will leave: do not wait for writability
