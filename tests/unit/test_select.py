"""select: Go semantics, fairness, cancellation safety, closed streams, timeout/default."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warren import Closed, Default, Received, Send, Sent, Timeout, select, select_nowait

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


def stream(
    size: float = math.inf,
) -> tuple[MemoryObjectSendStream[Any], MemoryObjectReceiveStream[Any]]:
    return anyio.create_memory_object_stream[Any](size)


async def test_returns_the_ready_case_with_its_value() -> None:
    a_tx, a_rx = stream()
    b_tx, b_rx = stream()
    with a_tx, a_rx, b_tx, b_rx:
        b_tx.send_nowait("hello")
        assert await select(a=a_rx, b=b_rx) == Received("b", "hello")


async def test_blocks_until_a_case_is_ready() -> None:
    a_tx, a_rx = stream()
    b_tx, b_rx = stream()
    with a_tx, a_rx, b_tx, b_rx, anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def later() -> None:
                await anyio.wait_all_tasks_blocked()
                await a_tx.send(42)

            tg.start_soon(later)
            assert await select(a=a_rx, b=b_rx) == Received("a", 42)


async def test_a_closed_stream_is_a_case_of_its_own() -> None:
    a_tx, a_rx = stream()
    b_tx, b_rx = stream()
    with a_rx, b_tx, b_rx, anyio.fail_after(5):
        a_tx.send_nowait(1)
        a_tx.close()
        # buffered items come first, like Go's `v, ok := <-ch`
        assert await select(a=a_rx, b=b_rx) == Received("a", 1)
        assert await select(a=a_rx, b=b_rx) == Closed("a")


async def test_closing_while_waiting_wakes_the_select() -> None:
    a_tx, a_rx = stream()
    with a_rx, anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def close_later() -> None:
                await anyio.wait_all_tasks_blocked()
                a_tx.close()

            tg.start_soon(close_later)
            assert await select(a=a_rx) == Closed("a")


async def test_timeout_and_default() -> None:
    a_tx, a_rx = stream()
    with a_tx, a_rx, anyio.fail_after(5):
        assert await select(a=a_rx, timeout=0.01) == Timeout()
        assert await select(a=a_rx, default=True) == Default()
        a_tx.send_nowait("x")
        assert await select(a=a_rx, default=True) == Received("a", "x")
        with pytest.raises(anyio.WouldBlock):
            select_nowait(a=a_rx)


async def test_send_case_fires_when_room_appears() -> None:
    out_tx, out_rx = stream(0)  # unbuffered: a send needs a receiver
    in_tx, in_rx = stream()
    with out_tx, out_rx, in_tx, in_rx, anyio.fail_after(5):
        assert await select(out=Send(out_tx, "job"), inp=in_rx, default=True) == Default()
        got: list[str] = []
        async with anyio.create_task_group() as tg:

            async def receiver() -> None:
                got.append(await out_rx.receive())

            tg.start_soon(receiver)
            assert await select(out=Send(out_tx, "job"), inp=in_rx) == Sent("out")
        assert got == ["job"]


async def test_send_to_a_closed_receiver_is_closed_case() -> None:
    out_tx, out_rx = stream(1)
    out_rx.close()
    with out_tx:
        assert await select(out=Send(out_tx, 1)) == Closed("out")


async def test_bad_calls_are_refused() -> None:
    """Checked when the select would wait (off the fast path)."""
    a_tx, a_rx = stream(0)
    b_tx, b_rx = stream(0)
    with a_tx, a_rx, b_tx, b_rx:
        with pytest.raises(ValueError, match="same stream twice"):
            await select(a=a_rx, b=a_rx)
        with pytest.raises(ValueError, match="at most one Send"):
            await select(a=Send(a_tx, 1), b=Send(b_tx, 2))
        with pytest.raises(ValueError, match="blocks forever"):
            await select()


async def test_waiting_select_never_takes_an_item_a_receiver_gets() -> None:
    """The watcher only wakes the select: an item goes to the plain receiver, untouched."""
    a_tx, a_rx = stream(0)
    with a_tx, a_rx, anyio.fail_after(5):
        results: list[object] = []
        async with anyio.create_task_group() as tg:

            async def selector() -> None:
                results.append(await select(a=a_rx, timeout=0.3))

            async def receiver() -> None:
                results.append(await a_rx.receive())

            tg.start_soon(selector)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()
            await a_tx.send("only-one")
        assert sorted(map(str, results)) == sorted(["only-one", str(Timeout())])


@settings(max_examples=15, deadline=None)
@given(ready=st.integers(min_value=2, max_value=5), seed=st.integers(0, 2**32 - 1))
async def test_fair_among_ready_cases(ready: int, seed: int) -> None:
    """Go's rule: a uniformly random ready case. Each of k ready cases wins ~1/k of rounds."""
    rounds = 3000
    rng = random.Random(seed)
    pairs = [stream() for _ in range(ready)]
    idle_tx, idle_rx = stream()
    for tx, _ in pairs:
        for _ in range(rounds):
            tx.send_nowait(None)
    cases: dict[str, Any] = {f"c{i}": rx for i, (_, rx) in enumerate(pairs)}
    cases["idle"] = idle_rx
    wins: Counter[str] = Counter()
    for _ in range(rounds):
        result = await select(rng=rng, **cases)
        assert isinstance(result, Received)
        wins[result.case] += 1
    expected = rounds / ready
    sigma = math.sqrt(rounds * (1 / ready) * (1 - 1 / ready))
    assert set(wins) == {f"c{i}" for i in range(ready)}
    for case, n in wins.items():
        assert abs(n - expected) < 5 * sigma, (case, n, expected)
    for tx, rx in pairs:
        tx.close()
        rx.close()
    idle_tx.close()
    idle_rx.close()


