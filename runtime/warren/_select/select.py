"""Go's ``select`` for anyio memory object streams.

``select`` waits until one of several cases can proceed, performs exactly that one, and says
which::

    match await select(jobs=jobs_rx, events=events_rx, timeout=5):
        case Received("jobs", job): ...
        case Received("events", event): ...
        case Closed("jobs"): ...          # Go's ``v, ok := <-ch`` with ok == False
        case Timeout(): ...

Cancellation semantics (as trio's memory channels document them): a ``select`` is *atomic
with respect to cancellation*. Either it returns a result and that case happened, or it raises
and no stream was touched. It never holds an item mid-flight: while waiting it only *watches*
its receive streams, and an item is taken synchronously in the non-blocking fast path. (Racing
one ``receive()`` task per stream and cancelling the losers is not safe: two can complete.)

How the watching works: anyio's ``send_nowait`` hands an item to the first waiting receiver
whose task has no pending cancellation, and skips the rest. ``select`` parks a *watcher* in
each stream's queue of waiting receivers; when a sender reaches it, the watcher wakes the
select and answers "pending cancellation", so the sender skips it and the item goes on to the
buffer or to another receiver. The woken select then retries its fast path. This depends on
anyio 4's memory stream internals (pinned in pyproject.toml), all of them in
``warren._select.streams``, and is covered by the tests.

Fairness: when several cases are ready, one is chosen uniformly at random (Go's rule), so a
flood of jobs cannot starve an error stream.

Send cases: ``Send(stream, item)``. A blocking select has at most one send case: a parked send
is a real sender in anyio's queue, and two of them could both be taken before the select wakes.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, final

import anyio
from anyio import BrokenResourceError, EndOfStream, WouldBlock
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from warren._select.streams import park_receivers, park_sender, unpark_receivers, unpark_sender

T = TypeVar("T")

__all__ = ["Closed", "Default", "Received", "Send", "Sent", "Timeout", "select", "select_nowait"]


@final
@dataclass(frozen=True, slots=True)
class Send(Generic[T]):
    """A send case: put ``item`` on ``stream``."""

    stream: MemoryObjectSendStream[T]
    item: T


@final
@dataclass(frozen=True, slots=True)
class Received:
    """The receive case ``case`` fired with ``value``."""

    case: str
    value: Any


@final
@dataclass(frozen=True, slots=True)
class Closed:
    """Case ``case``'s stream is closed from the other end (and drained, for receives)."""

    case: str


@final
@dataclass(frozen=True, slots=True)
class Sent:
    """The send case ``case`` delivered its item."""

    case: str


@final
@dataclass(frozen=True, slots=True)
class Timeout:
    """No case was ready before the timeout."""


@final
@dataclass(frozen=True, slots=True)
class Default:
    """No case was ready, and the select was non-blocking (``default=True``)."""


SelectResult = Received | Closed | Sent | Timeout | Default
Case = MemoryObjectReceiveStream[Any] | Send[Any]

_TIMEOUT: Final = Timeout()
_DEFAULT: Final = Default()


def _try_case(name: str, case: Case) -> Received | Closed | Sent:
    """Perform one case without waiting; raise ``WouldBlock`` if it cannot proceed."""
    if type(case) is Send:
        try:
            case.stream.send_nowait(case.item)
        except BrokenResourceError:
            return Closed(name)
        return Sent(name)
    try:
        return Received(name, case.receive_nowait())
    except EndOfStream:
        return Closed(name)


def select_nowait(*, rng: random.Random | None = None, **cases: Case) -> Received | Closed | Sent:
    """Perform one ready case, chosen at random among the ready ones, without waiting.

    Raises:
        anyio.WouldBlock: no case is ready.
        anyio.ClosedResourceError: one of *our* ends of a stream was already closed.
    """
    items = list(cases.items())
    n = len(items)
    if n == 2:
        # the worker loop's shape (jobs, events): a coin flip is a shuffle of two, and cheap
        first, second = items
        if (rng.random() if rng else random.random()) < 0.5:
            first, second = second, first
        try:
            return _try_case(*first)
        except WouldBlock:
            return _try_case(*second)
    if n > 2:
        if rng is None:
            random.shuffle(items)
        else:
            rng.shuffle(items)
    for name, case in items:
        try:
            return _try_case(name, case)
        except WouldBlock:
            continue
    raise WouldBlock


