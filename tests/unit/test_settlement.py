"""Settling jobs, with no broker: random verdicts on jobs handed to a connection, each
awaited by a waiter.

Every job that leaves the books has its waiter resolved exactly once, with the error that
says how it ended; the room event is set whenever jobs left, the drained event exactly
when the buffer is empty; the nack streak and returns in a row end at a confirm.
"""

from __future__ import annotations

import math
import random

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warren import JobDropped, JobReturned, PublisherClosed
from warren._common.backoff import Backoff
from warren._job import Job, Outcome
from warren._outbox.outbox import Outbox
from warren._publish.ledger import Ledger
from warren._publish.overflow import OverflowPolicy
from warren._publish.settlement import Settlement

pytestmark = pytest.mark.anyio

VERDICTS = st.lists(
    st.tuples(st.sampled_from(["confirm", "nack", "return", "send"]), st.integers(1, 4)),
    max_size=30,
)


def make_job(n: int) -> Job:
    job = Job(b"x", "", "q", f"job-{n}", float(n), (b"", b""))
    job.waiter = Outcome()
    return job


def ending(job: Job) -> str | None:
    waiter = job.waiter
    assert waiter is not None
    if not waiter._done.is_set():
        return None
    error = waiter.error
    if error is None:
        return "confirmed"
    if isinstance(error, JobReturned):
        return "returned"
    if isinstance(error, JobDropped):
        return error.reason
    assert isinstance(error, PublisherClosed)
    return "kept"


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(verdicts=VERDICTS, stop=st.sampled_from(["shutdown", "gave_up", "kept"]))
async def test_every_job_ends_once_with_what_happened(
    verdicts: list[tuple[str, int]], stop: str
) -> None:
    clock = iter(range(1, 10_000)).__next__
    tx, rx = anyio.create_memory_object_stream[Job](math.inf)
    with tx, rx:
        ledger = Ledger(8, (tx, rx))
        outbox = Outbox("/nonexistent/never-opened.db")  # only its path is read
        settle = Settlement(
            ledger, OverflowPolicy(ledger, "block", "p"), None,
            backoff=Backoff(rng=random.Random(0)), clock=lambda: float(clock()), name="p",
        )  # fmt: skip
        jobs = [make_job(n) for n in range(8)]
        for job in jobs:
            ledger.accept(job)
        sent: list[Job] = []
        for verdict, n in verdicts:
            room = settle.room
            frame = tuple(sent[:n])
            if verdict == "send":
                sent += ledger.take(None, n)
            elif verdict == "confirm":
                before = ledger.depth
                settle.confirmed(frame)
                sent = sent[n:]
                if ledger.depth < before:
                    assert room.is_set()
                    assert settle.nack_streak == settle.returned_in_a_row == 0
            elif verdict == "nack":
                streak = settle.nack_streak
                settle.nacked(frame)
                sent = sent[n:]
                assert settle.nack_streak == streak + 1
                assert settle.resend_at > 0
            elif sent:
                settle.returned(sent.pop(0), 312, "NO_ROUTE")
            assert settle.drained.is_set() == (ledger.depth == 0)
            ledger.check()
        unsettled = [job for job in jobs if ending(job) is None]
        if stop == "kept":
            settle.keep_all("shutdown", outbox)
        else:
            assert set(settle.drop_all(stop)) == set(unsettled)
        assert ledger.depth == 0
        assert settle.drained.is_set()
        assert all(ending(job) == stop for job in unsettled)
        ended = [ending(job) for job in jobs]
        assert ended.count("confirmed") == ledger.confirmed
        assert ended.count("returned") == ledger.returned
        ledger.check()


async def test_a_reserved_job_that_reached_the_disk_after_the_stop_is_kept() -> None:
    tx, rx = anyio.create_memory_object_stream[Job](math.inf)
    with tx, rx:
        ledger = Ledger(4, (tx, rx))
        settle = Settlement(ledger, OverflowPolicy(ledger, "block", "p"), None,
                            backoff=Backoff(), clock=lambda: 0.0, name="p")  # fmt: skip
        job, refused = make_job(1), make_job(2)
        ledger.reserve(job)
        ledger.reserve(refused)
        settle.keep_reserved(job, Outbox("/never/opened.db"))
        assert ending(job) == "kept"
        assert "stopped before the broker confirmed" in str(job.waiter and job.waiter.error)
        settle.not_stored(refused)
        assert ending(refused) is None  # its caller gets the write's error, not an outcome
        assert (ledger.kept, ledger.dropped["refused"], ledger.depth) == (1, 1, 0)
        ledger.check()
