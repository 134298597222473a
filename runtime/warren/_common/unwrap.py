"""Unwrapping task-group exception groups into the one error a caller should see."""

from __future__ import annotations

import asyncio
import sys
from typing import NoReturn

from warren._exceptions import PublisherClosed


def _cancellation_types() -> tuple[type[BaseException], ...]:
    # Works outside an event loop too (the runner calls this after anyio.run returned).
    trio = sys.modules.get("trio")
    return (asyncio.CancelledError, trio.Cancelled) if trio else (asyncio.CancelledError,)


def raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the one real error in a task group's exception group, unwrapped.

    A worker fails for one reason (``ConnectionGaveUp``, ``AccessRefused``, a bug); callers
    should be able to ``except`` it without ``except*``. The same error raised by several
    tasks counts once. Anything else re-raises the group.
    """
    cancelled = _cancellation_types()
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, cancelled):
            leaves.append(exc)

    walk(group)
    # PublisherClosed from producers racing a failing worker is a consequence, not a cause.
    causes = [exc for exc in leaves if not isinstance(exc, PublisherClosed)]
    if causes:
        leaves = causes
    # one failure seen twice (a consumer and its re-publishing publisher share the broker:
    # both are refused the same topology, or both give up) is still one failure
    distinct = {(type(exc), str(exc)): exc for exc in reversed(leaves)}
    if len(distinct) == 1:
        raise leaves[0]
    raise group
