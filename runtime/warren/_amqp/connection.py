"""The connection bridge: keeps one broker connection alive and reports on an event stream.

``AmqpConnection.run()`` connects (rotating through the configured URLs), runs each pika
connection in its own thread (``_amqp/thread.py``: ``PikaSession``), and after every loss backs off
and connects again. Everything that happens becomes an event on the stream given to it; the
worker that owns it ``select``-s over that stream. It stops when cancelled, when closed on
purpose, after ACCESS_REFUSED (reported as ``ConnectFailed(fatal=True)``), or after
``reconnect_max_attempts`` consecutive failed attempts (reported as ``GaveUp``).

The I/O thread holds a token of the connection's own ``CapacityLimiter`` (one token: one
session at a time), never one of anyio's default limiter: it lives as long as the connection,
and 40 connections would otherwise take all 40 default tokens from every other ``to_thread``
user (the outbox's SQLite).

Events cross from the pika thread in batches through a ``Mailbox`` that wakes the event loop
once per batch with the backend's own non-blocking thread-safe call (asyncio's
``call_soon_threadsafe``, trio's ``TrioToken.run_sync_soon``), so the pika thread never waits
for the event loop and a burst of confirms costs one wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, final

import anyio
from anyio import BrokenResourceError, ClosedResourceError

from warren._amqp.events import ConnectFailed, ConnectionEvent, ConnectionLost, Delivered, GaveUp
from warren._amqp.mailbox import Mailbox
from warren._amqp.thread import PikaSession
from warren._amqp.topology import Topology
from warren._common.backoff import Backoff
from warren._common.redact import redact_url

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.streams.memory import MemoryObjectSendStream

    from warren._amqp.consume import ConsumeSpec
    from warren._config import PublisherConfig, TlsConfig
    from warren._job import Job

log = logging.getLogger("warren.amqp")


def _warn_if_unverified(tls: TlsConfig, name: str) -> None:
    if not tls.verify:
        log.warning(
            "tls.verify_off worker=%s the broker's certificate is NOT verified "
            "(WARREN_AMQP_TLS_VERIFY=off): anyone on the path can pose as the broker",
            name,
        )


def _call_soon_threadsafe() -> Callable[[Callable[[], None]], None]:
    """The running backend's non-blocking "run this soon in the event loop" from any thread."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            run_sync_soon: Callable[[Callable[[], None]], None]
            run_sync_soon = trio.lowlevel.current_trio_token().run_sync_soon
            return run_sync_soon
        except RuntimeError:
            pass  # trio is imported, but this is asyncio
    loop = asyncio.get_running_loop()

    def call_soon(fn: Callable[[], None]) -> None:
        loop.call_soon_threadsafe(fn)

    return call_soon


