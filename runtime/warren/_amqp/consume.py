"""The consuming side of a pika session (runs in its I/O thread).

After the topology is declared, ``Consuming.start`` sets QoS (prefetch) and starts a
consumer; every message becomes a ``Delivered`` event, and a broker-side ``basic.cancel``
(the queue was deleted) ends the connection so the worker reconnects, re-declares and
resumes. Acks arrive from the event loop in batches and are sent on this thread: the
finished prefix of the delivery order as one ``multiple`` ack, anything finished out of order
on its own at once (so a slow handler never holds back the acks of later messages, which would
shrink the prefetch window).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from warren._amqp.events import ConnectionEvent, Delivered

if TYPE_CHECKING:
    from collections.abc import Callable

    from warren._amqp.receive import Raw


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
        emit: Callable[[ConnectionEvent], object],
        on_cancelled: Callable[[], None],
        emit_all: Callable[[list[Delivered]], object] | None = None,
    ) -> None:
        self._session = session
        self._emit_all = emit_all or (lambda batch: [emit(d) for d in batch])
        self._spec = spec
        self._emit = emit
        self._on_cancelled = on_cancelled
        self._channel: Any = None
        self._order: deque[int] = deque()  # delivered tags, oldest first, not yet covered
        self._finished: set[int] = set()  # finished by the worker, no ack sent yet
        self._sent: set[int] = set()  # acked on their own, still in _order

    def start(self, channel: Any, then: Callable[[], None]) -> None:
        """QoS, then consume; ``then`` runs once the broker confirmed the consumer."""
        self._channel = channel
        channel.add_on_cancel_callback(lambda _frame: self._on_cancelled())

        def consume(_frame: Any) -> None:
            if channel.is_open:  # else it is closing (a stop, a refusal): its close follows
                channel.basic_consume(self._spec.queue, self._on_message,
                                      callback=lambda _ok: then())  # fmt: skip

        channel.basic_qos(prefetch_count=self._spec.prefetch, callback=consume)

    def deliver(self, batch: list[Raw]) -> None:
        """Deliveries decoded by the session's ``ChannelReader`` (pika's own path, below,
        stays as the fallback)."""
        session = self._session
        self._order.extend(raw[0] for raw in batch)
        self._emit_all([
            Delivered(session, tag, message_id, headers, body, redelivered, content_type)
            for tag, redelivered, message_id, content_type, headers, body in batch
        ])  # fmt: skip

    def _on_message(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        self._order.append(method.delivery_tag)
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

    def reject(self, tags: list[int]) -> None:
        """Reject deliveries without requeue. Each counts as settled on its own, so the
        ``multiple`` ack of a later prefix never covers it (a second settle of one tag would
        make the broker close the channel)."""
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        for tag in tags:
            channel.basic_reject(tag, requeue=False)
            self._sent.add(tag)
        self.ack([])  # the finished prefix may now extend past the rejected tags

    def ack(self, tags: list[int]) -> None:
        """Ack finished deliveries: one ``multiple`` ack for the finished prefix, single acks
        for the rest. A tag the broker no longer knows would close the channel, so every tag
        is acked exactly once, by one of the two."""
        channel = self._channel
        if channel is None or not channel.is_open:
            return  # unacked deliveries of a closed channel are redelivered by the broker
        finished, sent, order = self._finished, self._sent, self._order
        finished.update(tags)
        highest = 0
        while order and (order[0] in finished or order[0] in sent):
            tag = order.popleft()
            if tag in sent:
                sent.discard(tag)
            else:
                finished.discard(tag)
                highest = tag
        if highest:
            channel.basic_ack(highest, multiple=True)
        for tag in finished:
            channel.basic_ack(tag)
            sent.add(tag)
        finished.clear()
