"""The overflow policy, with no broker: a buffer filled at random (jobs of random sizes,
some still being written to the outbox), then one more job that does not fit.

After ``make_room`` the job fits, or the policy refuses it, or nothing evictable is left;
only ``drop-oldest`` evicts, oldest first, and no more than it must. A full buffer is
reported once per episode, and room only once the depth fell well below capacity.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio
from hypothesis import given
from hypothesis import strategies as st

from warren import BufferFull
from warren._config import JOB_OVERHEAD_BYTES, OVERFLOW_POLICIES
from warren._job import Job
from warren._publish.ledger import Ledger
from warren._publish.overflow import OverflowPolicy

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pytest

CAPACITY = 10
MAX_BYTES = 8192


def make_job(n: int, size: int) -> Job:
    return Job(b"x" * size, "", "q", f"job-{n}", float(n), (b"", b""))


@contextmanager
def books() -> Iterator[Ledger]:
    tx, rx = anyio.create_memory_object_stream[Job](math.inf)
    with tx, rx:
        yield Ledger(CAPACITY, (tx, rx), max_bytes=MAX_BYTES)


def cost(job: Job) -> int:
    return len(job.body) + JOB_OVERHEAD_BYTES


@given(
    policy=st.sampled_from(OVERFLOW_POLICIES),
    held=st.lists(st.tuples(st.integers(0, 1500), st.booleans()), max_size=CAPACITY),
    size=st.integers(0, 3000),
)
def test_make_room_evicts_only_what_it_must(
    policy: str, held: list[tuple[int, bool]], size: int
) -> None:
    with books() as ledger:
        accepted: list[Job] = []
        for n, (job_size, reserved) in enumerate(held):
            job = make_job(n, job_size)
            if not ledger.fits(job):
                break
            if reserved:
                ledger.reserve(job)  # being written to the outbox: never evicted
            else:
                ledger.accept(job)
                accepted.append(job)
        job = make_job(len(held), size)
        if ledger.fits(job):
            return
        overflow = OverflowPolicy(ledger, policy, "p")  # type: ignore[arg-type]
        victims = overflow.make_room(job, connected=False)
        assert overflow.full
        if policy != "drop-oldest":
            assert victims == []
        assert victims == accepted[: len(victims)], "oldest first"
        assert ledger.dropped["evicted"] == len(victims)
        if victims:  # no more than it must: before the last eviction, it did not fit
            depth, held_bytes = ledger.depth + 1, ledger.bytes + cost(victims[-1])
            assert depth >= CAPACITY or held_bytes + cost(job) > MAX_BYTES
        if not ledger.fits(job):
            assert policy != "drop-oldest" or not ledger.evictable()
            assert isinstance(overflow.refuse(), BufferFull)
            assert ledger.dropped["refused"] == 1
        ledger.check()


def test_full_is_reported_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    with books() as ledger, caplog.at_level(logging.INFO, logger="warren"):
        overflow = OverflowPolicy(ledger, "drop-newest", "p")
        for _ in range(3):
            overflow.make_room(make_job(0, 1), connected=True)
        overflow.eased(CAPACITY - 1)  # a tenth below capacity is not room yet
        still_full = overflow.full
        overflow.eased(CAPACITY - 2)
        assert (still_full, overflow.full) == (True, False)
        overflow.eased(0)  # once per episode
    messages = [r.getMessage() for r in caplog.records]
    assert sum("buffer.full" in m for m in messages) == 1
    assert sum("buffer.room" in m for m in messages) == 1


def test_the_block_policy_says_enqueue_waits() -> None:
    with books() as ledger:
        assert "await enqueue() waits for room" in str(
            OverflowPolicy(ledger, "block", "p").refuse()
        )
        assert "await enqueue()" not in str(OverflowPolicy(ledger, "drop-newest", "p").refuse())
