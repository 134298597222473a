"""A job: one side-effect message on its way to the broker.

Jobs are small on purpose (``__slots__``, no per-job pika objects): the buffer holds up to
``buffer_size`` of them while the broker is away, and the target is under 1 KiB per 256-byte
job including the payload.
"""

from __future__ import annotations

import itertools
import json
import secrets
from typing import final

import anyio

from warren._exceptions import InvalidJob, JobDropped, JobReturned, PublisherClosed, PublishError

JSON_CONTENT_TYPE = "application/json"
BYTES_CONTENT_TYPE = "application/octet-stream"


@final
class Job:
    """One message Warren owes the broker. Identity-hashed: the publisher tracks the object."""

    __slots__ = (
        "body",
        "exchange",
        "message_id",
        "outbox_id",
        "returns",
        "routing_key",
        "submitted_at",
        "waiter",
        "wire_header",
        "wire_method",
    )

    def __init__(  # positional in the publisher's hot path: keywords cost a tenth of a job
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        message_id: str,
        submitted_at: float,
        wire: tuple[bytes, bytes],
    ) -> None:
        self.body = body
        self.exchange = exchange
        self.routing_key = routing_key
        self.message_id = message_id
        self.submitted_at = submitted_at
        # the basic.publish method and content-header payloads (_amqp/wire.py: PublishEncoder)
        self.wire_method, self.wire_header = wire
        self.waiter: Outcome | None = None
        self.returns = 0  # times it came back unroutable and was re-sent (Publisher)
        self.outbox_id: int | None = None  # its row in the durable buffer, while it has one

    def __repr__(self) -> str:
        return (
            f"Job({self.message_id!r}, {self.exchange!r}/{self.routing_key!r}, {len(self.body)}B)"
        )


@final
class Outcome:
    """What became of a job someone awaits: set once, by the publisher's loop."""

    __slots__ = ("_done", "error")

    def __init__(self) -> None:
        self._done = anyio.Event()
        self.error: PublishError | PublisherClosed | None = None

    def confirm(self) -> None:
        self._done.set()

    def fail(self, error: JobDropped | JobReturned | PublisherClosed) -> None:
        self.error = error
        self._done.set()

    async def wait(self) -> None:
        await self._done.wait()
        if self.error is not None:
            raise self.error


def encode_body(payload: object, *, max_bytes: int) -> tuple[bytes, str]:
    """Turn a payload into (body, content type): bytes as they are, anything else as JSON.

    Raises:
        InvalidJob: not JSON-serializable, or larger than ``max_bytes``.
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        body, content_type = bytes(payload), BYTES_CONTENT_TYPE
    else:
        try:
            body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidJob(f"payload is not JSON-serializable: {exc}") from exc
        content_type = JSON_CONTENT_TYPE
    if len(body) > max_bytes:
        raise InvalidJob(f"payload is {len(body)} bytes, over max_job_bytes={max_bytes}")
    return body, content_type


class MessageIds:
    """Message ids: 32 hex characters, a random 64-bit prefix per publisher and a counter.

    Unique across publishers and restarts (a fresh prefix each time) without a syscall per
    job: ``uuid4()`` reads the OS random source on every call, which showed up as a tenth of
    the publisher's profile.
    """

    __slots__ = ("_next", "_prefix")

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = itertools.count().__next__

    def __call__(self) -> str:
        return f"{self._prefix}{self._next():016x}"
