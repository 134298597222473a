"""The whole sender slows down while the provider throttles.

A 429 (FCM ``QUOTA_EXCEEDED``), or a 503 with ``Retry-After``, is the provider saying "less,
for a while" to the sender, not to one message. Retrying only that message (through a delay
queue) would let the other pushes in flight and behind it keep hitting the quota, so every
push waits at this gate until the Retry-After has passed. A wait longer than ``max_wait``
(it would outlast the handler's timeout) sends the push back to be retried later instead,
without spending one of its attempts: it was never sent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
from prometheus_client import Counter, Gauge

from warren import RetryLater

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

DEFAULT_PAUSE = 1.0  # a 429 without Retry-After


class Throttled(RetryLater):
    """The provider throttles the sender (429, or 503 with Retry-After)."""


class Throttle:
    def __init__(self, registry: CollectorRegistry, *, max_wait: float) -> None:
        self._until = 0.0  # time.monotonic(): read by the metrics scrape thread too
        self._max_wait = max_wait
        self._events = Counter(
            "warren_push_throttled",
            "Times the provider throttled the sender (429, or 503 with Retry-After)",
            registry=registry,
        )
        self._seconds = Counter(
            "warren_push_throttled_seconds",
            "Seconds every push waited because the provider throttled",
            registry=registry,
        )
        active = Gauge(
            "warren_push_throttle_active",
            "1 while pushes wait out the provider's Retry-After",
            registry=registry,
        )
        active.set_function(lambda: 1.0 if self._until > time.monotonic() else 0.0)

    def pause(self, seconds: float) -> None:
        """The provider asked for ``seconds`` of quiet (0: its default)."""
        now = time.monotonic()
        until = now + (seconds if seconds > 0 else DEFAULT_PAUSE)
        if until > self._until:
            self._seconds.inc(until - max(now, self._until))
            if self._until <= now:
                self._events.inc()
            self._until = until

    async def wait(self) -> None:
        """Until the provider's quiet time has passed (raises ``RetryLater`` if too long)."""
        remaining = self._until - time.monotonic()
        if remaining <= 0:
            return
        if remaining > self._max_wait:
            raise RetryLater(remaining, f"provider throttling for {remaining:.0f}s more",
                             consumes_attempt=False)  # fmt: skip
        await anyio.sleep(remaining)
