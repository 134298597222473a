"""What a worker knows about its broker connection, for statistics, metrics and health.

Publisher and consumer keep the same facts: up or down, how often it came back, how long it
has been down in total, the last error (already redacted by the bridge), and whether the
worker failed for good (gave up reconnecting, or the broker refused its credentials).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

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
        self._down_since: float | None = clock()  # down until the first connection
        self._down_total = 0.0

    def up(self) -> bool:
        """The connection is (back) up; True if this is a reconnection."""
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
        if self._down_since is None:
            self._down_since = self._clock()

    def fail(self, why: str) -> None:
        """The worker stops for good: liveness turns false."""
        self.failed = why
        self.connected = False
        if self._down_since is None:
            self._down_since = self._clock()

    def disconnected_seconds(self) -> float:
        """Total time not connected, the current outage included."""
        ongoing = 0.0 if self._down_since is None else self._clock() - self._down_since
        return self._down_total + ongoing
