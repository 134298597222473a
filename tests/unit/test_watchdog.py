"""The watchdog's verdicts, with no connection: times, byte counts and the socket's state are
passed in.

A verdict comes exactly when a limit is passed at the moment of asking: silence past
``dead_after`` with nothing waiting unread, a publish unconfirmed past ``confirm_timeout``
while the broker does not block us, or nothing but nacks for ``NACKED_FOR``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warren._amqp.watchdog import NACKED_FOR, WATCHDOG_EVERY, Watchdog, WatchdogAbort

pytestmark = pytest.mark.timeout(60)


def dog(heartbeat: float = 10, dead_after: float = 10.6, confirm_timeout: float = 30) -> Watchdog:
    return Watchdog(heartbeat=heartbeat, dead_after=dead_after, confirm_timeout=confirm_timeout)


def never() -> bool:
    return False


def kind(verdict: WatchdogAbort | None) -> str | None:
    return None if verdict is None else verdict.kind


@given(
    looks=st.lists(
        st.tuples(st.floats(0.01, 4), st.booleans(), st.booleans()), min_size=1, max_size=40
    )
)
def test_a_silent_link_is_dead_exactly_past_dead_after(
    looks: list[tuple[float, bool, bool]],
) -> None:
    """(time since the last look, a byte arrived, bytes wait unread) at each look."""
    watchdog = dog(dead_after=5)
    now, received, heard_at = 100.0, 0, 100.0
    watchdog.opened(now)
    for i, (step, got_bytes, waiting) in enumerate(looks):
        now += step
        if got_bytes or i == 0:  # the first look counts what the handshake received
            received += 1
            heard_at = now
        verdict = watchdog.look(
            now, received, None, blocked=False, input_waiting=(lambda: True) if waiting else never
        )
        if now - heard_at > 5 and not waiting:
            assert kind(verdict) == "dead_link"
            assert f"{now - heard_at:.1f}s" in str(verdict)
            return  # the stream is cut: no more looks
        assert verdict is None
        if now - heard_at > 5:
            heard_at = now  # late to read, not silent: counted from now


def test_the_first_look_counts_the_bytes_of_the_handshake_as_heard() -> None:
    watchdog = dog(dead_after=1)
    watchdog.opened(0.0)
    assert watchdog.look(5.0, 1234, None, blocked=False, input_waiting=never) is None
    assert kind(watchdog.look(6.5, 1234, None, blocked=False, input_waiting=never)) == "dead_link"


def test_input_waiting_is_asked_only_when_the_link_is_silent() -> None:
    asked: list[float] = []
    watchdog = dog(dead_after=1)
    watchdog.opened(0.0)

    def waiting() -> bool:
        asked.append(1)
        return True

    assert watchdog.look(0.5, 0, None, blocked=False, input_waiting=waiting) is None
    assert asked == []
    assert watchdog.look(2.0, 0, None, blocked=False, input_waiting=waiting) is None
    assert asked == [1]


def test_an_unconfirmed_publish_times_out_unless_the_broker_blocks_us() -> None:
    watchdog = dog(confirm_timeout=30)
    watchdog.opened(0.0)
    args = {"input_waiting": never}
    assert watchdog.look(30.0, 1, 0.0, blocked=False, **args) is None
    assert watchdog.look(30.5, 2, 0.0, blocked=True, **args) is None
    verdict = watchdog.look(31.0, 3, 0.0, blocked=False, **args)
    assert kind(verdict) == "confirm_timeout"
    assert str(verdict) == "publish unconfirmed for 31.0s"


def test_only_nacks_for_nacked_for_seconds_give_the_channel_up() -> None:
    watchdog = dog()
    assert watchdog.nacked(100.0) is None
    assert watchdog.nacked(100.0 + NACKED_FOR - 0.1) is None
    watchdog.acked()  # an ack in between starts the count over
    assert watchdog.nacked(100.0 + NACKED_FOR) is None
    verdict = watchdog.nacked(100.0 + 2 * NACKED_FOR)
    assert kind(verdict) == "nacked"
    assert str(verdict) == f"only nacks from this channel for {NACKED_FOR:.0f}s"


def test_the_watchdog_looks_often_enough_for_short_heartbeats() -> None:
    assert dog(heartbeat=10).every == WATCHDOG_EVERY
    assert dog(heartbeat=0.1).every == pytest.approx(0.025)
