"""The publishing side of a pika session: the window of publishes and their confirms.

``PikaSession`` (``thread``) extends this with the connection it runs; everything here runs in
that session's I/O thread. Jobs handed over by the event loop wait in a queue for room in the
window (``max_in_flight`` unconfirmed), are written in a few large buffers, and are settled as
the broker's confirms come (``confirms`` keeps the books, ``confirm_hold`` batches the
reports). Every event the session reports goes through ``_emit``, which reports the confirms
held so far first, so the event loop sees everything in the order it happened.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from pika import spec

from warren._amqp.confirm_hold import HOLD_CONFIRMS_FOR, ConfirmHold
from warren._amqp.confirms import ConfirmTracker
from warren._amqp.events import (
    Blocked,
    Confirmed,
    ConnectionEvent,
    Nacked,
    Returned,
    Unblocked,
)
from warren._amqp.mailbox import Mailbox
from warren._amqp.pika_internals import body_max_length, terminate_stream, write_frames
from warren._amqp.watchdog import Watchdog
from warren._amqp.wire import frames

if TYPE_CHECKING:
    from collections.abc import Callable

    from warren._config import PublisherConfig
    from warren._job import Job

log = logging.getLogger("warren.amqp")

WRITE_CHUNK = 256 * 1024  # bytes per write handed to pika (about; one message is not split)


class PublishingSession:
    """Publishes on one confirming channel; the subclass sets ``_conn`` and ``_channel``
    when they open, and ``_ready`` once the topology is declared."""

    def __init__(
        self, session: int, config: PublisherConfig, emit: Callable[[ConnectionEvent], object]
    ) -> None:
        self._session = session
        self._config = config
        self._emit_now = emit
        self._conn: Any = None
        self._channel: Any = None
        self._ready = False  # the channel is open and its topology declared
        self._blocked = False  # the broker blocked publishing (a resource alarm)
        self._outbox: Mailbox[Job] = Mailbox()  # handed over by the event loop
        self._queued: deque[Job] = deque()  # this thread's: waiting for room in the window
        self._confirms = ConfirmTracker()
        self._hold = ConfirmHold(config.max_in_flight)
        link = config.connection
        self._watch = Watchdog(heartbeat=link.heartbeat, dead_after=link.dead_after,
                               confirm_timeout=config.confirm_timeout)  # fmt: skip

    def publish_threadsafe(self, jobs: list[Job]) -> bool:
        """Queue ``jobs`` for publishing; False if the connection is already gone.

        Batches queued while the I/O thread is busy share one wake-up: the thread drains
        the whole outbox at once, so the cost of crossing threads is paid per burst. A
        thread with jobs still queued is not woken: its next ack picks these up.
        """
        return self._outbox.put_all(jobs)

    def _on_blocked(self, _conn: Any, frame: Any) -> None:
        self._blocked = True
        self._emit(Blocked(self._session, str(getattr(frame.method, "reason", ""))))

    def _on_unblocked(self, _conn: Any, _frame: Any) -> None:
        self._blocked = False
        # confirms waited because of the alarm; don't count that against confirm_timeout
        self._confirms.restart_clock(time.monotonic())
        self._emit(Unblocked(self._session))
        self._pump()

    def _on_return(self, _ch: Any, method: Any, props: Any, _body: bytes) -> None:
        """A basic.return: its job is reported as returned when its ack comes."""
        key = (str(props.message_id), method.exchange, method.routing_key)
        if not self._confirms.returned(key, method.reply_code, method.reply_text):
            log.warning("publish.return_unmatched message_id=%s", key[0])

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nack = isinstance(method, spec.Basic.Nack)
        self._confirm(nack, method.delivery_tag, bool(method.multiple))

    def _confirm(self, nack: bool, tag: int, multiple: bool) -> None:
        """A ``basic.ack`` (or ``nack``) for ``tag``, or every tag up to it (``multiple``)."""
        settled, returned = self._confirms.settle(tag, multiple, nack=nack)
        self._pump()
        if nack:
            self._emit(Nacked(self._session, tuple(settled)))
            abort = self._watch.nacked(time.monotonic())
            if abort is not None:
                terminate_stream(self._conn, abort)
            return
        self._watch.acked()
        if returned is None and self._confirms.unconfirmed:
            self._hold_confirmed(settled)
            return
        for job, reply_code, reply_text in returned or ():
            self._emit(Returned(self._session, job, reply_code, reply_text))
        self._emit(Confirmed(self._session, tuple(settled)))

    def _emit(self, event: ConnectionEvent) -> None:
        """Report ``event`` to the event loop, after the confirms held so far (order kept)."""
        if self._hold.jobs:
            self._flush_held()
        self._emit_now(event)

    def _hold_confirmed(self, jobs: list[Job]) -> None:
        """Report confirms in batches while more are on their way (``confirm_hold``)."""
        verdict = self._hold.add(jobs)
        if verdict == "report":
            self._flush_held()
        elif verdict == "arm":
            self._conn.ioloop.call_later(HOLD_CONFIRMS_FOR, self._on_hold_timer)

    def _on_hold_timer(self) -> None:
        held = self._hold.timer_fired()
        if held:
            self._emit_now(Confirmed(self._session, tuple(held)))

    def _flush_held(self) -> None:
        self._emit_now(Confirmed(self._session, tuple(self._hold.take())))

    def _pump(self) -> None:
        """Publish queued jobs while fewer than ``max_in_flight`` await confirmation.

        Runs when the event loop hands over jobs to an idle thread, and after every ack, so
        the window refills inside this thread without a round trip through the event loop.
        It returns with jobs still queued only when an ack (window full) or the broker's
        unblock will run it again; otherwise it re-arms the outbox's wake-up.
        """
        queued = self._queued
        while True:
            room = self._config.max_in_flight - len(self._confirms.unconfirmed)
            if len(queued) < room:
                queued.extend(self._outbox.take(rearm=False))
            if room > 0 and queued and not self._blocked:
                self._publish([queued.popleft() for _ in range(min(room, len(queued)))])
            if queued:
                return  # the window is full or we are blocked: an ack or unblock comes
            more = self._outbox.take(rearm=False)  # re-armed if empty: we are idle
            if not more:
                return
            queued.extend(more)

    def _publish(self, jobs: list[Job]) -> None:
        """Send a batch in writes of about ``WRITE_CHUNK`` bytes: the frames were encoded at
        submit (``_amqp/wire.py``); pika's connection gets the bytes (and counts them for its
        heartbeats). Not one buffer for the whole batch: pika re-queues the unsent rest of a
        buffer after each partial send by copying it, so a window of large messages in one
        buffer (1,000 x 64 KB) was copied over and over. Batches of acks need the opposite:
        pika queues each ack frame on its own, and ``_drain_acks`` merges them."""
        channel = self._channel
        if not jobs or not self._ready or channel is None or not channel.is_open:
            return  # the publisher still owns them and re-sends after the loss it will hear of
        conn = self._conn
        if not conn.is_open:
            return  # the stream is going away (pika closes the channel in the same callback)
        number = channel.channel_number
        max_body = body_max_length(conn)
        out: list[bytes] = []
        writes: list[bytes] = []
        pending = 0
        for job in jobs:
            frames(out, number, job.wire_method, job.wire_header, job.body, max_body)
            pending += len(job.body) + len(job.wire_header) + 64
            if pending >= WRITE_CHUNK:
                writes.append(b"".join(out))
                out.clear()
                pending = 0
        if out:
            writes.append(b"".join(out))
        self._confirms.sent(jobs, time.monotonic())
        write_frames(conn, writes)

    # -- the confirm books by the names tests set them by -----------------------------------

    @property
    def _unconfirmed(self) -> dict[int, Job]:
        return self._confirms.unconfirmed

    @_unconfirmed.setter
    def _unconfirmed(self, jobs: dict[int, Job]) -> None:
        self._confirms.unconfirmed = jobs

    @property
    def _next_tag(self) -> int:
        return self._confirms.next_tag

    @_next_tag.setter
    def _next_tag(self, tag: int) -> None:
        self._confirms.next_tag = tag

    @property
    def _held(self) -> list[Job]:
        return self._hold.jobs

    @_held.setter
    def _held(self, jobs: list[Job]) -> None:
        self._hold.jobs = jobs
