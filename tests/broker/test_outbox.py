"""The durable buffer: nothing accepted is lost when the process dies.

Real broker, real processes: a producer with an outbox is killed with SIGKILL at random
instants (link up, jobs in flight) and during an outage; the next start re-sends what was
on disk, and every job that was reported accepted reaches the queue (duplicates only with
the same message_id). Plus the edges: a stop that cannot flush, a locked file, a path that
cannot be an outbox, a full disk, a torn write-ahead log, the transactional outbox.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.support.helpers import free_port, metric, outbox_rows, wait_until
from warren import (
    ConfigError,
    ConnectionConfig,
    InvalidJob,
    Metrics,
    OutboxError,
    Publisher,
    PublisherConfig,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.support.broker import Broker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]
BACKENDS = ["asyncio", "trio"]


@pytest.fixture
def queue(queue_name: str) -> str:
    """A fresh queue on the shared broker (conftest's), deleted afterwards."""
    return queue_name


def _config(url: str, outbox: Path, **kw: Any) -> PublisherConfig:
    return PublisherConfig(
        connection=ConnectionConfig(urls=url, backoff_base=0.05, backoff_cap=0.2),
        outbox=str(outbox),
        **kw,
    )


async def _recover(url: str, outbox: Path, queue: str) -> Publisher:
    """Start a publisher on ``outbox`` and wait until it re-sent everything there."""
    del queue  # declared by the fixture
    pub = Publisher(_config(url, outbox), metrics=Metrics(CollectorRegistry()), name="next")
    async with pub:
        await wait_until(lambda: pub.statistics().outbox_recovered > 0 or outbox_rows(outbox) == 0)
        with anyio.fail_after(60):
            await wait_until(lambda: pub.statistics().buffer_depth == 0, within=60)
    return pub


async def test_every_job_is_confirmed_and_the_outbox_empties(
    broker_url: str, broker: Broker, queue: str, tmp_path: Path, metrics: Metrics
) -> None:
    outbox = tmp_path / "outbox.sqlite3"
    async with Publisher(_config(broker_url, outbox), metrics=metrics, name="durable") as pub:
        async with anyio.create_task_group() as tg:
            for worker in range(20):

                async def produce(worker: int = worker) -> None:
                    for i in range(50):
                        await pub.enqueue({"w": worker, "i": i}, routing_key=queue)

                tg.start_soon(produce)
        await pub.publish(b"last", routing_key=queue)
        with anyio.fail_after(30):
            await pub.wait_flushed()
        stats = pub.statistics()
    assert stats.confirmed == 1001
    assert broker.depth(queue) == 1001
    assert outbox_rows(outbox) == 0, "confirmed jobs are deleted from the outbox"
    assert metric(metrics, "warren_outbox_jobs", worker="durable") == 0


async def test_a_stop_that_cannot_flush_keeps_the_jobs_for_the_next_start(
    broker_url: str, broker: Broker, queue: str, tmp_path: Path, metrics: Metrics
) -> None:
    """A deploy that outruns its grace period: the jobs stay on disk (kept, not dropped)."""
    outbox = tmp_path / "outbox.sqlite3"
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    pub = Publisher(_config(nowhere, outbox, flush_timeout=0.2), metrics=metrics, name="cut")
    async with pub:
        ids = [await pub.enqueue({"i": i}, routing_key=queue) for i in range(100)]
    stats = pub.statistics()
    assert (stats.kept, stats.dropped["shutdown"], stats.buffer_depth) == (100, 0, 0)
    assert outbox_rows(outbox) == 100
    after = await _recover(broker_url, outbox, queue)
    assert after.statistics().outbox_recovered == 100
    assert after.statistics().confirmed == 100
    arrivals = await anyio.to_thread.run_sync(lambda: broker.drain(queue, expect=100))
    assert sorted(arrivals.ids) == sorted(ids)
    assert outbox_rows(outbox) == 0


def _child(
    outbox: Path, url: str, queue: str, backend: str, run: str = "job"
) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.support.outbox_child", str(outbox), url, queue, backend,
           str(10**9), run]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=os.getcwd())  # fmt: skip


def _kill_after(child: subprocess.Popen[str], accepted: int) -> set[str]:
    """SIGKILL the child once it reported ``accepted`` jobs; every id it reported."""
    assert child.stdout is not None
    ids: set[str] = set()
    for line in child.stdout:
        if line.startswith("accepted "):
            ids.add(line.split()[1])
            if len(ids) >= accepted:
                break
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=10)
    ids |= {line.split()[1] for line in rest.splitlines() if line.startswith("accepted ")}
    assert ids, "the child accepted nothing"
    return ids


