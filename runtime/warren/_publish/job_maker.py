"""Making a job from what a caller of ``submit``/``enqueue``/``publish`` passed.

Everything about a job that can be refused is refused here, before it takes any room: a
publisher closed to new jobs, a bad ``message_id``, a payload that does not serialize or is
over ``max_job_bytes``, a routing key or header AMQP cannot carry. The ``basic.publish``
frames' payloads are encoded once, here, and sent as they are (again, after an outage).

Plain code, no I/O, once per job: the hot path (no more calls per job than it needs).
Invariant (``tests/unit/test_job_maker.py``): a job is made with the ``message_id`` asked
for, or a fresh one no other job of the publisher has, and its body is the payload's bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from warren._amqp import PublishEncoder
from warren._exceptions import InvalidJob, PublisherClosed
from warren._job import Job, MessageIds, encode_body

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from warren._config import PublisherConfig


@final
class JobMaker:
    """Makes the jobs of the publisher called ``name``. Not thread-safe."""

    __slots__ = ("_clock", "_encode", "_exchange", "_max_bytes", "_name", "_new_id", "closed")

    def __init__(self, config: PublisherConfig, name: str, clock: Callable[[], float]) -> None:
        self._name = name
        self._clock = clock
        self._exchange = config.exchange
        self._max_bytes = config.max_job_bytes
        self._encode = PublishEncoder(persistent=config.persistent)
        self._new_id = MessageIds()
        self.closed = False  # shutdown began: no new jobs

    def make(  # called positionally on the hot path
        self,
        payload: object,
        routing_key: str,
        exchange: str | None,
        headers: Mapping[str, Any] | None,
        message_id: str | None,
        content_type: str | None = None,
    ) -> Job:
        """A job to offer to the buffer.

        Raises:
            PublisherClosed: shutdown has begun.
            InvalidJob: see the module docstring.
        """
        if self.closed:
            raise PublisherClosed(f"publisher {self._name!r} is closed to new jobs")
        # 63 characters are at most 252 UTF-8 bytes: encode only longer keys to measure them
        if message_id is not None and (not isinstance(message_id, str) or not message_id):
            raise InvalidJob("message_id must be a non-empty str")
        body, encoded_as = encode_body(payload, max_bytes=self._max_bytes)
        content_type = content_type or encoded_as
        exchange = self._exchange if exchange is None else exchange
        message_id = message_id or self._new_id()
        # (exchange, routing key, message id, content type, headers, body size) -> wire
        wire = self._encode(exchange, routing_key, message_id, content_type, headers, len(body))
        return Job(body, exchange, routing_key, message_id, self._clock(), wire)
