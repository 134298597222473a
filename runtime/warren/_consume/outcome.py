"""What becomes of a delivery whose handler failed: plain code, no I/O.

From the handler's exception and the delivery's attempt number: dead-letter it (and why), or
retry it through which delay queue, with which count written back in ``x-warren-attempts``.
(A handler that returned is acked on the consumer's fast path and never comes here.) The
count is read back trusting nothing, since anyone can publish that header.

Invariant: a message runs at most ``max_attempts`` counted attempts. A counted failure at
attempt ``max_attempts`` is dead-lettered; a retry that is no attempt (``RetryLater`` with
``consumes_attempt=False``, a claim another worker holds) writes back the count it came with.
A retry waits in the shortest delay queue, from the attempt's own on (the first for one that
is not counted), that is at least what the handler asked for, else in the longest.
``tests/unit/test_outcome.py`` checks it with hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, final

from warren._exceptions import PoisonMessage, RetryLater

if TYPE_CHECKING:
    from collections.abc import Mapping

Outcome = Literal["ack", "retry", "dead_letter", "rejected", "duplicate", "claimed_elsewhere"]
DeadLetterReason = Literal["poison", "attempts_exhausted", "unsettleable"]
ATTEMPTS_HEADER: Final = "x-warren-attempts"
ERROR_CHARS: Final = 1000  # of the error's text, in the re-published headers


@final
@dataclass(frozen=True, slots=True)
class Retry:
    """Re-publish to the delay queue of ``delays[level]``, with ``attempts`` in the header."""

    level: int
    attempts: int


@final
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Re-publish to the dead-letter queue, saying ``reason``."""

    reason: DeadLetterReason


def route(
    exc: BaseException, attempt: int, max_attempts: int, delays: tuple[float, ...]
) -> Retry | DeadLetter:
    """Where a delivery at ``attempt`` goes after its handler raised ``exc``."""
    if isinstance(exc, PoisonMessage):
        return DeadLetter("poison")
    if isinstance(exc, RetryLater) and not exc.consumes_attempt:
        return retry(attempt, delays, exc.delay, counted=False)
    if attempt >= max_attempts:
        return DeadLetter("attempts_exhausted")
    return retry(attempt, delays, exc.delay if isinstance(exc, RetryLater) else 0.0)


def retry(
    attempt: int, delays: tuple[float, ...], not_before: float, *, counted: bool = True
) -> Retry:
    """The retry of a delivery at ``attempt``, not sooner than ``not_before`` seconds if a
    delay queue is that long. ``counted=False``: this was no attempt, the count stays."""
    level = attempt - 1 if counted else 0
    while level < len(delays) - 1 and delays[level] < not_before:
        level += 1  # a longer delay queue: honour the handler's RetryLater
    return Retry(level, attempt if counted else attempt - 1)


def attempts_so_far(value: object, max_attempts: int) -> int:
    """The attempts header, as far as it can be trusted: anyone can publish one, so a
    negative, huge or non-integer value must not break the retry arithmetic (or the
    re-publish that writes it back): it counts as 0, and at most ``max_attempts``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return 0
    return min(value, max_attempts)


def retry_headers(
    headers: Mapping[str, object], attempts: int, exc: BaseException
) -> dict[str, object]:
    """A retry's headers: the delivery's, the count to write back, and the error."""
    return {**headers, ATTEMPTS_HEADER: attempts, **_why(exc)}


def dead_letter_headers(
    headers: Mapping[str, object], attempt: int, reason: str, exc: BaseException
) -> dict[str, object]:
    """A dead letter's headers: the delivery's, its attempt, why, and the error."""
    return {**headers, ATTEMPTS_HEADER: attempt, "x-warren-reason": reason, **_why(exc)}


def _why(exc: BaseException) -> dict[str, object]:
    return {"x-warren-error-type": type(exc).__name__, "x-warren-error": str(exc)[:ERROR_CHARS]}
