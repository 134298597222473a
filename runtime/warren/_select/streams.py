"""anyio memory streams' internals, in one place.

Warren reads and writes a few private parts of anyio 4's memory object streams (pinned in
pyproject.toml): ``select`` parks watchers and senders in a stream's queues of waiting
receivers and senders, and the publisher's ledger looks at the jobs still buffered in its
stream (the oldest job's age, and its invariant check). Every such access is here, behind
small named functions, and nowhere else; ``tests/repo/test_internals.py`` checks both that
anyio still has these parts and that no other module touches them.

The functions are plain and allocate nothing beyond what the caller would: ``select`` is hot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections import deque

    import anyio
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

T = TypeVar("T")

__all__ = ["buffered", "park_receivers", "park_sender", "unpark_receivers", "unpark_sender"]


class _Watcher:
    """Parks in a stream's waiting-receiver queue; wakes the select, never takes an item.

    anyio asks ``receiver.task_info.has_pending_cancellation()`` before handing an item over;
    answering True makes the sender skip this entry. The watcher is its own ``task_info``.
    """

    __slots__ = ("task_info", "wake")

    def __init__(self, wake: anyio.Event) -> None:
        self.wake = wake
        self.task_info = self

    def has_pending_cancellation(self) -> bool:
        self.wake.set()
        return True


def park_receivers(streams: list[MemoryObjectReceiveStream[Any]], wake: anyio.Event) -> None:
    """Park one watcher, keyed by ``wake``, in each stream's queue of waiting receivers.

    A sender reaching it sets ``wake`` and passes its item on (to the buffer or another
    receiver); the watcher never takes one.
    """
    watcher = _Watcher(wake)
    for stream in streams:
        stream._state.waiting_receivers[wake] = watcher  # type: ignore[assignment]


def unpark_receivers(streams: list[MemoryObjectReceiveStream[Any]], wake: anyio.Event) -> None:
    """Remove the watchers ``park_receivers`` parked under ``wake`` (if still there)."""
    for stream in streams:
        stream._state.waiting_receivers.pop(wake, None)


def park_sender(stream: MemoryObjectSendStream[T], wake: anyio.Event, item: T) -> None:
    """Park ``item`` as a waiting sender keyed by ``wake``; a receiver taking it sets ``wake``."""
    stream._state.waiting_senders[wake] = item


def unpark_sender(stream: MemoryObjectSendStream[Any], wake: anyio.Event) -> bool:
    """Remove the sender ``park_sender`` parked; return True if its item was taken meanwhile."""
    waiting = stream._state.waiting_senders
    if wake in waiting:
        del waiting[wake]
        return False
    return True


def buffered(stream: MemoryObjectReceiveStream[T]) -> deque[T]:
    """The items buffered in ``stream``, oldest first: a live view, not a copy; do not mutate.

    Safe to read from another thread racing the stream's owner only as far as ``deque`` is.
    """
    return stream._state.buffer
