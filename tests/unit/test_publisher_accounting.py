"""A real Publisher driven through random broker behaviour by a fake connection (no broker).

Whatever happens (connects, losses, confirms, nacks, returns, evictions, refusals, a
shutdown that cannot flush, giving up), ``submitted == confirmed + returned + dropped +
depth`` holds after every step, the buffer never exceeds its capacity, every job awaited
with ``publish()`` gets exactly the outcome its job had, and at the end nothing is left.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from warren import (
    BufferFull,
    ConnectionGaveUp,
    JobDropped,
    JobReturned,
    Metrics,
    Publisher,
    PublisherConfig,
)
from warren.testing import FakeLink, FakeLinks

if TYPE_CHECKING:
    from warren import Overflow, PublisherStatistics

pytestmark = pytest.mark.timeout(120)

CAPACITY = 6
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(1, 4)),
        st.tuples(st.just("publish"), st.just(1)),
        st.tuples(st.just("connect"), st.just(0)),
        st.tuples(st.just("lose"), st.just(0)),
        st.tuples(st.just("confirm"), st.integers(1, 5)),
        st.tuples(st.just("nack"), st.integers(1, 3)),
        st.tuples(st.just("return"), st.just(1)),
    ),
    max_size=40,
)


def balanced(s: PublisherStatistics) -> None:
    settled = s.confirmed + s.returned
    settled += s.dropped["evicted"] + s.dropped["shutdown"] + s.dropped["gave_up"]
    assert s.submitted == settled + s.buffer_depth, s
    assert 0 <= s.buffer_depth <= CAPACITY


@settings(max_examples=25, deadline=None)
@given(
    actions=ACTIONS,
    overflow=st.sampled_from(["drop-oldest", "drop-newest"]),
    ending=st.sampled_from(["flush", "unflushed", "give_up"]),
)
async def test_books_balance_whatever_the_broker_does(
    actions: list[tuple[str, int]], overflow: Overflow, ending: str
) -> None:
    links = FakeLinks()
    config = PublisherConfig(buffer_size=CAPACITY, overflow=overflow, flush_timeout=0.05)
    pub = Publisher(config, metrics=Metrics(CollectorRegistry()), name="p", connection=links)
    outcomes: list[str] = []  # what each publish() call reported
    lost_when_giving_up = -1
    gave_up: ConnectionGaveUp | None = None

    async def await_publish() -> None:
        try:
            await pub.publish({"n": 1}, routing_key="q")
            outcomes.append("confirmed")
        except JobReturned:
            outcomes.append("returned")
        except JobDropped as exc:
            outcomes.append(exc.reason)
        except BufferFull:
            outcomes.append("refused")

    with anyio.fail_after(30):  # every publish() gets an outcome: the task group ends
        async with anyio.create_task_group() as waiters:
            try:
                async with pub:
                    link: FakeLink = links.made[0]
                    for action, n in actions:
                        if action == "submit":
                            for _ in range(n):
                                with contextlib.suppress(BufferFull):
                                    pub.submit({"n": 1}, routing_key="q")
                        elif action == "publish":
                            waiters.start_soon(await_publish)
                        elif action == "connect":
                            if not link.session:
                                link.connect()
                        elif action == "lose":
                            link.lose()
                        elif action == "confirm":
                            link.confirm(n)
                        elif action == "nack":
                            link.nack(n)
                        else:
                            link.return_one()
                        await anyio.wait_all_tasks_blocked()
                        balanced(pub.statistics())
                    if ending == "flush":
                        if not link.session:
                            link.connect()
                        while pub.statistics().buffer_depth:
                            await anyio.wait_all_tasks_blocked()
                            link.confirm(1_000)
                            await anyio.wait_all_tasks_blocked()
                    elif ending == "give_up":
                        link.lose()
                        await anyio.wait_all_tasks_blocked()
                        lost_when_giving_up = pub.statistics().buffer_depth
                        link.give_up()
                        await anyio.sleep_forever()  # the publisher fails: this is cancelled
            except ConnectionGaveUp as exc:
                gave_up = exc
    final = pub.statistics()
    balanced(final)
    assert final.buffer_depth == 0
    assert final.in_flight == 0
    if ending == "flush":
        assert final.dropped["shutdown"] == final.dropped["gave_up"] == 0
    if ending == "give_up":
        assert gave_up is not None
        assert gave_up.jobs_lost == final.dropped["gave_up"] == lost_when_giving_up
    else:
        assert gave_up is None
        assert final.dropped["gave_up"] == 0
    assert outcomes.count("confirmed") <= final.confirmed
    assert outcomes.count("returned") <= final.returned
    for reason in ("evicted", "shutdown", "gave_up"):
        assert outcomes.count(reason) <= final.dropped[reason]
