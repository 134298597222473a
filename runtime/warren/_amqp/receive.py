"""The receive path: deliveries and publisher confirms decoded straight from the socket.

pika decodes every frame into objects (a method, a properties object, a body frame each),
dispatches them through its channel's callback machinery, and trims its input buffer by
copying the rest of it after every frame, which costs more the more frames one read holds.
Warren's channel receives little else than ``basic.deliver`` + content header + body frames
(consuming) and ``basic.ack`` / ``basic.nack`` (confirms), so this reader takes the socket's
bytes first: it decodes those frames of its channel in place (offsets into one buffer, only
what Warren uses) and hands every other frame to pika unchanged and in order. Order is kept
across the two: deliveries and confirms that came before a frame for pika are handed on
before it (a ``channel.close`` still follows them), and frames for pika that came before a
confirm are processed before it (a ``basic.return`` precedes its job's ack). pika's byte
counter (its heartbeats, and Warren's watchdog, read it) counts the frames read here too.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Final, final

from pika import data as pika_data

from warren._amqp.pika_internals import divert_input, input_path

if TYPE_CHECKING:
    from collections.abc import Callable

    # delivery tag, redelivered, message_id, content type, headers, body
    Raw = tuple[int, bool, Any, Any, dict[str, Any], bytes]

_FRAME = struct.Struct(">BHI")  # type, channel, size
_METHOD = struct.Struct(">HH")
_TAG = struct.Struct(">Q")
_HEADER = struct.Struct(">HHQ")  # class, weight, body size
_FLAGS = struct.Struct(">H")
_FRAME_END: Final = 0xCE
_METHOD_FRAME, _HEADER_FRAME, _BODY_FRAME = 1, 2, 3
_BASIC, _DELIVER, _ACK, _NACK = 60, 60, 80, 120
_CONTENT_TYPE, _CONTENT_ENCODING, _HEADERS = 0x8000, 0x4000, 0x2000
_DELIVERY_MODE, _PRIORITY, _CORRELATION_ID = 0x1000, 0x0800, 0x0400
_REPLY_TO, _EXPIRATION, _MESSAGE_ID = 0x0200, 0x0100, 0x0080
_COPY_VIA_VIEW = 4096  # bytes: above this a body is copied out through a memoryview
# pika reads 4 KB per recv() and at most 100 KB per readable event: a 120 KB message took 30
# reads, each a trip through pika's transport and this reader. Warren's connections read more.
RECV_BYTES = 64 * 1024
CONSUME_BYTES = 1024 * 1024


@final
class ChannelReader:
    """Reads ``channel``'s deliveries and confirms from the bytes pika's transport hands
    its connection.

    ``install`` puts it in front of the connection's input path; from then on
    ``on_deliveries`` receives each run of complete deliveries (in order), ``on_confirm``
    each ``(nack, delivery_tag, multiple)``, and pika the rest. A malformed frame goes to
    pika as it is (pika then fails the connection as it would have).
    """

    def __init__(
        self,
        channel: int,
        to_pika: Callable[[bytes], None],
        count: Callable[[int], None],
        on_deliveries: Callable[[list[Raw]], None],
        on_confirm: Callable[[bool, int, bool], None] | None = None,
        pending: Callable[[], bytes] = bytes,
    ) -> None:
        self._channel = channel
        self._to_pika = to_pika
        self._count = count
        self._on_deliveries = on_deliveries
        self._on_confirm = on_confirm
        self._pending = pending
        self._buf = bytearray()
        # the delivery being read: tag, redelivered, then its properties and body parts
        self._tag = 0
        self._redelivered = False
        self._props: tuple[Any, Any, dict[str, Any]] | None = None
        self._size = 0
        self._parts: list[bytes] = []
        self._got = 0
        self._in_content = False

    @classmethod
    def install(
        cls,
        conn: Any,
        channel: int,
        on_deliveries: Callable[[list[Raw]], None],
        on_confirm: Callable[[bool, int, bool], None] | None = None,
    ) -> ChannelReader:
        """Read ``channel``'s frames on pika connection ``conn`` from its next read on (it
        may be installed from a callback inside pika's own read loop: what pika holds then
        stays pika's until that loop ends)."""
        to_pika, count, pending = input_path(conn)
        reader = cls(channel, to_pika, count, on_deliveries, on_confirm, pending)
        divert_input(conn, reader.feed, RECV_BYTES, CONSUME_BYTES)
        return reader

    def feed(self, data: bytes) -> None:
        buf = self._buf
        held = self._pending()
        if held:
            buf[:0] = held
        buf += data
        end_of_data = len(buf)
        pos = 0
        pika_from = -1  # start of a run of frames for pika
        done: list[Raw] = []
        mine = self._channel
        while end_of_data - pos >= 8:
            kind, channel, size = _FRAME.unpack_from(buf, pos)
            end = pos + 8 + size
            if end > end_of_data:
                break
            if channel != mine or buf[end - 1] != _FRAME_END or not self._mine(kind, buf, pos + 7):
                if pika_from < 0:  # a frame for pika: deliveries before it go first
                    if done:
                        self._on_deliveries(done)
                        done = []
                    pika_from = pos
            else:
                if pika_from >= 0:  # frames for pika before it go first
                    self._to_pika(bytes(buf[pika_from:pos]))
                    pika_from = -1
                if not self._in_content and _METHOD.unpack_from(buf, pos + 7)[1] == _DELIVER:
                    whole = self._whole_delivery(buf, pos, end, end_of_data, done)
                    if whole:  # the usual case: method, header and one body frame at once
                        self._count(whole - pos)
                        pos = whole
                        continue
                self._count(end - pos)
                if self._in_content or _METHOD.unpack_from(buf, pos + 7)[1] == _DELIVER:
                    self._take(kind, buf, pos + 7, size, done)
                else:  # a confirm: what came before it goes first
                    if done:
                        self._on_deliveries(done)
                        done = []
                    self._confirm(buf, pos + 7)
            pos = end
        if pika_from >= 0:
            self._to_pika(bytes(buf[pika_from:pos]))
        if done:
            self._on_deliveries(done)
        del buf[:pos]

    def _whole_delivery(
        self, buf: bytearray, pos: int, hp: int, end_of_data: int, done: list[Raw]
    ) -> int:
        """A ``basic.deliver`` at ``pos`` whose content header (at ``hp``) and single body
        frame are all in the buffer: decoded in one step, appended to ``done``, and the
        offset after it returned. 0 if they are not all there (or not in that shape): the
        frame-by-frame path reads it then."""
        if end_of_data - hp < 8:
            return 0
        kind, channel, size = _FRAME.unpack_from(buf, hp)
        bp = hp + 8 + size  # the body frame, if any
        if (kind != _HEADER_FRAME or channel != self._channel or bp > end_of_data
                or buf[bp - 1] != _FRAME_END or size < 14):  # fmt: skip
            return 0
        body_size = _HEADER.unpack_from(buf, hp + 7)[2]
        if body_size:
            if end_of_data - bp < 8:
                return 0
            kind, channel, size = _FRAME.unpack_from(buf, bp)
            after: int = bp + 8 + size
            if (kind != _BODY_FRAME or channel != self._channel or size != body_size
                    or after > end_of_data or buf[after - 1] != _FRAME_END):  # fmt: skip
                return 0
            body = _copy(buf, bp + 7, after - 1)
        else:
            after, body = bp, b""
        tag_at = pos + 12 + buf[pos + 11]  # after the consumer tag (a short string)
        content_type, message_id, headers = _properties(bytes(buf[hp + 19 : bp - 1]))
        tag = _TAG.unpack_from(buf, tag_at)[0]
        done.append((tag, bool(buf[tag_at + 8] & 1), message_id, content_type, headers, body))
        return after

    def _mine(self, kind: int, buf: bytearray, p: int) -> bool:
        """Whether this frame of the channel is read here (else it is pika's)."""
        if self._in_content:
            if kind == _BODY_FRAME:
                return True
            return kind == _HEADER_FRAME and self._props is None
        if kind != _METHOD_FRAME:
            return False
        cls, method = _METHOD.unpack_from(buf, p)
        if cls != _BASIC:
            return False
        if method == _DELIVER:
            return True
        return self._on_confirm is not None and method in (_ACK, _NACK)

    def _confirm(self, buf: bytearray, p: int) -> None:
        """``basic.ack`` / ``basic.nack``: delivery tag, then the ``multiple`` bit."""
        assert self._on_confirm is not None
        nack = _METHOD.unpack_from(buf, p)[1] == _NACK
        self._on_confirm(nack, _TAG.unpack_from(buf, p + 4)[0], bool(buf[p + 12] & 1))

    def _take(self, kind: int, buf: bytearray, p: int, size: int, done: list[Raw]) -> None:
        """One frame of a delivery (its method, header or a body part)."""
        if kind == _BODY_FRAME:
            self._parts.append(_copy(buf, p, p + size))
            self._got += size
            if self._got >= self._size:
                self._finish(done)
        elif kind == _HEADER_FRAME:
            _cls, _weight, self._size = _HEADER.unpack_from(buf, p)
            self._props = _properties(bytes(buf[p + 12 : p + size]))
            if self._size == 0:
                self._finish(done)
        else:
            self._start_delivery(buf, p)

    def _start_delivery(self, buf: bytearray, p: int) -> None:
        tag_at = p + 5 + buf[p + 4]  # after the consumer tag (a short string)
        self._tag = _TAG.unpack_from(buf, tag_at)[0]
        self._redelivered = bool(buf[tag_at + 8] & 1)
        self._in_content = True

    def _finish(self, done: list[Raw]) -> None:
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        assert self._props is not None
        content_type, message_id, headers = self._props
        done.append((self._tag, self._redelivered, message_id, content_type, headers, body))
        self._props = None
        self._parts = []
        self._got = 0
        self._in_content = False


