"""When Warren gives up a connection that pika still thinks is alive, as plain decisions.

Dead links are found without waiting for TCP. The broker sends a frame at least once a
heartbeat, so a connection that received no byte for ``dead_after`` (heartbeat + 0.6 s; see
``PublisherConfig.dead_after``) is dead, unless bytes wait unread in the socket (then the I/O
thread was late to read, not the broker to send). A publish left unconfirmed for
``confirm_timeout`` while the broker was not blocking us means the same. A channel that has
answered nothing but nacks for ``NACKED_FOR`` seconds is given up too: on a cluster, a
RabbitMQ 3.10 channel that first published to a quorum queue during its leader's failover
nacks every publish for as long as it lives, while a fresh one on the same node works.

The I/O thread asks every ``every`` seconds and after each nack; a verdict is the
``WatchdogAbort`` to cut the stream with. Time and byte counts are passed in, so this holds no
I/O (``tests/unit/test_watchdog.py``): a verdict is given exactly when one of the three limits
is passed at the moment of asking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Callable

    from warren._amqp.events import LossKind

NACKED_FOR = 5.0  # seconds of nothing but nacks before the channel is given up
WATCHDOG_EVERY = 0.05  # seconds between the watchdog's looks (a cut noticed this late at most)


class WatchdogAbort(Exception):
    """Why Warren itself cut the stream (the reason pika then closes the connection with)."""

    def __init__(self, kind: LossKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: LossKind = kind


@final
class Watchdog:
    """The silence, confirm-age and nack-streak limits of one connection. Not thread-safe."""

    __slots__ = ("_confirm_timeout", "_dead_after", "_nacked_since", "_rx_at", "_rx_bytes", "every")

    def __init__(self, *, heartbeat: float, dead_after: float, confirm_timeout: float) -> None:
        self.every = min(WATCHDOG_EVERY, heartbeat / 4)  # seconds between looks
        self._dead_after = dead_after
        self._confirm_timeout = confirm_timeout
        self._rx_bytes = -1
        self._rx_at = 0.0
        self._nacked_since: float | None = None  # first nack with no ack after it

    def opened(self, now: float) -> None:
        """The connection is open: its silence counts from ``now``."""
        self._rx_at = now

    def look(
        self,
        now: float,
        bytes_received: int,
        oldest_unconfirmed: float | None,
        *,
        blocked: bool,
        input_waiting: Callable[[], bool],
    ) -> WatchdogAbort | None:
        """A verdict, or None. ``oldest_unconfirmed``: when the oldest publish still waiting
        for its confirm was sent; ``input_waiting`` is asked only when the link is silent."""
        if bytes_received != self._rx_bytes:
            self._rx_bytes = bytes_received
            self._rx_at = now
        silent = now - self._rx_at
        if silent > self._dead_after:
            if not input_waiting():
                return WatchdogAbort("dead_link", f"no bytes from the broker for {silent:.1f}s")
            self._rx_at = now  # this thread was late to read, not the broker to send
        if oldest_unconfirmed is not None and not blocked:
            age = now - oldest_unconfirmed
            if age > self._confirm_timeout:
                return WatchdogAbort("confirm_timeout", f"publish unconfirmed for {age:.1f}s")
        return None

    def acked(self) -> None:
        """The channel acked a publish: any run of nacks is over."""
        self._nacked_since = None

    def nacked(self, now: float) -> WatchdogAbort | None:
        """The channel nacked a publish; a verdict once it has done nothing else for
        ``NACKED_FOR`` seconds."""
        if self._nacked_since is None:
            self._nacked_since = now
        elif now - self._nacked_since >= NACKED_FOR:
            return WatchdogAbort("nacked", f"only nacks from this channel for {NACKED_FOR:.0f}s")
        return None