async def test_cancelled_selects_never_lose_or_duplicate_items() -> None:
    """Items flow on three streams (one unbuffered) while selects are cancelled at random
    moments, and a plain receiver competes on one stream. Every item arrives exactly once."""
    rng = random.Random(1234)
    per_stream = 1500
    specs = [("a", math.inf), ("b", 4), ("c", 0)]
    pairs = {name: stream(size) for name, size in specs}
    received: list[tuple[str, int]] = []

    async def producer(name: str, tx: MemoryObjectSendStream[Any]) -> None:
        async with tx:
            for i in range(per_stream):
                await tx.send((name, i))
                if i % 7 == 0:
                    await anyio.lowlevel.checkpoint()

    async def selecting_consumer() -> None:
        open_cases: dict[str, Any] = {name: rx for name, (_, rx) in pairs.items()}
        while open_cases:
            pick = rng.random()
            with anyio.CancelScope() as scope:
                if pick < 0.3:
                    scope.cancel()  # cancelled before it starts
                elif pick < 0.6:
                    scope.deadline = anyio.current_time() + rng.random() * 0.0005
                result = await select(**open_cases)
                match result:
                    case Received(_, item):
                        received.append(item)
                    case Closed(name):
                        del open_cases[name]

    async def competing_receiver() -> None:
        rx = pairs["b"][1].clone()
        async with rx:
            async for item in rx:
                received.append(item)
                await anyio.lowlevel.checkpoint()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for name, (tx, _) in pairs.items():
                tg.start_soon(producer, name, tx)
            tg.start_soon(selecting_consumer)
            tg.start_soon(competing_receiver)
    counts = Counter(received)
    assert len(counts) == per_stream * len(specs), "an item was lost"
    assert max(counts.values()) == 1, "an item was received twice"
    for _, rx in pairs.values():
        rx.close()


async def test_cancelled_parked_send_reports_sent_if_it_happened() -> None:
    """Atomic: if a parked send's item was taken, select says Sent even when cancelled."""
    out_tx, out_rx = stream(0)
    with out_tx, out_rx, anyio.fail_after(5):
        outcome: list[object] = []
        async with anyio.create_task_group() as tg:

            async def sender(scope_holder: list[anyio.CancelScope]) -> None:
                with anyio.CancelScope() as scope:
                    scope_holder.append(scope)
                    outcome.append(await select(out=Send(out_tx, "x")))

            holder: list[anyio.CancelScope] = []
            tg.start_soon(sender, holder)
            await anyio.wait_all_tasks_blocked()
            assert out_rx.receive_nowait() == "x"  # taken while the select is parked
            holder[0].cancel()  # cancellation lands after the item left
        assert outcome == [Sent("out")]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_native_asyncio_cancel_is_not_lost_when_the_send_completed() -> None:
    """``task.cancel()`` (not a cancel scope) landing as the parked send's item is taken:
    select may report Sent, but the task must still end cancelled."""
    import asyncio

    out_tx, out_rx = stream(0)
    reached: list[str] = []

    async def sender() -> None:
        reached.append(repr(await select(out=Send(out_tx, "x"))))
        await anyio.sleep(5)  # the cancel must land here at the latest
        reached.append("kept running after cancel()")

    with out_tx, out_rx, anyio.fail_after(5):
        task = asyncio.get_running_loop().create_task(sender())
        await anyio.wait_all_tasks_blocked()
        assert out_rx.receive_nowait() == "x"  # taken while the select is parked
        task.cancel()  # lands after the item left
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()
    assert reached == [repr(Sent("out"))]


async def test_only_the_backends_cancellation_may_be_reported_as_sent() -> None:
    """A KeyboardInterrupt (or any other exception) as the send completes is re-raised."""
    from warren._select.select import _sent_despite

    for exc in (KeyboardInterrupt(), SystemExit(1), RuntimeError("bug")):
        assert not _sent_despite(exc), exc