async def select(
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - the timeout case is part of Go's select
    default: bool = False,
    rng: random.Random | None = None,
    **cases: Case,
) -> SelectResult:
    """Wait until one case can proceed, perform it, and return which.

    Args:
        timeout: seconds to wait before returning ``Timeout()``; None waits forever.
        default: return ``Default()`` at once if no case is ready (Go's ``default:``).
        rng: source of the random choice among ready cases (inject for reproducible tests).
        **cases: case name -> receive stream, or ``Send(send_stream, item)``.

    Returns:
        ``Received(name, value)``, ``Closed(name)``, ``Sent(name)``, ``Timeout()`` or
        ``Default()``.

    Raises:
        ValueError: no cases, a stream given twice, or more than one send case (checked
            only when the select has to wait; a ready case returns before the check).
        anyio.ClosedResourceError: one of *our* ends of a stream was already closed.

    Cancellation leaves every stream untouched; see the module docstring.
    """
    await checkpoint()
    if cases:
        try:
            return select_nowait(rng=rng, **cases)
        except WouldBlock:
            pass
    if default:
        return _DEFAULT
    # Validated here, off the fast path: these only matter once the select parks.
    sends = [c for c in cases.values() if isinstance(c, Send)]
    if not cases and timeout is None:
        raise ValueError("select() with no cases, no timeout and no default blocks forever")
    if len(sends) > 1:
        raise ValueError("select() takes at most one Send case")
    if len({id(c.stream if isinstance(c, Send) else c) for c in cases.values()}) != len(cases):
        raise ValueError("select() got the same stream twice")
    with anyio.move_on_after(math.inf if timeout is None else timeout):
        while True:
            result = await _wait_once(cases, sends[0] if sends else None)
            if result is not None:
                return result
            try:
                return select_nowait(rng=rng, **cases)
            except WouldBlock:
                continue
    return _TIMEOUT


async def _wait_once(cases: dict[str, Case], send: Send[Any] | None) -> Sent | None:
    """Park until some case may be ready. Returns ``Sent`` if the parked send was taken."""
    wake = anyio.Event()
    receivers = [c for c in cases.values() if not isinstance(c, Send)]
    park_receivers(receivers, wake)
    send_name = ""
    if send is not None:
        send_name = next(n for n, c in cases.items() if c is send)
        park_sender(send.stream, wake, send.item)
    try:
        await wake.wait()
    except BaseException as exc:
        if _unpark(wake, receivers, send) and _sent_despite(exc):
            return Sent(send_name)
        raise
    return Sent(send_name) if _unpark(wake, receivers, send) else None


def _sent_despite(exc: BaseException) -> bool:
    """The parked send's item left just as ``exc`` landed: may the select report ``Sent``?

    Only for the backend's cancellation, and only if it will be delivered again: a cancelled
    anyio/trio scope re-raises at the caller's next checkpoint (trio's rule for a send that
    completed). A native ``asyncio`` ``task.cancel()`` is edge-triggered, so it is requested
    again here. Anything else (``KeyboardInterrupt``, ``SystemExit``, a bug) is re-raised.
    """
    if not isinstance(exc, anyio.get_cancelled_exc_class()):
        return False
    if isinstance(exc, asyncio.CancelledError) and anyio.current_effective_deadline() > -math.inf:
        task = asyncio.current_task()
        if task is not None:
            task.cancel(*exc.args)
    return True


def _unpark(
    wake: anyio.Event, receivers: list[MemoryObjectReceiveStream[Any]], send: Send[Any] | None
) -> bool:
    """Remove the watchers; return True if the parked send's item was taken."""
    unpark_receivers(receivers, wake)
    return send is not None and unpark_sender(send.stream, wake)
