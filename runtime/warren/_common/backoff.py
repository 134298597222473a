"""Capped exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
And Jitter"): the n-th retry waits uniform(0, min(cap, base * 2**n)). Jitter spreads a fleet's
reconnects after a broker restart; the cap bounds the wait; the budget lives in the caller."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Delay policy. ``rng`` is injectable for reproducible tests."""

    base: float = 0.2
    cap: float = 15.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def ceiling(self, attempt: int) -> float:
        """The largest delay the ``attempt``-th retry (1-based) can get."""
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, 62))

    def delay(self, attempt: int) -> float:
        """A jittered delay for the ``attempt``-th retry (1-based)."""
        return self.rng.uniform(0.0, self.ceiling(attempt))
