"""Every private attribute of pika that Warren touches, behind small named functions.

Warren goes under pika's public API in a few places, each for throughput or for a faster
verdict on a dead link: it writes pre-encoded frames straight to the connection's output, cuts
the stream itself (watchdog, close grace), peeks at the socket and merges the transport's
queued writes, and puts its delivery reader in front of the connection's input path. Those
names live here and nowhere else, so a pika release that moves one breaks this one module;
``tests/repo/test_internals.py`` checks both that they still exist and that no other module
uses them. Each function is called once per batch or per event, never per frame.
"""

from __future__ import annotations

import select
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


def terminate_stream(conn: Any, reason: BaseException) -> None:
    """Cut the connection's stream now; pika closes it with ``reason`` (no handshake)."""
    conn._terminate_stream(reason)


def write_frames(conn: Any, writes: list[bytes]) -> None:
    """Hand already-marshalled frames to the connection's output (pika counts them for its
    heartbeats)."""
    conn._output_marshaled_frames(writes)


def body_max_length(conn: Any) -> int:
    """The largest body frame payload the connection negotiated (frame_max minus 8)."""
    size: int = conn._body_max_length
    return size


def opening_without_transport(conn: Any) -> bool:
    """Still opening, before the TCP connection is made (no AMQP handshake under way)."""
    opening = not (conn.is_open or conn.is_closing or conn.is_closed)
    return opening and conn._transport is None


def input_waiting(conn: Any) -> bool:
    """Whether bytes from the broker wait unread in the connection's socket. Over TLS that
    includes bytes already decrypted and held in the TLS layer (``SSLSocket.pending()``),
    which a look at the raw socket cannot see: the rest of a record read in part."""
    sock = getattr(getattr(conn, "_transport", None), "_sock", None)
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)
    if callable(pending):
        try:
            if pending() > 0:
                return True
        except (OSError, ValueError):
            pass
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


def merge_queued_output(conn: Any) -> None:
    """Join the transport's queued output into one buffer, so it leaves in one send().

    pika queues every frame separately and sends them one syscall each. Joining keeps order
    and byte count. If a pika version lacks these internals, this does nothing.
    """
    transport = getattr(conn, "_transport", None)
    buffers = getattr(transport, "_tx_buffers", None)
    if isinstance(buffers, deque) and len(buffers) > 2:
        joined = b"".join(buffers)
        buffers.clear()
        buffers.append(joined)


def can_divert_input(conn: Any) -> bool:
    """Whether the connection's input path is the one ``divert_input`` knows."""
    return hasattr(conn, "_on_data_available") and hasattr(conn, "_frame_buffer")


def input_path(
    conn: Any,
) -> tuple[Callable[[bytes], None], Callable[[int], None], Callable[[], bytes]]:
    """What a reader in front of pika's input needs: pika's own handler for bytes it passes
    on, a byte counter (pika's heartbeats and the watchdog read it), and a function taking
    the partial frame pika holds (the start of the next one)."""

    def count(n: int) -> None:
        conn.bytes_received += n

    def pending() -> bytes:
        held, conn._frame_buffer = conn._frame_buffer, b""
        return bytes(held)

    to_pika: Callable[[bytes], None] = conn._on_data_available
    return to_pika, count, pending


def divert_input(conn: Any, feed: Callable[[bytes], None], recv: int, per_event: int) -> None:
    """Send the bytes the transport reads to ``feed`` instead of pika's handler, read up to
    ``recv`` bytes per recv() and ``per_event`` per readable event (instance attributes over
    pika's class defaults)."""
    transport = conn._transport
    transport._MAX_RECV_BYTES = recv
    transport._MAX_CONSUME_BYTES = per_event
    conn._on_data_available = feed
