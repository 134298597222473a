"""The lifecycle both workers share, and the one place connection events change link state.

A worker is an ``async with`` object that owns a task group: entering starts its loop,
leaving asks the loop to stop (``_begin_close``) and waits for it, and a failure comes out
as the one exception that caused it, not an exception group. Whatever the worker does with
jobs or deliveries, what its connection reports about itself (up, lost, refused, gave up)
is applied to its ``LinkState`` here, so the publisher and the consumer cannot disagree
about what "connected" means.
"""

from __future__ import annotations

import contextlib
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Final, Self, final

import anyio
from anyio import ClosedResourceError

from warren._amqp import Connected, ConnectFailed, ConnectionLost, GaveUp
from warren._common.unwrap import raise_single
from warren._exceptions import AccessRefused, ConnectionGaveUp, TlsRefused, TopologyMismatch
from warren._worker.link_state import LinkState

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from types import TracebackType

    from anyio.streams.memory import MemoryObjectSendStream

    from warren._amqp import ConnectionEvent


@final
class Wake:
    """Posted on a worker's event stream to make its loop look again (shutdown began)."""


WAKE: Final = Wake()


class Worker:
    """Base of ``Publisher`` and ``Consumer``: lifecycle and link state (see module doc)."""

    def __init__(
        self,
        name: str,
        clock: Callable[[], float],
        events: MemoryObjectSendStream[ConnectionEvent | Wake],
        log: logging.Logger,
    ) -> None:
        self._name = name
        self._clock = clock
        self._wake_tx = events
        self._log = log
        self._link = LinkState(clock)
        self._session = 0  # the connection whose jobs and deliveries count
        self._connected_event = anyio.Event()
        self._closing = False
        self._running = False  # entered and not yet exited: its name is taken
        self._stack: AsyncExitStack | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            self._register()  # refuses a name a running worker has
            await self._prepare()
        except BaseException:
            self._close_streams()  # never ran: nothing else to clean up
            raise
        self._running = True
        stack = AsyncExitStack()
        tg = await stack.enter_async_context(anyio.create_task_group())
        self._stack = stack
        tg.start_soon(self._run, name=f"warren-{type(self).__name__.lower()}-{self._name}")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._stack is not None, "__aexit__ without __aenter__"
        try:
            self._begin_close()
        finally:
            try:
                await self._stack.__aexit__(et, e, tb)
            except BaseExceptionGroup as group:
                raise_single(group)
            finally:
                self._running = False

    async def wait_connected(self) -> None:
        """Return once the first connection is up (topology declared)."""
        await self._connected_event.wait()

    def _begin_close(self) -> None:
        """Stop taking work; the loop drains and returns. Idempotent."""
        if not self._closing:
            self._closing = True
            self._on_close_begun()
            with contextlib.suppress(ClosedResourceError):  # the loop already ended
                self._wake_tx.send_nowait(WAKE)

    def _register(self) -> None:
        """Export the worker's statistics under its name (at ``__aenter__``)."""

    async def _prepare(self) -> None:
        """What must work before the loop starts (at ``__aenter__``; raising refuses it)."""

    def _close_streams(self) -> None:
        """Close every memory stream the worker made (when its loop will never run)."""

    def _on_close_begun(self) -> None:
        """What the worker does first when a close begins (before its loop is woken)."""

    async def _run(self) -> None:  # pragma: no cover - every worker defines its loop
        raise NotImplementedError

    # -- connection facts ----------------------------------------------------------------

    def _apply_link_event(self, event: ConnectionEvent | Wake) -> bool:
        """Apply a connection event about the link itself; False if it is about work.

        Raises:
            AccessRefused: the broker refused the credentials (the worker stops).
            TopologyMismatch: the broker refused the declared topology (the worker stops).
            ConnectionGaveUp: reconnect attempts ran out (the worker stops).
        """
        link, log, name = self._link, self._log, self._name
        match event:
            case Connected(session, url):
                self._session = session
                if link.up(url):
                    log.warning("connection.reconnected worker=%s url=%s", name, url)
                else:
                    log.info("connection.up worker=%s url=%s", name, url)
                self._connected_event.set()
            case ConnectionLost(session, kind, detail, clean):
                if session == self._session:
                    link.down(kind, detail)
                    work = self._on_lost()
                    log.warning(
                        "connection.lost worker=%s kind=%s clean=%s"
                        + "".join(f" {key}=%s" for key in work) + " %s",
                        name, kind, clean, *work.values(), detail,
                    )  # fmt: skip
                else:  # a connection that never became ready: nothing of ours was on it
                    link.last_error = f"{kind}: {detail}"
                    log.warning("connection.lost worker=%s kind=%s %s", name, kind, detail)
            case ConnectFailed(attempt, url, detail, fatal, topology, tls):
                link.last_error = detail
                if tls:
                    log.error("connection.tls_refused worker=%s url=%s %s", name, url, detail)
                    link.fail(f"a certificate was refused: {detail}")
                    raise TlsRefused(url, detail)
                if topology:
                    log.error("topology.refused worker=%s url=%s %s", name, url, detail)
                    link.fail(f"the broker refused the topology: {detail}")
                    raise TopologyMismatch(url, detail)
                if fatal:
                    log.error("connection.refused worker=%s url=%s %s", name, url, detail)
                    link.fail("the broker refused the credentials")
                    raise AccessRefused(url, detail)
                log.warning(
                    "connection.failed worker=%s url=%s attempt=%d %s",
                    name, url, attempt, detail,
                )  # fmt: skip
            case GaveUp(attempts, last_error):
                link.fail(f"gave up reconnecting after {attempts} attempts")
                lost = self._abandon_work()
                log.critical(
                    "connection.gave_up worker=%s attempts=%d jobs_lost=%d last_error=%s",
                    name, attempts, lost, last_error,
                )  # fmt: skip
                raise ConnectionGaveUp(attempts, lost, last_error)
            case Wake():
                pass  # re-evaluate the loop (shutdown began)
            case _:
                return False
        return True

    def _on_lost(self) -> dict[str, int]:
        """The current connection died: take back what was on it; return fields for the log
        line (what was on it)."""
        return {}

    def _abandon_work(self) -> int:
        """The worker gives up for good: settle what it holds; return how many jobs died."""
        return 0
