"""One pika connection, owned by one thread from open to close.

pika is callback-driven and not thread-safe. A ``PikaSession`` runs a ``SelectConnection``'s
ioloop in a dedicated thread (started by ``AmqpConnection`` through ``anyio.to_thread``).
Other threads only call the ``*_threadsafe`` methods, which hand items over through a
``Mailbox`` whose wake-up is pika's one thread-safe call, ``add_callback_threadsafe``.
Callbacks here do one thing each: turn what happened into an event (``_events``) and hand it
to ``emit``. This module holds the thread and close protocol; the publishing side is its base
class (``publishing``), and the decisions are plain code in modules of their own: how a
connection ended (``close_reasons``), which publishes await a confirm (``confirms``), when confirms
are reported (``confirm_hold``), when a live-looking link is given up (``watchdog``). pika's
internals are reached only through ``pika_internals``. ``TCP_USER_TIMEOUT`` and keepalive
bound what the kernel does on its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions as pe

from warren._amqp.close_reasons import close_outcome, open_failure, pika_failure, raised_inside_pika
from warren._amqp.confirm_hold import HOLD_CONFIRMS_FOR as HOLD_CONFIRMS_FOR  # (tests use it)
from warren._amqp.consume import ConsumeSpec, Consuming
from warren._amqp.declare import declare
from warren._amqp.events import (
    ChannelClosed,
    Connected,
    ConnectFailed,
    ConnectionEvent,
    ConnectionLost,
    Declared,
    Delivered,
)
from warren._amqp.mailbox import Mailbox
from warren._amqp.pika_internals import (
    can_divert_input,
    input_waiting,
    merge_queued_output,
    opening_without_transport,
    terminate_stream,
)
from warren._amqp.publishing import WRITE_CHUNK as WRITE_CHUNK  # (tests use it)
from warren._amqp.publishing import PublishingSession
from warren._amqp.receive import ChannelReader
from warren._amqp.tls import url_parameters
from warren._amqp.watchdog import WatchdogAbort
from warren._common.redact import redact_url

if TYPE_CHECKING:
    from warren._amqp.topology import Topology
    from warren._config import PublisherConfig

log = logging.getLogger("warren.amqp")

Emit = Callable[[ConnectionEvent], object]
_CLOSE_GRACE = 0.5  # seconds a close handshake may take before the stream is cut
_raised_inside_pika = raised_inside_pika  # the name tests import it by


class PikaSession(PublishingSession):
    """A single pika connection with one confirming channel. Run ``run()`` in its own thread."""

    def __init__(
        self,
        *,
        session: int,
        url: str,
        attempt: int,
        config: PublisherConfig,
        topology: Topology,
        emit: Emit,
        name: str,
        consume: ConsumeSpec | None = None,
        emit_all: Callable[[list[Delivered]], object] | None = None,
    ) -> None:
        super().__init__(session, config, emit)
        self._url = url
        self._attempt = attempt
        self._topology = topology
        self._name = name
        self._lock = threading.Lock()  # guards _loop_alive
        self._consuming = (
            Consuming(session, consume, emit, self._on_consumer_cancelled, emit_all)
            if consume
            else None
        )
        self._consumer_cancelled = False
        # handed over by the event loop; each wakes this thread once per burst
        self._acks: Mailbox[int] = Mailbox()
        self._rejects: Mailbox[int] = Mailbox()
        self._loop_alive = False
        self._intentional = False
        self._close_requested = False  # guarded by _lock
        self._channel_loss: tuple[int, str] | None = None
        self.ready_once = False  # announced Connected at least once: the attempt succeeded
        self._outcome: ConnectionLost | ConnectFailed | None = None

    # -- called from other threads -------------------------------------------------------

    def ack_threadsafe(self, tags: list[int]) -> bool:
        """Ack deliveries of this connection (batched: one wake-up per burst)."""
        return self._acks.put_all(tags)

    def reject_threadsafe(self, tags: list[int]) -> bool:
        """Reject deliveries of this connection without requeue (rare: a last resort)."""
        return self._rejects.put_all(tags)

    def _drain_rejects(self) -> None:
        tags = self._rejects.take()
        if self._consuming is not None:
            self._consuming.reject(tags)

    def _drain_acks(self) -> None:
        tags = self._acks.take()
        if self._consuming is not None:
            self._consuming.ack(tags)
            # one send() for the batch of acks, not one per frame (a GIL hand-off each)
            merge_queued_output(self._conn)

    def _on_consumer_cancelled(self) -> None:
        self._consumer_cancelled = True
        if self._conn.is_open:
            self._conn.close()

    def declare_threadsafe(self) -> bool:
        """Declare the topology again (``Declared`` follows); False if the loop is gone."""
        with self._lock:
            if not self._loop_alive:
                return False
            self._conn.ioloop.add_callback_threadsafe(self._declare_again)
            return True

    def close_threadsafe(self) -> None:
        """Close on purpose (no reconnect follows). Works before the thread started too:
        the session then closes as soon as it is up, and reports ``None``."""
        with self._lock:
            self._close_requested = True
            if self._loop_alive:
                self._conn.ioloop.add_callback_threadsafe(self._close_intentionally)

    # -- the thread ----------------------------------------------------------------------

    def run(self) -> ConnectionLost | ConnectFailed | None:
        """Connect, serve until the connection ends; return how it ended (None: on purpose)."""
        params = self._parameters()
        with self._lock:
            self._conn = pika.SelectConnection(
                params,
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_close,
            )
            self._loop_alive = True
            if self._close_requested:
                self._conn.ioloop.add_callback_threadsafe(self._close_intentionally)
        add_callback = self._conn.ioloop.add_callback_threadsafe
        self._outbox.open(lambda: add_callback(self._pump))
        self._acks.open(lambda: add_callback(self._drain_acks))
        self._rejects.open(lambda: add_callback(self._drain_rejects))
        try:
            self._conn.ioloop.start()
        except Exception as exc:
            if not raised_inside_pika(exc):
                raise  # a bug of ours: fail loudly, never retry it
            log.warning("pika raised out of its ioloop: %s: %s", type(exc).__name__, exc)
            self._outcome = pika_failure(exc, session=self._session, attempt=self._attempt,
                                         url=self._url, ready_once=self.ready_once)  # fmt: skip
        finally:
            with self._lock:
                self._loop_alive = False
            self._outbox.close()
            self._acks.close()
            self._rejects.close()
            self._conn.ioloop.close()
        if self._hold.jobs:  # confirmed before the end: reported before how it ended
            self._flush_held()
        return self._outcome

    def _parameters(self) -> Any:
        cfg = self._config
        params = url_parameters(self._url, cfg.connection.tls)
        params.heartbeat = cfg.connection.heartbeat
        params.connection_attempts = 1
        params.retry_delay = 0
        params.socket_timeout = cfg.connection.connect_timeout
        params.stack_timeout = cfg.connection.connect_timeout
        params.blocked_connection_timeout = None
        keepidle = max(1, cfg.connection.heartbeat)
        params.tcp_options = {
            "TCP_USER_TIMEOUT": int(cfg.connection.effective_tcp_user_timeout * 1000),
            "TCP_KEEPIDLE": keepidle,
            "TCP_KEEPINTVL": max(1, keepidle // 2),
            "TCP_KEEPCNT": 3,
        }
        params.client_properties = {"connection_name": f"warren:{self._name}"}
        return params

    def _on_open(self, conn: Any) -> None:
        if self._intentional:  # closed on purpose during the handshake
            conn.close()
            return
        self._watch.opened(time.monotonic())
        self._schedule_watchdog()
        conn.add_on_connection_blocked_callback(self._on_blocked)
        conn.add_on_connection_unblocked_callback(self._on_unblocked)
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, conn: Any, err: BaseException | str) -> None:
        # an open cut short by our own close is no failure
        self._outcome = None if self._intentional else open_failure(self._attempt, self._url, err)
        conn.ioloop.stop()

    def _on_close(self, conn: Any, reason: BaseException | None) -> None:
        self._outcome = close_outcome(
            reason,
            session=self._session,
            attempt=self._attempt,
            url=self._url,
            intentional=self._intentional,
            consumer_cancelled=self._consumer_cancelled,
            channel_loss=self._channel_loss,
            ready_once=self.ready_once,
        )
        conn.ioloop.stop()

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._declare)

    def _declare(self, _frame: Any = None) -> None:
        """Declare the topology, start consuming (if this session consumes), then announce
        the connection."""
        conn, channel = self._conn, self._channel
        if can_divert_input(conn):
            # confirms and deliveries decoded from the socket's bytes; pika keeps the rest
            # (and its own path, should its internals ever change: test_internals.py)
            deliver = self._consuming.deliver if self._consuming is not None else _unexpected
            ChannelReader.install(conn, channel.channel_number, deliver, self._confirm)

        def announce() -> None:
            self._ready = True
            self.ready_once = True
            self._emit(Connected(self._session, redact_url(self._url)))
            self._pump()

        def declared() -> None:
            if self._consuming is not None:
                self._consuming.start(self._channel, announce)
            else:
                announce()

        declare(channel, self._topology, declared)

    def _declare_again(self) -> None:
        """A worker asked (a job for a declared route came back unroutable): declare the
        topology on the open channel again, then report ``Declared``. Publishing goes on
        meanwhile; the channel orders the declarations before later publishes."""
        if self._ready and self._channel is not None and self._channel.is_open:
            declare(self._channel, self._topology, lambda: self._emit(Declared(self._session)))
        # otherwise the connection is going down: the next one declares on connect

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        self._ready = False
        if isinstance(reason, pe.ChannelClosedByBroker):
            self._channel_loss = (reason.reply_code, reason.reply_text)
            self._emit(ChannelClosed(self._session, reason.reply_code, reason.reply_text))
            if self._conn.is_open:
                self._conn.close()
        # Otherwise the connection is going down and _on_close reports it.

    def _close_intentionally(self) -> None:
        if self._intentional:
            return
        self._intentional = True
        conn = self._conn
        if conn.is_open:
            conn.close()
        elif opening_without_transport(conn):
            conn.close()  # still connecting TCP: pika aborts its connection workflow cleanly
        # In the middle of the AMQP handshake, pika 1.4's close() reports its own abort as a
        # class instead of an instance and logs an AssertionError traceback: let the
        # handshake finish (_on_open closes at once), or cut it when the grace is over.
        # A broker that does not answer (a silent partition) would hold the close handshake
        # for pika's own timeouts: cut the stream after a short grace instead.
        conn.ioloop.call_later(_CLOSE_GRACE, self._cut_after_grace)

    def _cut_after_grace(self) -> None:
        conn = self._conn
        if conn.is_closed:
            return
        if opening_without_transport(conn):
            conn.close()
        else:  # closing, open, or a handshake the broker does not finish
            terminate_stream(conn, WatchdogAbort("dead_link", "close not answered in time"))

    # -- watchdog ------------------------------------------------------------------------

    def _schedule_watchdog(self) -> None:
        self._conn.ioloop.call_later(self._watch.every, self._look)

    def _look(self) -> None:
        conn = self._conn
        if not conn.is_open:
            return
        abort = self._watch.look(
            time.monotonic(),
            conn.bytes_received,
            self._confirms.oldest_sent_at(),
            blocked=self._blocked,
            # the watchdog may run before the read in a late turn of this thread's loop
            input_waiting=lambda: input_waiting(conn),
        )
        if abort is not None:
            terminate_stream(conn, abort)
        else:
            self._schedule_watchdog()


def _unexpected(batch: list[Any]) -> None:
    """A publishing session consumes nothing; deliveries would be a broker bug: dropped
    unacked (they return to their queue when the connection closes)."""
    log.warning("amqp.unexpected_deliveries count=%d", len(batch))
