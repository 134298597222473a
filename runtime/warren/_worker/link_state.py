"""What a worker knows about its broker connection, for statistics, metrics and health.

Publisher and consumer keep the same facts: up or down, how often it came back, how long it
has been down in total, the last error (already redacted by the bridge), and whether the
worker failed for good (gave up reconnecting, or the broker refused its credentials).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from warren._config.connection import node_address

if TYPE_CHECKING:
    from collections.abc import Callable


@final
class LinkState:
    __slots__ = (
        "_clock",
        "_down_since",
        "_down_total",
        "confirm_timeouts",
        "connected",
        "ever_connected",
        "failed",
        "last_error",
        "node",
        "reconnects",
    )

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.connected = False
        self.ever_connected = False
        self.reconnects = 0
        self.confirm_timeouts = 0
        self.last_error: str | None = None
        self.failed: str | None = None
        self.node: str | None = None  # host:port of the broker node while connected
        self._down_since: float | None = clock()  # down until the first connection
        self._down_total = 0.0

    def up(self, url: str = "") -> bool:
        """The connection to ``url`` is (back) up; True if this is a reconnection."""
        self.node = node_address(url)
        again = self.ever_connected
        if again:
            self.reconnects += 1
        self.connected = self.ever_connected = True
        if self._down_since is not None:
            self._down_total += self._clock() - self._down_since
            self._down_since = None
        return again

    def down(self, kind: str, detail: str) -> None:
        self.last_error = f"{kind}: {detail}"
        if kind == "confirm_timeout":
            self.confirm_timeouts += 1
        self.connected = False
        self.node = None
        if self._down_since is None:
            self._down_since = self._clock()

    def closed(self) -> None:
        """The worker stopped (on purpose or not): on no node any more."""
        self.connected = False
        self.node = None

    def fail(self, why: str) -> None:
        """The worker stops for good: liveness turns false."""
        self.failed = why
        self.connected = False
        self.node = None
        if self._down_since is None:
            self._down_since = self._clock()

    def disconnected_seconds(self) -> float:
        """Total time not connected, the current outage included."""
        ongoing = 0.0 if self._down_since is None else self._clock() - self._down_since
        return self._down_total + ongoing
