"""Where a failed delivery goes, with no broker: any handler failure at any attempt, and
whole lives of a message (fail, re-publish, read the header back, fail again ...).

A message runs at most ``max_attempts`` counted attempts, and is dead-lettered for
``attempts_exhausted`` exactly when it has run them; a retry that is no attempt keeps the
count; a retry waits in the shortest delay queue, from its attempt's own on, that is at least
what the handler asked for, else in the longest; the attempts header is trusted only as far
as it is a count in range.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warren import ConsumerConfig, PoisonMessage, RetryLater
from warren._amqp import Delivered
from warren._consume.message import message_of
from warren._consume.outcome import (
    ATTEMPTS_HEADER,
    DeadLetter,
    Retry,
    attempts_so_far,
    dead_letter_headers,
    retry,
    retry_headers,
    route,
)

pytestmark = pytest.mark.timeout(60)


@st.composite
def _delays(draw: st.DrawFn) -> tuple[int, tuple[float, ...]]:
    """A max_attempts and its retry delays, as a ConsumerConfig makes them."""
    base = draw(st.floats(0.001, 100.0))
    config = ConsumerConfig(
        queue="q",
        max_attempts=draw(st.integers(1, 100)),
        retry_base=base,
        retry_cap=draw(st.floats(base, 10_000.0)),
    )
    return config.max_attempts, config.retry_delays()


_failures = st.one_of(
    st.builds(ValueError, st.text(max_size=20)),
    st.builds(TimeoutError, st.just("handler did not finish")),
    st.builds(PoisonMessage, st.text(max_size=20)),
    st.builds(RetryLater, st.floats(0.0, 20_000.0)),
    st.builds(lambda d: RetryLater(d, consumes_attempt=False), st.floats(0.0, 20_000.0)),
)


def _check_level(where: Retry, delays: tuple[float, ...], start: int, not_before: float) -> None:
    assert start <= where.level < len(delays)
    # long enough, or the longest there is; and no shorter one from ``start`` on would do
    assert delays[where.level] >= not_before or where.level == len(delays) - 1
    assert all(delays[i] < not_before for i in range(start, where.level))


@settings(max_examples=500, deadline=None)
@given(_delays(), st.data(), _failures)
def test_any_failure_at_any_attempt(
    plan: tuple[int, tuple[float, ...]], data: st.DataObject, exc: Exception
) -> None:
    max_attempts, delays = plan
    attempt = data.draw(st.integers(1, max_attempts + 1))  # a header may say max_attempts
    where = route(exc, attempt, max_attempts, delays)
    asked = exc.delay if isinstance(exc, RetryLater) else 0.0
    if isinstance(exc, PoisonMessage):
        assert where == DeadLetter("poison")
    elif isinstance(exc, RetryLater) and not exc.consumes_attempt:
        assert isinstance(where, Retry)
        assert where.attempts == attempt - 1  # no attempt: the count it came with
        _check_level(where, delays, 0, asked)
    elif attempt >= max_attempts:
        assert where == DeadLetter("attempts_exhausted")
    else:
        assert isinstance(where, Retry)
        assert where.attempts == attempt
        _check_level(where, delays, attempt - 1, asked)


@settings(max_examples=300, deadline=None)
@given(_delays(), st.lists(_failures | st.just("claimed"), min_size=1, max_size=250))
def test_a_message_runs_at_most_max_attempts_counted_attempts(
    plan: tuple[int, tuple[float, ...]], failures: list[Exception | str]
) -> None:
    """Each failure re-publishes with the header it says; the next delivery reads it back."""
    max_attempts, delays = plan
    headers: dict[str, object] = {"trace": "t-1"}
    counted = 0
    for exc in failures:
        delivery = Delivered(1, 1, "m-1", headers, b"{}", False, "application/json")
        message = message_of(delivery, max_attempts)
        assert message.attempt == 1 + counted <= max_attempts
        counts = exc != "claimed" and not (isinstance(exc, RetryLater) and not exc.consumes_attempt)
        if exc == "claimed":  # another worker holds its claim: not run here
            where: Retry | DeadLetter = retry(message.attempt, delays, 0.0, counted=False)
            exc = RuntimeError("another worker holds its claim")
        else:
            assert isinstance(exc, Exception)
            where = route(exc, message.attempt, max_attempts, delays)
        if counts and message.attempt == max_attempts and not isinstance(exc, PoisonMessage):
            assert where == DeadLetter("attempts_exhausted")  # its last one: not run again
        if isinstance(where, DeadLetter):
            if where.reason == "attempts_exhausted":
                assert counts and counted + 1 == max_attempts  # this was the last one
            break
        assert where.attempts == (message.attempt if counts else message.attempt - 1)
        counted += counts
        headers = retry_headers(message.headers, where.attempts, exc)
        assert headers["trace"] == "t-1"  # the delivery's own headers go along
    assert counted < max_attempts


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=5),
        st.binary(max_size=5),
        st.lists(st.integers(), max_size=2),
    ),
    st.integers(1, 100),
)
def test_the_attempts_header_is_trusted_only_as_a_count_in_range(
    value: object, max_attempts: int
) -> None:
    n = attempts_so_far(value, max_attempts)
    assert 0 <= n <= max_attempts
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= max_attempts:
        assert n == value


def test_what_the_headers_say() -> None:
    exc = ValueError("x" * 5000)
    stale = {"k": "v", ATTEMPTS_HEADER: 1, "x-warren-error": "old", "x-warren-reason": "old"}
    assert retry_headers(stale, 2, exc) == {
        "k": "v",
        ATTEMPTS_HEADER: 2,
        "x-warren-error": "x" * 1000,
        "x-warren-error-type": "ValueError",
        "x-warren-reason": "old",
    }
    assert dead_letter_headers(stale, 5, "attempts_exhausted", exc) == {
        "k": "v",
        ATTEMPTS_HEADER: 5,
        "x-warren-error": "x" * 1000,
        "x-warren-error-type": "ValueError",
        "x-warren-reason": "attempts_exhausted",
    }


def test_retry_later_picks_the_first_delay_queue_long_enough() -> None:
    delays = (1.0, 2.0, 4.0, 8.0)
    assert route(RetryLater(3.0), 1, 5, delays) == Retry(2, 1)
    assert route(RetryLater(3.0), 4, 5, delays) == Retry(3, 4)  # its own is longer already
    assert route(RetryLater(99.0), 1, 5, delays) == Retry(3, 1)  # at most the longest
    assert route(RetryLater(3.0, consumes_attempt=False), 5, 5, delays) == Retry(2, 4)
    assert route(ValueError(), 5, 5, delays) == DeadLetter("attempts_exhausted")
