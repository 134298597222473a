"""The consuming side of a pika session (runs in its I/O thread).

After the topology is declared, ``Consuming.start`` sets QoS (prefetch) and starts a
consumer; every message becomes a ``Delivered`` event, and a broker-side ``basic.cancel``
(the queue was deleted) ends the connection so the worker reconnects, re-declares and
resumes. Acks arrive from the event loop in batches and are sent on this thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from ._events import ConnectionEvent, Delivered

if TYPE_CHECKING:
    from collections.abc import Callable


@final
@dataclass(frozen=True)
class ConsumeSpec:
    queue: str
    prefetch: int


@final
class Consuming:
    def __init__(
        self,
        session: int,
        spec: ConsumeSpec,
        emit: Callable[[ConnectionEvent], None],
        on_cancelled: Callable[[], None],
    ) -> None:
        self._session = session
        self._spec = spec
        self._emit = emit
        self._on_cancelled = on_cancelled
        self._channel: Any = None

    def start(self, channel: Any, then: Callable[[], None]) -> None:
        """QoS, then consume; ``then`` runs once the broker confirmed the consumer."""
        self._channel = channel
        channel.add_on_cancel_callback(lambda _frame: self._on_cancelled())

        def consume(_frame: Any) -> None:
            channel.basic_consume(self._spec.queue, self._on_message, callback=lambda _ok: then())

        channel.basic_qos(prefetch_count=self._spec.prefetch, callback=consume)

    def _on_message(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        self._emit(
            Delivered(
                self._session,
                method.delivery_tag,
                props.message_id,
                dict(props.headers or {}),
                body,
                bool(method.redelivered),
                props.content_type,
            )
        )

    def ack(self, tags: list[int]) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            return  # unacked deliveries of a closed channel are redelivered by the broker
        for tag in tags:
            channel.basic_ack(tag)
