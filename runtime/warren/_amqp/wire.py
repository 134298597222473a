"""AMQP 0-9-1 bytes of a ``basic.publish``, encoded when a job is submitted.

Encoding at submit does two things. It refuses a job whose properties cannot go on the wire
(a message id over 255 bytes, a header value AMQP has no type for) with ``InvalidJob`` in
the caller's hands, before it is buffered: such a job would otherwise fail inside the I/O
thread on every re-send. And it takes pika's per-message object building off the hot path:
pika builds and marshals three frame objects per message (method, header, body), which cost
more than everything else Warren does per job. The I/O thread only adds the frame envelopes
(``frames``) and hands a batch to pika's connection in writes of about 256 KB.

The bytes are what pika itself would send (``tests/unit/test_amqp_wire.py`` checks them against
pika's encoder); the one piece of pika used here is its field-table encoder, for headers.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, final

from pika import data as _pika_data
from pika import exceptions as _pika_exceptions

from warren._exceptions import InvalidJob

if TYPE_CHECKING:
    from collections.abc import Mapping

_FRAME = struct.Struct(">BHI")  # type, channel, payload size
_FRAME_END = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
_BASIC_PUBLISH = struct.pack(">HHH", 60, 40, 0)  # class basic, method publish, ticket 0
_MANDATORY = b"\x01"  # unroutable messages come back as basic.return
_HEADER_START = struct.Struct(">HHQH")  # class basic, weight 0, body size, property flags
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _MESSAGE_ID = 0x8000, 0x2000, 0x1000, 0x0080
_FLAGS = _CONTENT_TYPE | _DELIVERY_MODE | _MESSAGE_ID  # what every job sets, headers aside


def _short(value: str, what: str) -> bytes:
    if type(value) is not str:
        raise InvalidJob(f"{what} must be a str, not {type(value).__name__}")
    raw = value.encode()
    if len(raw) > 255:
        raise InvalidJob(f"{what} is {len(raw)} bytes in UTF-8; AMQP allows at most 255")
    return bytes((len(raw),)) + raw


@final
class PublishEncoder:
    """Encodes ``basic.publish`` payloads for one publisher.

    The method payload (exchange, routing key) and the content type's bytes are the same for
    most jobs of a publisher, so they are cached (bounded: the caches start over when full).
    """

    __slots__ = ("_limit", "_methods", "_mode", "_types")

    def __init__(self, *, persistent: bool, cache_size: int = 1024) -> None:
        self._mode = b"\x02" if persistent else b"\x01"
        self._limit = cache_size
        self._methods: dict[tuple[str, str], bytes] = {}
        self._types: dict[str, bytes] = {}

    def __call__(  # called positionally on the hot path
        self,
        exchange: str,
        routing_key: str,
        message_id: str,
        content_type: str,
        headers: Mapping[str, Any] | None,
        body_size: int,
    ) -> tuple[bytes, bytes]:
        """The method and content-header payloads of one mandatory ``basic.publish``.

        Raises:
            InvalidJob: a string over 255 bytes (or not a str), or a header AMQP cannot carry.
        """
        methods = self._methods
        key = (exchange, routing_key)
        method = methods.get(key) if type(exchange) is str and type(routing_key) is str else None
        if method is None:
            method = b"".join(
                (
                    _BASIC_PUBLISH,
                    _short(exchange, "exchange"),
                    _short(routing_key, "routing_key"),
                    _MANDATORY,
                )
            )
            if len(methods) >= self._limit:
                methods.clear()
            methods[key] = method
        ctype = self._types.get(content_type) if type(content_type) is str else None
        if ctype is None:
            ctype = _short(content_type, "content_type")
            if len(self._types) >= self._limit:
                self._types.clear()
            self._types[content_type] = ctype
        if not headers:  # the common case, in one join
            start = _HEADER_START.pack(60, 0, body_size, _FLAGS)
            return method, b"".join((start, ctype, self._mode, _short(message_id, "message_id")))
        pieces = [_HEADER_START.pack(60, 0, body_size, _FLAGS | _HEADERS), ctype]
        try:
            _pika_data.encode_table(pieces, dict(headers))
        except (_pika_exceptions.AMQPError, struct.error, TypeError, ValueError) as exc:
            raise InvalidJob(f"headers cannot be sent over AMQP: {exc!r}") from None
        pieces.append(self._mode)
        pieces.append(_short(message_id, "message_id"))
        return method, b"".join(pieces)


def frames(
    out: list[bytes], channel: int, method: bytes, header: bytes, body: bytes, max_body: int
) -> None:
    """Append the frames of one message to ``out``: method, header, body split at
    ``max_body`` (the connection's frame size minus the 8 bytes of envelope)."""
    pack = _FRAME.pack
    out += (
        pack(_METHOD, channel, len(method)), method, _FRAME_END,
        pack(_HEADER, channel, len(header)), header, _FRAME_END,
    )  # fmt: skip
    size = len(body)
    if size <= max_body:
        if size:
            out += (pack(_BODY, channel, size), body, _FRAME_END)
        return
    for start in range(0, size, max_body):
        chunk = body[start : start + max_body]
        out += (pack(_BODY, channel, len(chunk)), chunk, _FRAME_END)