def _copy(buf: bytearray, start: int, end: int) -> bytes:
    """``bytes(buf[start:end])`` in one copy, not two, when it is large (a body)."""
    if end - start < _COPY_VIA_VIEW:
        return bytes(buf[start:end])
    with memoryview(buf) as view:
        return bytes(view[start:end])


def _properties(buf: bytes) -> tuple[Any, Any, dict[str, Any]]:
    """content_type, message_id and headers from a content header's property list (the
    rest is not read: Warren does not use it). Values as pika gives them (strings are str
    when UTF-8, else bytes; the table decoded by pika's own function)."""
    p = 0
    flags = 0
    shift = 0
    while True:
        word = _FLAGS.unpack_from(buf, p)[0]
        p += 2
        flags |= word << shift
        if not word & 1:
            break
        shift += 16
    content_type = message_id = None
    headers: dict[str, Any] = {}
    if flags & _CONTENT_TYPE:
        content_type, p = _short(buf, p)
    if flags & _CONTENT_ENCODING:
        p += 1 + buf[p]
    if flags & _HEADERS:
        headers, p = pika_data.decode_table(buf, p)
    if flags & _MESSAGE_ID:
        if flags & _DELIVERY_MODE:
            p += 1
        if flags & _PRIORITY:
            p += 1
        for flag in (_CORRELATION_ID, _REPLY_TO, _EXPIRATION):
            if flags & flag:
                p += 1 + buf[p]
        message_id, p = _short(buf, p)
    return content_type, message_id, headers


def _short(buf: bytes, p: int) -> tuple[Any, int]:
    n = buf[p]
    raw = buf[p + 1 : p + 1 + n]
    try:
        return raw.decode(), p + 1 + n
    except UnicodeDecodeError:
        return raw, p + 1 + n
