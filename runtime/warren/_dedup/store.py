"""Effects at most once per message_id, across restarts and replicas: a deduplication store.

At-least-once delivery redelivers what a lost connection did not ack, so a handler may run
twice for one message. With a store, the consumer *claims* the message_id before the
handler runs (set-if-absent, with a lease longer than ``handler_timeout``), marks it *done*
after success (kept for a retention time) and *releases* the claim on failure so the retry
can run. A redelivery whose id is done is acked without running the handler; one whose id
is claimed by another live worker comes back later. The one window left: a crash between
the effect and the mark (the claim then expires and the message runs again).
"""

from __future__ import annotations

import enum
import math
import time
from typing import TYPE_CHECKING, Protocol, final
from urllib.parse import quote

import anyio

from warren._exceptions import WarrenError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class Claim(enum.Enum):
    CLAIMED = "claimed"  # ours now: run the handler
    DONE = "done"  # an earlier delivery finished it: ack without running it
    HELD = "held"  # another worker holds it: try again after a delay


class DedupUnavailable(WarrenError):
    """The deduplication store could not be reached (the consumer's ``dedup_on_error``
    decides: go on at-least-once, or pause)."""


class DedupStore(Protocol):
    """What the consumer needs of a store. Each call may raise ``DedupUnavailable``.

    Claims and marks take many keys at once: the consumer claims a burst of deliveries in
    one call and marks every handler that finished meanwhile in one call.
    """

    async def claim(self, keys: Sequence[str], lease: float) -> list[Claim]:
        """Claim each key for ``lease`` seconds; one ``Claim`` per key, in order."""
        ...

    async def done(self, keys: Sequence[str], retention: float) -> None:
        """Mark each key done for ``retention`` seconds (whoever held its claim)."""
        ...

    async def release(self, key: str) -> None:
        """Drop this store's own claim on ``key`` (not another's, not a done mark)."""
        ...


@final
class MemoryDedupStore:
    """In this process only: forgets on restart and is not shared between replicas (for
    tests, and one-process deployments)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[Claim, float]] = {}  # key -> (state, expires at)

    async def claim(self, keys: Sequence[str], lease: float) -> list[Claim]:
        check_keys(keys)
        await anyio.lowlevel.checkpoint()
        now = self._clock()
        return [self._claim(key, now, lease) for key in keys]

    def _claim(self, key: str, now: float, lease: float) -> Claim:
        state = self._entries.get(key)
        if state is not None and state[1] > now:
            return Claim.DONE if state[0] is Claim.DONE else Claim.HELD
        self._entries[key] = (Claim.HELD, now + lease)
        if len(self._entries) > 100_000:
            self._expire(now)
        return Claim.CLAIMED

    async def done(self, keys: Sequence[str], retention: float) -> None:
        check_keys(keys)
        await anyio.lowlevel.checkpoint()
        until = self._clock() + retention
        for key in keys:
            self._entries[key] = (Claim.DONE, until)

    async def release(self, key: str) -> None:
        await anyio.lowlevel.checkpoint()
        state = self._entries.get(key)
        if state is not None and state[0] is Claim.HELD:
            del self._entries[key]

    def _expire(self, now: float) -> None:
        for key in [k for k, (_, until) in self._entries.items() if until <= now]:
            del self._entries[key]


def dedup_key(vhost: str, queue: str, message_id: str) -> str:
    """The store key of one message: ``<vhost>:<queue>:<message_id>``, each part
    percent-encoded (``:`` and ``%`` included), so two different triples never build the
    same key — queue ``a.k`` with id ``x:m1`` is not queue ``a.k:x`` with id ``m1``, and one
    queue name in two vhosts sharing a store are two keys."""
    return f"{quote(vhost, safe='')}:{quote(queue, safe='')}:{quote(message_id, safe='')}"


def check_keys(keys: Sequence[str]) -> None:
    """A ``str`` is a sequence of one-letter keys: refuse it (``claim([key], ...)``)."""
    if isinstance(keys, str):
        raise TypeError("keys must be a list of keys, not one str: claim([key], lease)")


def lease_for(handler_timeout: float) -> float:
    """A claim outlives the handler's own deadline, with room for the mark after it."""
    return handler_timeout * 2 + 5.0 if math.isfinite(handler_timeout) else 3600.0