@pytest.mark.scenario
@pytest.mark.timeout(300)
async def test_kill_9_at_random_instants_loses_nothing_accepted(
    anyio_backend: str, broker_url: str, broker: Broker, queue: str, tmp_path: Path
) -> None:
    """The link is up and jobs are in flight when each kill lands."""
    outbox = tmp_path / "outbox.sqlite3"
    rng = random.Random(1234)
    accepted: set[str] = set()
    for run in range(6):
        child = _child(outbox, broker_url, queue, anyio_backend, run=f"run{run}")
        accepted |= _kill_after(child, rng.randint(20, 1500))
    after = await _recover(broker_url, outbox, queue)
    assert outbox_rows(outbox) == 0
    # everything: a job re-sent after a kill may arrive twice (same id), and a job killed
    # between its commit and its "accepted" line arrives without having been reported
    arrived = await anyio.to_thread.run_sync(broker.drain_all, queue)
    missing = accepted - set(arrived.ids)
    assert not missing, f"{len(missing)} accepted jobs lost, e.g. {sorted(missing)[:5]}"
    assert after.statistics().failed is None


async def test_kill_9_during_an_outage_loses_nothing_accepted(
    anyio_backend: str, broker_url: str, broker: Broker, queue: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.sqlite3"
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    accepted = _kill_after(_child(outbox, nowhere, queue, anyio_backend), 300)
    assert outbox_rows(outbox) >= len(accepted)
    after = await _recover(broker_url, outbox, queue)
    assert after.statistics().outbox_recovered >= len(accepted)
    arrived = await anyio.to_thread.run_sync(broker.drain_all, queue)
    assert accepted <= set(arrived.ids)


async def test_a_torn_write_ahead_log_is_opened_and_what_it_holds_is_recovered(
    broker_url: str, broker: Broker, queue: str, tmp_path: Path
) -> None:
    """A crash that tore the last WAL frame: SQLite drops the torn transaction; Warren opens
    the file and re-sends what it holds, and says how many."""
    outbox = tmp_path / "outbox.sqlite3"
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    _kill_after(_child(outbox, nowhere, queue, "asyncio"), 200)
    wal = outbox.with_name(outbox.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 1000
    with wal.open("r+b") as f:
        f.truncate(wal.stat().st_size - 700)
    intact = outbox_rows(outbox)
    assert intact > 0
    after = await _recover(broker_url, outbox, queue)
    assert after.statistics().outbox_recovered == intact
    await anyio.to_thread.run_sync(lambda: broker.drain(queue, expect=intact, timeout=60))


async def test_a_second_process_cannot_share_the_outbox(
    broker_url: str, queue: str, tmp_path: Path, metrics: Metrics
) -> None:
    outbox = tmp_path / "outbox.sqlite3"
    child = _child(outbox, broker_url, queue, "asyncio")
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        pub = Publisher(_config(broker_url, outbox), metrics=metrics, name="second")
        with pytest.raises(ConfigError, match=r"outbox: .*in use by another process") as info:
            async with pub:
                pass
        assert str(outbox) in str(info.value)
    finally:
        child.kill()
        child.communicate()


@pytest.mark.parametrize("where", ["a-directory", "no/such/dir/outbox.sqlite3"])
async def test_a_path_that_cannot_be_an_outbox_is_a_clear_error(
    where: str, broker_url: str, tmp_path: Path, metrics: Metrics
) -> None:
    path = tmp_path / where
    if where == "a-directory":
        path.mkdir()
    pub = Publisher(_config(broker_url, path), metrics=metrics, name="bad")
    with pytest.raises(ConfigError, match="outbox") as info:
        async with pub:
            pass
    assert str(path) in str(info.value)


def test_a_full_disk_refuses_jobs_clearly_and_loses_none_accepted(
    broker_url: str, broker: Broker, queue: str, tmp_path: Path
) -> None:
    """A file size limit (RLIMIT_FSIZE) stands in for a full disk."""
    outbox = tmp_path / "outbox.sqlite3"
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    cmd = [sys.executable, "-m", "tests.support.outbox_child", str(outbox), nowhere, queue,
           "asyncio", "3000"]  # fmt: skip
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             preexec_fn=small_disk)  # fmt: skip
    accepted, refused = set(), []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("accepted "):
                accepted.add(line.split()[1])
            elif line.startswith("refused "):
                refused.append(line)
            elif line.startswith("done"):
                break
    finally:
        child.kill()
        child.communicate()
    assert accepted, "nothing fitted at all"
    assert refused, "the disk never filled up"
    assert "could not store the job" in refused[0] and "full" in refused[0], refused[0]
    assert len(accepted) + len(refused) == 3000
    assert outbox_rows(outbox) == len(accepted)
    after = anyio.run(_recover, broker_url, outbox, queue)
    assert after.statistics().outbox_recovered == len(accepted)
    assert set(broker.drain_all(queue).ids) == accepted


@pytest.mark.parametrize("backend", BACKENDS)
def test_submit_needs_await_and_a_transaction_needs_an_outbox(backend: str) -> None:
    async def main() -> None:
        registry = Metrics(CollectorRegistry())
        pub = Publisher(PublisherConfig(outbox="/tmp/unused.sqlite3"), metrics=registry)
        with pytest.raises(OutboxError, match="await enqueue"):
            pub.submit(b"x", routing_key="q")
        plain = Publisher(PublisherConfig(), metrics=registry, name="plain")
        with pytest.raises(InvalidJob, match="needs an outbox"):
            await plain.enqueue(b"x", routing_key="q", transaction=lambda db: None)
        await pub.aclose()  # never started: closes its streams
        await plain.aclose()

    anyio.run(main, backend=backend)


async def test_a_transaction_rides_with_its_job_all_or_nothing(
    broker_url: str, broker: Broker, queue: str, tmp_path: Path, metrics: Metrics
) -> None:
    """The application's row and the job's row commit together; a transaction that fails
    stores neither and fails only its own job, not the others of its batch."""
    outbox = tmp_path / "app.sqlite3"
    setup = sqlite3.connect(outbox)
    setup.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    setup.commit()
    setup.close()

    def order(order_id: str) -> Callable[[sqlite3.Connection], object]:
        return lambda db: db.execute("INSERT INTO orders VALUES (?)", (order_id,))

    failures: list[BaseException] = []
    async with Publisher(_config(broker_url, outbox), metrics=metrics, name="tx") as pub:

        async def place(order_id: str) -> None:
            try:
                await pub.enqueue({"order": order_id}, routing_key=queue, message_id=order_id,
                                  transaction=order(order_id))  # fmt: skip
            except OutboxError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for order_id in ("a", "b", "a", "c"):  # the second "a" violates the primary key
                tg.start_soon(place, order_id)
        with anyio.fail_after(20):
            await pub.wait_flushed()
    assert len(failures) == 1
    assert isinstance(failures[0].__cause__, sqlite3.IntegrityError)
    db = sqlite3.connect(outbox)
    try:
        assert sorted(r[0] for r in db.execute("SELECT id FROM orders")) == ["a", "b", "c"]
    finally:
        db.close()
    assert sorted(broker.drain_all(queue).ids) == ["a", "b", "c"]


async def test_a_cancelled_enqueue_whose_job_committed_is_accepted_all_the_same(
    broker_url: str, tmp_path: Path, metrics: Metrics
) -> None:
    """Cancelled while its batch commits (an HTTP request cut off at shutdown): the job and
    its transaction committed together, so the job is never taken back (the application's
    row already says it is on its way); it is accepted, here kept for the next start."""
    outbox = tmp_path / "outbox.sqlite3"
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    pub = Publisher(_config(nowhere, outbox, flush_timeout=0.1), metrics=metrics, name="c")
    async with pub:
        locker = sqlite3.connect(outbox, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # the write waits for this lock
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: pub.enqueue(b"x", routing_key="q"))
                await anyio.wait_all_tasks_blocked()  # it waits on its batch
                tg.cancel_scope.cancel()
                locker.execute("ROLLBACK")  # the batch commits now
        finally:
            locker.close()
        stats = pub.statistics()
        assert (stats.submitted, stats.buffer_depth) == (1, 1)
    assert pub.statistics().kept == 1
    assert outbox_rows(outbox) == 1


async def test_an_application_database_larger_than_the_buffer_is_fine(
    broker_url: str, queue: str, tmp_path: Path, metrics: Metrics
) -> None:
    """The outbox shares its file with the application's tables (the api's messages): a
    limit on the file would turn the application's own growth into refused jobs."""
    outbox = tmp_path / "app.sqlite3"
    app = sqlite3.connect(outbox)
    app.execute("CREATE TABLE blobs (b BLOB)")
    app.executemany("INSERT INTO blobs VALUES (?)", [(b"x" * 100_000,)] * 40)  # ~4 MB
    app.commit()
    app.close()
    config = _config(broker_url, outbox, max_job_bytes=1024, buffer_max_bytes=1024 * 1024)
    async with Publisher(config, metrics=metrics, name="big") as pub:
        await pub.publish(b"fits", routing_key=queue)
    assert pub.statistics().confirmed == 1


async def test_a_bug_in_the_writer_fails_its_batch_instead_of_hanging_it(
    broker_url: str, queue: str, tmp_path: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anything but an SQLite error escaping a commit (a bug) still answers the batch's
    writers, and the publisher fails loudly; before, they waited forever."""
    from warren._outbox.outbox import Outbox

    def broken(self: Outbox, batch: object, deletes: object) -> None:
        raise RuntimeError("a bug in the writer")

    outbox = tmp_path / "outbox.sqlite3"
    monkeypatch.setattr(Outbox, "_commit", broken)  # opening does not commit
    with anyio.fail_after(20), pytest.raises(BaseException) as info:  # noqa: PT011
        async with Publisher(_config(broker_url, outbox), metrics=metrics, name="bug") as pub:
            await pub.enqueue(b"x", routing_key=queue)
    assert not isinstance(info.value, TimeoutError), "the batch was never answered"
    assert "a bug in the writer" in repr(info.value) or isinstance(info.value, BaseExceptionGroup)
