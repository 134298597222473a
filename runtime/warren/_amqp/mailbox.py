"""The one way items cross between the event loop and a pika thread.

Producers on any thread ``put`` items; one consumer ``take``-s them all at once. The consumer
is woken (with the wake function it supplied: pika's ``add_callback_threadsafe``, or the
event loop's own non-blocking thread-safe call) only when it is idle, so a burst costs one
wake-up, and neither side ever waits for the other. After ``close`` puts are refused (the
thread is gone: its items are the caller's to re-send).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Generic, TypeVar, final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

_T = TypeVar("_T")


@final
class Mailbox(Generic[_T]):
    __slots__ = ("_armed", "_items", "_lock", "_open", "_wake")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[_T] = []
        self._armed = True  # the consumer is idle: the next put wakes it
        self._open = False
        self._wake: Callable[[], None] | None = None

    def open(self, wake: Callable[[], None]) -> None:
        """Start taking puts; ``wake`` is called, under the lock, once per idle period. It must
        not block (it only schedules the consumer)."""
        with self._lock:
            self._wake = wake
            self._open = True

    def close(self) -> None:
        """Refuse puts from now on (what was put stays until taken)."""
        with self._lock:
            self._open = False

    def put(self, item: _T) -> bool:
        """Add one item; False (nothing added) once closed."""
        with self._lock:
            if not self._open:
                return False
            self._items.append(item)
            self._wake_if_idle()
            return True

    def put_all(self, items: Iterable[_T]) -> bool:
        """Add items in order; False (nothing added) once closed."""
        with self._lock:
            if not self._open:
                return False
            self._items.extend(items)
            self._wake_if_idle()
            return True

    def take(self, *, rearm: bool = True) -> list[_T]:
        """Everything put so far, oldest first.

        Args:
            rearm: the consumer will not look again unless woken, so the next put wakes it.
                With False it promises to come back by itself (e.g. on the broker's next
                ack); it is re-armed anyway when nothing was there.
        """
        with self._lock:
            items, self._items = self._items, []
            self._armed = rearm or not items
            return items

    def _wake_if_idle(self) -> None:
        if self._armed and self._wake is not None:
            self._armed = False
            self._wake()
