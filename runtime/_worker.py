"""Helpers shared by workers (task groups that select over jobs and connection events)."""

from __future__ import annotations

from typing import NoReturn

import anyio


def raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the one real error in a task group's exception group, unwrapped.

    A worker fails for one reason (``ConnectionGaveUp``, ``AccessRefused``, a bug); callers
    should be able to ``except`` it without ``except*``. Anything else re-raises the group.
    """
    cancelled = anyio.get_cancelled_exc_class()
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, cancelled):
            leaves.append(exc)

    walk(group)
    if len(leaves) == 1:
        raise leaves[0]
    raise group