@final
class AmqpConnection:
    """One logical broker connection with reconnects. Owned by one worker; see module doc."""

    def __init__(
        self,
        config: PublisherConfig,
        events: MemoryObjectSendStream[ConnectionEvent],
        *,
        name: str,
        topology: Topology | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        consume: ConsumeSpec | None = None,
        deliveries: MemoryObjectSendStream[Delivered] | None = None,
    ) -> None:
        self._config = config
        self._events = events
        self._consume = consume
        self._deliveries = deliveries
        self._name = name
        self._topology = topology or Topology()
        self._backoff = backoff or Backoff(
            base=config.connection.backoff_base, cap=config.connection.backoff_cap
        )
        self._sleep = sleep
        self._inbox: Mailbox[ConnectionEvent] = Mailbox()
        self._current: PikaSession | None = None
        self._current_no = 0
        self._closing = False
        self._backoff_wait = anyio.CancelScope()  # aclose() cuts the wait short

    def publish(self, session: int, jobs: list[Job]) -> bool:
        """Hand ``jobs`` to connection ``session``; False if that connection is gone.

        The caller keeps owning the jobs until they are confirmed: if the connection dies,
        a ``ConnectionLost`` for ``session`` follows and the caller sends them again.
        """
        current = self._current
        if current is None or self._current_no != session:
            return False
        return current.publish_threadsafe(jobs)

    def ack(self, session: int, tags: list[int]) -> bool:
        """Ack deliveries of connection ``session``; False if it is gone (the broker then
        redelivers them: at-least-once)."""
        current = self._current
        if current is None or self._current_no != session:
            return False
        return current.ack_threadsafe(tags)

    def reject(self, session: int, tags: list[int]) -> bool:
        """Reject deliveries of connection ``session`` without requeue; False if it is gone."""
        current = self._current
        if current is None or self._current_no != session:
            return False
        return current.reject_threadsafe(tags)

    def declare(self, session: int) -> bool:
        """Declare the topology again on connection ``session``; a ``Declared`` event
        follows. False if that connection is gone."""
        current = self._current
        if current is None or self._current_no != session:
            return False
        return current.declare_threadsafe()

    async def aclose(self) -> None:
        """Close the connection on purpose; ``run()`` returns without reconnecting.

        Returns at once; ``run()`` ends within the session's close grace (a close handshake
        the broker does not answer is cut short), and a backoff wait is interrupted.
        """
        self._closing = True
        self._backoff_wait.cancel()
        if self._current is not None:
            self._current.close_threadsafe()

    async def run(self) -> None:
        """Connect and reconnect until cancelled, closed, refused, or out of attempts."""
        call_soon = _call_soon_threadsafe()

        def wake() -> None:
            # RuntimeError: the event loop is closing; run() delivers what is pending when
            # the thread ends.
            with contextlib.suppress(RuntimeError):
                call_soon(self._deliver)

        self._inbox.open(wake)
        _warn_if_unverified(self._config.connection.tls, self._name)
        io_thread = anyio.CapacityLimiter(1)  # this connection's I/O thread (module doc)
        urls = self._config.connection.url_list
        failures = 0
        last_error = "never connected"
        tls_refused: set[str] = set()  # the nodes whose certificate check failed
        index = 0
        while not self._closing:
            url = urls[index % len(urls)]
            index += 1
            self._current_no += 1
            session = PikaSession(
                session=self._current_no,
                url=url,
                attempt=failures + 1,
                config=self._config,
                topology=self._topology,
                emit=self._inbox.put,
                emit_all=self._inbox.put_all,
                name=self._name,
                consume=self._consume,
            )
            log.debug("connection.attempt url=%s", redact_url(url))
            outcome = await self._run_session(session, io_thread)
            self._deliver()  # what the thread said comes before how it ended
            if outcome is None or self._closing:
                return  # closed on purpose (an attempt cut short by the close is no failure)
            if isinstance(outcome, ConnectionLost):
                failures = 0 if session.ready_once else failures + 1
            else:
                failures += 1
            last_error = outcome.detail
            outcome = _tls_refusal_of_all(outcome, url, urls, session.ready_once, tls_refused)
            self._send(outcome)
            if isinstance(outcome, ConnectFailed) and outcome.fatal:
                return
            if isinstance(outcome, ConnectionLost) and outcome.reply_code == 403:
                # a channel-level ACCESS_REFUSED (no configure permission, an amq.* name):
                # as final as a refused login; retrying would only repeat it forever
                detail = f"channel refused: {outcome.detail}"
                self._send(ConnectFailed(failures, redact_url(url), detail, fatal=True))
                return
            limit = self._config.connection.reconnect_max_attempts
            if limit and failures >= limit:
                self._send(GaveUp(failures, last_error))
                return
            with self._backoff_wait:
                await self._sleep(self._backoff.delay(failures + 1))
            self._backoff_wait = anyio.CancelScope()

    async def _run_session(
        self, session: PikaSession, limiter: anyio.CapacityLimiter
    ) -> ConnectionLost | ConnectFailed | None:
        self._current = session
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._close_when_cancelled, session)
                # Not abandoned on cancel: the thread must end before we do. Cancellation
                # reaches it through _close_when_cancelled closing the connection.
                outcome = await anyio.to_thread.run_sync(session.run, limiter=limiter)
                tg.cancel_scope.cancel()
        finally:
            self._current = None
        return outcome

    @staticmethod
    async def _close_when_cancelled(session: PikaSession) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            session.close_threadsafe()

    # -- thread -> event loop ---------------------------------------------------------------

    def _deliver(self) -> None:
        for event in self._inbox.take():
            self._send(event)

    def _send(self, event: ConnectionEvent) -> None:
        try:
            if self._deliveries is not None and isinstance(event, Delivered):
                self._deliveries.send_nowait(event)  # the job stream: bounded by prefetch
                return
            self._events.send_nowait(event)
        except (BrokenResourceError, ClosedResourceError):
            log.debug("event dropped, its worker is gone: %r", event)


def _tls_refusal_of_all(
    outcome: ConnectionLost | ConnectFailed,
    url: str,
    urls: tuple[str, ...],
    took_us: bool,
    refused: set[str],
) -> ConnectionLost | ConnectFailed:
    """A refused certificate is final only when every node refused it on its last try:
    certificates are per node (one node's expired certificate must not stop a worker the
    others would take). ``refused`` holds the nodes whose last try was such a refusal; a
    refusal while others remain comes back as an ordinary, retried failure."""
    if took_us:
        refused.clear()  # a node took us: the certificates are not the problem
    elif not (isinstance(outcome, ConnectFailed) and outcome.tls):
        refused.discard(url)  # this node's last word was no certificate refusal
    elif len(set(urls)) > 1:
        refused.add(url)
        if len(refused) < len(set(urls)):
            detail = f"certificate refused (other nodes left to try): {outcome.detail}"
            return replace(outcome, fatal=False, tls=False, detail=detail)
    return outcome
