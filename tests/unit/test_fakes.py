"""``warren.testing.FakeLink``: the fake broker connection answers as a broker would, and a
test's mistake with it is an error, not a silently different broker."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio
import pytest

from warren import ConnectionEvent
from warren.testing import FakeLink

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(10)


@contextmanager
def _link() -> Iterator[FakeLink]:
    tx, rx = anyio.create_memory_object_stream[ConnectionEvent](10)
    with tx, rx:
        yield FakeLink(tx)


def test_acks_and_rejects_with_no_session_up_are_refused_like_publishes() -> None:
    with _link() as link:
        assert not link.ack(0, [1]) and not link.reject(0, [1])
        assert (link.acked, link.rejected) == ([], [])
        link.connect()
        assert link.ack(1, [1]) and link.reject(1, [2])
        assert not link.ack(2, [3])  # a session that is not the live one
        assert (link.acked, link.rejected) == ([1], [2])


@pytest.mark.parametrize("n", [-1, 1.5, True])
def test_a_count_that_is_no_count_is_an_error(n: object) -> None:
    with _link() as link:
        link.connect()
        for answer in (link.confirm, link.nack):
            with pytest.raises(ValueError, match="n must be an integer >= 0"):
                answer(n)  # type: ignore[arg-type]


def test_connecting_twice_without_losing_the_session_is_an_error() -> None:
    with _link() as link:
        link.connect()
        with pytest.raises(RuntimeError, match="already up"):
            link.connect()
