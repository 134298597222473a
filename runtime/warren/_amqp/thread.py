"""One pika connection, owned by one thread from open to close.

pika is callback-driven and not thread-safe. A ``PikaSession`` runs a ``SelectConnection``'s
ioloop in a dedicated thread (started by ``AmqpConnection`` through ``anyio.to_thread``).
Other threads only call the ``*_threadsafe`` methods, which hand items over through a
``Mailbox`` whose wake-up is pika's one thread-safe call, ``add_callback_threadsafe``.
Callbacks here do one thing each: turn what happened into an event (``_events``) and hand it
to ``emit``. ``_loss_from`` / ``_open_failure`` are the one boundary where pika's exceptions
are translated.

Dead links are found without waiting for TCP: a watchdog declares the connection dead when no
byte arrived for heartbeat + 0.6 s (the broker sends a frame at least once a heartbeat; see
``PublisherConfig.dead_after``), unless bytes are waiting unread in the socket, or when a publish
stayed unconfirmed for ``confirm_timeout`` while the broker was not blocking us. A channel
that has answered nothing but nacks for ``NACKED_FOR`` seconds is given up too: on a cluster, a
RabbitMQ 3.10 channel that first published to a quorum queue during its leader's failover nacks
every publish for as long as it lives, while a fresh one on the same node works.
``TCP_USER_TIMEOUT`` and keepalive bound what the kernel does on its own.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions as pe
from pika import spec
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed

from warren._amqp.consume import ConsumeSpec, Consuming
from warren._amqp.events import (
    Blocked,
    ChannelClosed,
    Confirmed,
    Connected,
    ConnectFailed,
    ConnectionEvent,
    ConnectionLost,
    Declared,
    Delivered,
    LossKind,
    Nacked,
    Returned,
    Unblocked,
)
from warren._amqp.mailbox import Mailbox
from warren._amqp.receive import ChannelReader
from warren._amqp.wire import frames
from warren._common.redact import redact_text, redact_url

if TYPE_CHECKING:
    from warren._amqp.topology import Topology
    from warren._config import PublisherConfig
    from warren._job import Job

log = logging.getLogger("warren.amqp")

Emit = Callable[[ConnectionEvent], object]
_CLOSE_GRACE = 0.5  # seconds a close handshake may take before the stream is cut
NACKED_FOR = 5.0  # seconds of nothing but nacks before the channel is given up
WRITE_CHUNK = 256 * 1024  # bytes per write handed to pika (about; one message is not split)
HOLD_CONFIRMS_FOR = 0.001  # seconds a confirm may wait to share the loop's wake-up
WATCHDOG_EVERY = 0.05  # seconds between the watchdog's looks (a cut noticed this late at most)
_TOPOLOGY_REFUSED = (404, 406)  # NOT_FOUND (passive), PRECONDITION_FAILED (other arguments)


def _opening_without_transport(conn: Any) -> bool:
    """Still opening, before the TCP connection is made (no AMQP handshake under way)."""
    opening = not (conn.is_open or conn.is_closing or conn.is_closed)
    return opening and conn._transport is None


class _WatchdogAbort(Exception):
    """Why Warren's own watchdog cut the stream."""

    def __init__(self, kind: LossKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: LossKind = kind


def _loss_from(session: int, reason: BaseException | None) -> ConnectionLost:
    """Map every way a pika connection can end to one event; most specific match first."""
    if isinstance(reason, _WatchdogAbort):
        return ConnectionLost(session, reason.kind, str(reason), clean=False)
    if isinstance(reason, pe.ConnectionClosedByBroker):
        return ConnectionLost(
            session,
            "closed_by_broker",
            f"{reason.reply_code} {reason.reply_text}",
            clean=True,
            reply_code=reason.reply_code,
        )
    if isinstance(reason, pe.AMQPHeartbeatTimeout):
        return ConnectionLost(session, "heartbeat_timeout", str(reason), clean=False)
    if isinstance(reason, pe.StreamLostError):
        return ConnectionLost(session, "stream_lost", redact_text(str(reason)), clean=False)
    if reason is None:
        return ConnectionLost(session, "unknown", "closed with no reason given", clean=False)
    detail = redact_text(f"{type(reason).__name__}: {reason}")
    return ConnectionLost(session, "unknown", detail, clean=False)


def _open_failure(attempt: int, url: str, err: BaseException | str) -> ConnectFailed:
    """Map a failed open; ACCESS_REFUSED is fatal, everything else is retried.

    pika wraps the cause two or three times (``AMQPConnectionError`` around a workflow
    failure around a connector error around the ``OSError``); the detail names the innermost
    one, e.g. ``ConnectionRefusedError: [Errno 111] Connection refused``.
    """
    chain: list[Any] = [err]
    while True:
        last = chain[-1]
        if isinstance(last, AMQPConnectionWorkflowFailed) and last.exceptions:
            chain.append(last.exceptions[-1])
        elif isinstance(getattr(last, "exception", None), BaseException):
            chain.append(last.exception)  # pika's AMQPConnectorException family
        elif (
            isinstance(last, pe.AMQPConnectionError)
            and len(last.args) == 1
            and isinstance(last.args[0], BaseException)
        ):
            chain.append(last.args[0])
        else:
            break
    last = chain[-1]
    text = redact_text(f"{type(last).__name__}: {last}".rstrip(": "))
    fatal = (
        any(
            isinstance(e, pe.ProbableAuthenticationError | pe.ProbableAccessDeniedError)
            or (isinstance(e, pe.ConnectionClosedByBroker) and e.reply_code == 403)
            for e in chain
        )
        or "ACCESS_REFUSED" in text
    )
    return ConnectFailed(attempt, redact_url(url), text, fatal=fatal)


def _raised_inside_pika(exc: BaseException) -> bool:
    """True if the innermost frame of ``exc``'s traceback is pika's own code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{os.sep}pika{os.sep}" in tb.tb_frame.f_code.co_filename


class PikaSession:
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
        self._session = session
        self._url = url
        self._attempt = attempt
        self._config = config
        self._topology = topology
        self._emit_now = emit
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
        self._outbox: Mailbox[Job] = Mailbox()
        self._queued: deque[Job] = deque()  # this thread's: waiting for room in the window
        self._loop_alive = False
        self._conn: Any = None
        self._channel: Any = None
        self._intentional = False
        self._close_requested = False  # guarded by _lock
        self._channel_loss: tuple[int, str] | None = None
        self._ready = False
        self.ready_once = False  # announced Connected at least once: the attempt succeeded
        self._blocked = False
        self._outcome: ConnectionLost | ConnectFailed | None = None
        # delivery tag -> job, and (last tag of a batch, publish time) for the confirm timeout
        self._unconfirmed: dict[int, Job] = {}
        self._lowest_tag = 1
        self._next_tag = 1
        self._batches: deque[tuple[int, float]] = deque()
        self._returned: dict[int, tuple[int, str]] = {}  # delivery tag -> reply
        self._rx_bytes = -1
        self._rx_at = 0.0
        self._nacked_since: float | None = None  # first nack with no ack after it
        # Confirmed jobs not yet reported (see _hold_confirmed), and whether a flush is due.
        self._held: list[Job] = []
        self._hold_timer = False
        # a quarter window: the event loop refills this thread's queue when it has room for
        # half a window by its count, which runs this far behind
        self._hold_upto = max(1, config.max_in_flight // 4)

    # -- called from other threads -------------------------------------------------------

    def publish_threadsafe(self, jobs: list[Job]) -> bool:
        """Queue ``jobs`` for publishing; False if the connection is already gone.

        Batches queued while the I/O thread is busy share one wake-up: the thread drains
        the whole outbox at once, so the cost of crossing threads is paid per burst. A
        thread with jobs still queued is not woken: its next ack picks these up.
        """
        return self._outbox.put_all(jobs)

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
            self._coalesce_tx()

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
            if not _raised_inside_pika(exc):
                raise  # a bug of ours: fail loudly, never retry it
            # pika sometimes raises out of its ioloop instead of reporting a failure (seen:
            # ValueError from getpeername() on a socket reset right after connect). The
            # connection is gone either way: report it as such.
            log.warning("pika raised out of its ioloop: %s: %s", type(exc).__name__, exc)
            detail = redact_text(f"{type(exc).__name__}: {exc}")
            if self.ready_once:
                self._outcome = ConnectionLost(self._session, "stream_lost", detail, clean=False)
            else:
                self._outcome = _open_failure(self._attempt, self._url, exc)
        finally:
            with self._lock:
                self._loop_alive = False
            self._outbox.close()
            self._acks.close()
            self._rejects.close()
            self._conn.ioloop.close()
        if self._held:  # confirmed before the end: reported before how it ended
            self._flush_held()
        return self._outcome

    def _parameters(self) -> Any:
        cfg = self._config
        params = pika.URLParameters(self._url)
        params.heartbeat = cfg.heartbeat
        params.connection_attempts = 1
        params.retry_delay = 0
        params.socket_timeout = cfg.connect_timeout
        params.stack_timeout = cfg.connect_timeout
        params.blocked_connection_timeout = None
        keepidle = max(1, cfg.heartbeat)
        params.tcp_options = {
            "TCP_USER_TIMEOUT": int(cfg.effective_tcp_user_timeout * 1000),
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
        self._rx_at = time.monotonic()
        self._schedule_watchdog()
        conn.add_on_connection_blocked_callback(self._on_blocked)
        conn.add_on_connection_unblocked_callback(self._on_unblocked)
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, conn: Any, err: BaseException | str) -> None:
        # an open cut short by our own close is no failure
        self._outcome = None if self._intentional else _open_failure(self._attempt, self._url, err)
        conn.ioloop.stop()

    def _on_close(self, conn: Any, reason: BaseException | None) -> None:
        if self._intentional and self._channel_loss is None:
            self._outcome = None
        elif self._consumer_cancelled:
            self._outcome = ConnectionLost(
                self._session, "consumer_cancelled", "the broker cancelled the consumer",
                clean=True,
            )  # fmt: skip
        elif (
            self._channel_loss is not None
            and not self.ready_once
            and (self._channel_loss[0] in _TOPOLOGY_REFUSED)
        ):
            # declaring the topology on connect: an existing queue with other arguments,
            # or a passive queue that is missing. Final: reconnecting would repeat it.
            code, text = self._channel_loss
            self._outcome = ConnectFailed(
                self._attempt, redact_url(self._url), f"{code} {text}", fatal=True, topology=True
            )
        elif self._channel_loss is not None:
            code, text = self._channel_loss
            self._outcome = ConnectionLost(
                self._session, "channel_closed", f"{code} {text}", clean=True, reply_code=code
            )
        else:
            self._outcome = _loss_from(self._session, reason)
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
        if hasattr(conn, "_on_data_available") and hasattr(conn, "_frame_buffer"):
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

        self._declare_topology(declared)

    def _declare_again(self) -> None:
        """A worker asked (a job for a declared route came back unroutable): declare the
        topology on the open channel again, then report ``Declared``. Publishing goes on
        meanwhile; the channel orders the declarations before later publishes."""
        if self._ready and self._channel is not None and self._channel.is_open:
            self._declare_topology(lambda: self._emit(Declared(self._session)))
        # otherwise the connection is going down: the next one declares on connect

    def _declare_topology(self, done: Callable[[], object]) -> None:
        """Declare exchanges, then queues, then bindings, one at a time; then ``done()``."""
        topo, ch = self._topology, self._channel
        steps: list[Callable[[Callable[[Any], None]], None]] = [
            *(
                lambda cb, ex=ex: ch.exchange_declare(
                    ex.name,
                    exchange_type=ex.type,
                    durable=ex.durable,
                    arguments=dict(ex.arguments or {}),
                    callback=cb,
                )
                for ex in topo.exchanges
            ),
            *(
                lambda cb, q=q: ch.queue_declare(
                    q.name,
                    passive=q.passive,
                    durable=q.durable,
                    arguments=dict(q.arguments or {}),
                    callback=cb,
                )
                for q in topo.queues
            ),
            *(
                lambda cb, b=b: ch.queue_bind(
                    b.queue, b.exchange, routing_key=b.routing_key, callback=cb
                )
                for b in topo.bindings
            ),
        ]

        def step(_frame: Any = None) -> None:
            if not ch.is_open:
                return  # closing (we are stopping, or the broker refused): its close follows
            if steps:
                steps.pop(0)(step)
            else:
                done()

        step()

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        self._ready = False
        if isinstance(reason, pe.ChannelClosedByBroker):
            self._channel_loss = (reason.reply_code, reason.reply_text)
            self._emit(ChannelClosed(self._session, reason.reply_code, reason.reply_text))
            if self._conn.is_open:
                self._conn.close()
        # Otherwise the connection is going down and _on_close reports it.

    def _on_blocked(self, _conn: Any, frame: Any) -> None:
        self._blocked = True
        self._emit(Blocked(self._session, str(getattr(frame.method, "reason", ""))))

    def _on_unblocked(self, _conn: Any, _frame: Any) -> None:
        self._blocked = False
        # confirms waited because of the alarm; don't count that against confirm_timeout
        now = time.monotonic()
        self._batches = deque((tag, now) for tag, _ in self._batches)
        self._emit(Unblocked(self._session))
        self._pump()

    def _on_return(self, _ch: Any, method: Any, props: Any, _body: bytes) -> None:
        """Match a basic.return to its publish. It carries no delivery tag, but the broker
        returns messages in publish order, before their ack: it is the oldest unconfirmed,
        not yet returned publish with the same id, exchange and routing key (two jobs that
        share a caller-chosen id are told apart by that order)."""
        key = (str(props.message_id), method.exchange, method.routing_key)
        for tag, job in self._unconfirmed.items():
            if tag not in self._returned and (job.message_id, job.exchange, job.routing_key) == key:
                self._returned[tag] = (method.reply_code, method.reply_text)
                return
        log.warning("publish.return_unmatched message_id=%s", key[0])

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nack = isinstance(method, spec.Basic.Nack)
        self._confirm(nack, method.delivery_tag, bool(method.multiple))

    def _confirm(self, nack: bool, tag: int, multiple: bool) -> None:
        """A ``basic.ack`` (or ``nack``) for ``tag``, or every tag up to it (``multiple``)."""
        if multiple:
            tags: range | tuple[int] = range(self._lowest_tag, tag + 1)
        else:
            tags = (tag,)
        unconfirmed = self._unconfirmed
        pairs: list[tuple[int, Job]] | None = None
        if self._returned:  # rare: keep each settled job's tag to find its return
            pairs = [(t, job) for t in tags if (job := unconfirmed.pop(t, None)) is not None]
            settled = [job for _, job in pairs]
        else:
            settled = [job for t in tags if (job := unconfirmed.pop(t, None)) is not None]
        while self._lowest_tag < self._next_tag and self._lowest_tag not in unconfirmed:
            self._lowest_tag += 1
        while self._batches and self._batches[0][0] < self._lowest_tag:
            self._batches.popleft()
        self._pump()
        if nack:
            for t, _ in pairs or ():
                self._returned.pop(t, None)
            self._emit(Nacked(self._session, tuple(settled)))
            self._after_nack()
            return
        self._nacked_since = None
        if pairs is None and unconfirmed:
            self._hold_confirmed(settled)
            return
        if pairs is not None:
            confirmed = []
            for t, job in pairs:
                reply = self._returned.pop(t, None)
                if reply is None:
                    confirmed.append(job)
                else:
                    self._emit(Returned(self._session, job, reply[0], reply[1]))
            settled = confirmed
        self._emit(Confirmed(self._session, tuple(settled)))

    def _emit(self, event: ConnectionEvent) -> None:
        """Report ``event`` to the event loop, after the confirms held so far (order kept)."""
        if self._held:
            self._flush_held()
        self._emit_now(event)

    def _hold_confirmed(self, jobs: list[Job]) -> None:
        """Report confirms in batches while more are on their way: for at most
        ``HOLD_CONFIRMS_FOR`` or a quarter of ``max_in_flight`` jobs. The broker acks every few
        messages; a report for each woke the event loop, and through it the producers waiting
        for room, once per handful of jobs, which cost more CPU than the jobs themselves. The
        last confirm of a window (nothing left unconfirmed) is reported at once, so a lone
        publish waits for nothing; any other event first reports what is held."""
        held = self._held
        held += jobs
        if len(held) >= self._hold_upto:
            self._flush_held()
        elif not self._hold_timer:
            self._hold_timer = True
            self._conn.ioloop.call_later(HOLD_CONFIRMS_FOR, self._on_hold_timer)

    def _on_hold_timer(self) -> None:
        self._hold_timer = False
        if self._held:
            self._flush_held()

    def _flush_held(self) -> None:
        held, self._held = self._held, []
        self._emit_now(Confirmed(self._session, tuple(held)))

    def _after_nack(self) -> None:
        now = time.monotonic()
        if self._nacked_since is None:
            self._nacked_since = now
        elif now - self._nacked_since >= NACKED_FOR:
            self._conn._terminate_stream(
                _WatchdogAbort("nacked", f"only nacks from this channel for {NACKED_FOR:.0f}s")
            )

    def _pump(self) -> None:
        """Publish queued jobs while fewer than ``max_in_flight`` await confirmation.

        Runs when the event loop hands over jobs to an idle thread, and after every ack, so
        the window refills inside this thread without a round trip through the event loop.
        It returns with jobs still queued only when an ack (window full) or the broker's
        unblock will run it again; otherwise it re-arms the outbox's wake-up.
        """
        queued = self._queued
        while True:
            room = self._config.max_in_flight - len(self._unconfirmed)
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
        submit (``_amqp_wire``); pika's connection gets the bytes (and counts them for its
        heartbeats). Not one buffer for the whole batch: pika re-queues the unsent rest of a
        buffer after each partial send by copying it, so a window of large messages in one
        buffer (1,000 x 64 KB) was copied over and over."""
        channel = self._channel
        if not jobs or not self._ready or channel is None or not channel.is_open:
            return  # the publisher still owns them and re-sends after the loss it will hear of
        if not self._conn.is_open:
            return  # the stream is going away (pika closes the channel in the same callback)
        number = channel.channel_number
        max_body = self._conn._body_max_length
        out: list[bytes] = []
        writes: list[bytes] = []
        pending = 0
        tag = self._next_tag
        unconfirmed = self._unconfirmed
        for job in jobs:
            frames(out, number, job.wire_method, job.wire_header, job.body, max_body)
            unconfirmed[tag] = job
            tag += 1
            pending += len(job.body) + len(job.wire_header) + 64
            if pending >= WRITE_CHUNK:
                writes.append(b"".join(out))
                out.clear()
                pending = 0
        if out:
            writes.append(b"".join(out))
        self._conn._output_marshaled_frames(writes)
        self._batches.append((tag - 1, time.monotonic()))
        self._next_tag = tag

    def _input_waiting(self) -> bool:
        """Whether bytes from the broker wait unread in the socket (the watchdog may run
        before the read in a late turn of this thread's loop)."""
        sock = getattr(getattr(self._conn, "_transport", None), "_sock", None)
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def _coalesce_tx(self) -> None:
        """Join pika's queued output into one buffer, so a batch of acks leaves in one send().

        pika queues every frame separately and sends them one syscall each; every syscall
        releases the GIL to the event loop thread and back. Joining the queued chunks keeps
        order and byte count and cuts that to one send per batch. (Publishes need none of
        this: ``_publish`` writes a batch in a few large buffers already.) If a pika version lacks
        these internals, this does nothing.
        """
        transport = getattr(self._conn, "_transport", None)
        buffers = getattr(transport, "_tx_buffers", None)
        if isinstance(buffers, deque) and len(buffers) > 2:
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)

    def _close_intentionally(self) -> None:
        if self._intentional:
            return
        self._intentional = True
        conn = self._conn
        if conn.is_open:
            conn.close()
        elif _opening_without_transport(conn):
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
        if _opening_without_transport(conn):
            conn.close()
        else:  # closing, open, or a handshake the broker does not finish
            conn._terminate_stream(_WatchdogAbort("dead_link", "close not answered in time"))

    # -- watchdog ------------------------------------------------------------------------

    def _schedule_watchdog(self) -> None:
        self._conn.ioloop.call_later(min(WATCHDOG_EVERY, self._config.heartbeat / 4),
                                     self._watchdog)  # fmt: skip

    def _watchdog(self) -> None:
        conn = self._conn
        if not conn.is_open:
            return
        now = time.monotonic()
        if conn.bytes_received != self._rx_bytes:
            self._rx_bytes = conn.bytes_received
            self._rx_at = now
        silent = now - self._rx_at
        if silent > self._config.dead_after and self._input_waiting():
            self._rx_at = now  # this thread was late to read, not the broker to send
        elif silent > self._config.dead_after:
            conn._terminate_stream(
                _WatchdogAbort("dead_link", f"no bytes from the broker for {silent:.1f}s")
            )
            return
        if self._batches and not self._blocked:
            age = now - self._batches[0][1]
            if age > self._config.confirm_timeout:
                conn._terminate_stream(
                    _WatchdogAbort("confirm_timeout", f"publish unconfirmed for {age:.1f}s")
                )
                return
        self._schedule_watchdog()


def _unexpected(batch: list[Any]) -> None:
    """A publishing session consumes nothing; deliveries would be a broker bug: dropped
    unacked (they return to their queue when the connection closes)."""
    log.warning("amqp.unexpected_deliveries count=%d", len(batch))
