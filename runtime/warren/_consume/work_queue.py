"""Hands deliveries to a pool of handler tasks, waking as few of them as it can.

A memory stream gives every item to a different waiting task, so a burst of k deliveries
costs k task wake-ups even when handlers finish without ever yielding. Here at most one idle
task is being woken at a time: the woken task takes an item and, if more are left, wakes the
next one before it runs its handler. Handlers that wait on I/O still fan out across the pool
(each start wakes the next), and handlers that finish at once drain the burst in one task.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar, final

import anyio

_T = TypeVar("_T")


@final
class WorkQueue(Generic[_T]):
    """Unbounded FIFO for one event loop; the producer bounds it (in-flight limit)."""

    def __init__(self) -> None:
        self._items: deque[_T] = deque()
        self._idle: list[anyio.Event] = []  # one per task parked in get()
        self._waking = 0  # set, but their tasks have not run yet

    def put(self, item: _T) -> None:
        self._items.append(item)
        if not self._waking:
            self._wake_one()

    async def get(self) -> _T:
        items = self._items
        while not items:
            event = anyio.Event()
            self._idle.append(event)
            try:
                await event.wait()
            except BaseException:  # cancelled: leave the pool without losing a wake-up
                if event.is_set():
                    self._waking -= 1
                    if items and not self._waking:
                        self._wake_one()
                else:
                    self._idle.remove(event)
                raise
            self._waking -= 1
        item = items.popleft()
        if items and not self._waking:
            self._wake_one()  # the rest for someone else, while this task runs its item
        return item

    def _wake_one(self) -> None:
        if self._idle:
            self._waking += 1
            self._idle.pop().set()
