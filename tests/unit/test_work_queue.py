"""WorkQueue: every item reaches exactly one worker, blocking handlers still fan out across
the pool, and cancelled workers never strand an item."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from tests.support.helpers import wait_until
from warren._consume.work_queue import WorkQueue

pytestmark = pytest.mark.timeout(30)


async def test_handlers_that_wait_fan_out_across_the_pool() -> None:
    queue = WorkQueue[int]()
    running: set[int] = set()
    release = anyio.Event()

    async def worker() -> None:
        while True:
            item = await queue.get()
            running.add(item)
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(worker)
        await anyio.wait_all_tasks_blocked()
        for i in range(10):
            queue.put(i)
        await wait_until(lambda: len(running) == 10, within=5, poll=0.001)
        assert running == set(range(10))  # ten items, ten concurrent handlers
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("seed", range(5))
async def test_every_item_is_taken_once_while_workers_are_cancelled(seed: int) -> None:
    rng = random.Random(seed)
    queue = WorkQueue[int]()
    taken: list[int] = []

    async def worker(scope_box: list[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            scope_box.append(scope)
            while True:
                item = await queue.get()
                taken.append(item)
                if rng.random() < 0.5:
                    await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        scopes: list[anyio.CancelScope] = []
        for _ in range(8):
            tg.start_soon(worker, scopes)
        await anyio.wait_all_tasks_blocked()
        n = 2000
        for i in range(n):
            queue.put(i)
            if rng.random() < 0.3:
                await anyio.lowlevel.checkpoint()
            if rng.random() < 0.01 and len(scopes) > 1:
                scopes.pop(rng.randrange(len(scopes))).cancel()  # idle, woken or running
        await wait_until(lambda: len(taken) == n, within=5, poll=0.001)
        tg.cancel_scope.cancel()
    assert sorted(taken) == list(range(n))


async def test_a_worker_cancelled_after_its_wake_up_passes_the_item_on() -> None:
    queue = WorkQueue[str]()
    got: list[tuple[str, str]] = []
    scopes: dict[str, anyio.CancelScope] = {}

    async def worker(name: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[name] = scope
            got.append((name, await queue.get()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker, "a")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(worker, "b")
        await anyio.wait_all_tasks_blocked()
        scopes["b"].cancel()  # b is about to leave get() with a cancellation...
        queue.put("job")  # ...but this wakes b first (the last to park): it must pass it on
        await wait_until(lambda: got, within=5, poll=0.001)
        tg.cancel_scope.cancel()
    assert got == [("a", "job")]
