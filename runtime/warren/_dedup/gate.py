"""The consumer's side of deduplication: claims before handlers, marks after them, in batches.

A store call per message would make every handler task wait twice on the store (claim,
then mark) and wake once per call. Instead one task claims each burst of deliveries the
consumer's loop dispatches, in one store call, and another marks, in one call, every
handler that succeeded meanwhile; a delivery is acked only after its mark (so a lost ack
finds the mark). Handler tasks never wait on the store, except to release a failed claim.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Generic, Literal, TypeVar, final

import anyio

from warren._dedup.store import Claim, DedupStore, DedupUnavailable, dedup_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from warren._amqp import Delivered

log = logging.getLogger("warren.consumer")

_T = TypeVar("_T")
GateOutcome = Literal["ack", "duplicate"]


@final
class _Inbox(Generic[_T]):
    """Items put by the loop, taken all at once by one task."""

    def __init__(self) -> None:
        self._items: list[_T] = []
        self._ready = anyio.Event()

    def put(self, item: _T) -> None:
        self._items.append(item)
        self._ready.set()

    async def take(self) -> list[_T]:
        while not self._items:
            self._ready = anyio.Event()
            await self._ready.wait()
        items, self._items = self._items, []
        return items


@final
class DedupGate:
    """Claims, marks and releases each message's ``dedup_key`` in ``store`` for one consumer.

    ``admit`` receives each delivery the handler may run (claimed, or the store is down
    and ``on_error`` is at-least-once); ``held`` one that another live worker holds;
    ``settle`` one that is finished here: ``duplicate`` (done before) or ``ack`` (marked).
    Deliveries without a message_id are admitted and acked without the store.
    """

    def __init__(
        self,
        store: DedupStore,
        *,
        vhost: str,
        queue: str,
        lease: float,
        retention: float,
        on_error: str,
        name: str,
        admit: Callable[[Delivered], None],
        held: Callable[[Delivered], None],
        settle: Callable[[Delivered, GateOutcome], None],
    ) -> None:
        self._store = store
        self._vhost = vhost
        self._queue = queue
        self._lease = lease
        self._retention = retention
        self._pause = on_error == "pause"
        self._name = name
        self._admit = admit
        self._held = held
        self._settle = settle
        self._claims = _Inbox["Delivered"]()
        self._marks = _Inbox["Delivered"]()
        self._down = False  # an unavailability episode is logged once
        self.unavailable = 0  # claims, marks and releases (one per delivery) that failed

    def claim(self, delivery: Delivered) -> None:
        """Before the handler: the delivery reaches ``admit``, ``held`` or ``settle``."""
        if delivery.message_id:
            self._claims.put(delivery)
        else:
            self._admit(delivery)

    def succeeded(self, delivery: Delivered) -> None:
        """After the handler returned: marked done, then settled as ``ack``."""
        if delivery.message_id:
            self._marks.put(delivery)
        else:
            self._settle(delivery, "ack")

    async def release(self, delivery: Delivered) -> None:
        """After the handler failed: drop the claim so that its retry can run."""
        if not delivery.message_id:
            return
        try:
            await self._store.release(self._key(delivery))
        except DedupUnavailable as exc:  # the claim expires with its lease
            self._store_down(exc, 1)

    async def run(self) -> None:
        """The claiming and the marking task, until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._claiming)
            tg.start_soon(self._marking)

    async def _claiming(self) -> None:
        while True:
            batch = await self._claims.take()
            claims = await self._claim([self._key(d) for d in batch])
            for delivery, claim in zip(batch, claims, strict=True):
                if claim is Claim.CLAIMED:
                    self._admit(delivery)
                elif claim is Claim.DONE:  # finished before: its ack was lost
                    self._settle(delivery, "duplicate")
                else:  # another worker runs it now
                    self._held(delivery)

    async def _claim(self, keys: list[str]) -> list[Claim]:
        """While the store is unreachable: run them anyway (at-least-once), or wait for the
        store (pause: the deliveries stay unacked, the prefetch window fills, consuming
        stops)."""
        delay = 0.2
        while True:
            try:
                claims = await self._store.claim(keys, self._lease)
            except DedupUnavailable as exc:
                self._store_down(exc, len(keys))
                if not self._pause:
                    return [Claim.CLAIMED] * len(keys)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._down:
                self._down = False
                log.warning("dedup.available worker=%s", self._name)
            return claims

    async def _marking(self) -> None:
        while True:
            batch = await self._marks.take()
            try:
                keys = [self._key(d) for d in batch]
                await self._store.done(keys, self._retention)
            except DedupUnavailable as exc:  # acked anyway: a redelivery may run again
                self._store_down(exc, len(keys))
            for delivery in batch:
                self._settle(delivery, "ack")

    def _key(self, delivery: Delivered) -> str:
        assert delivery.message_id
        return dedup_key(self._vhost, self._queue, delivery.message_id)

    def _store_down(self, exc: DedupUnavailable, deliveries: int) -> None:
        self.unavailable += deliveries
        if not self._down:
            self._down = True
            log.warning("dedup.unavailable worker=%s on_error=%s %s", self._name,
                        "pause" if self._pause else "at-least-once", exc)  # fmt: skip
