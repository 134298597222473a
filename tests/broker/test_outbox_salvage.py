"""``warren outbox salvage``: the readable jobs of a damaged outbox, copied to a healthy one.

A real outbox of jobs (written by a publisher that could not reach the broker), damaged the
way disks and careless copies damage files: truncated; one page overwritten with garbage (a
leaf of the jobs' table, the first overflow page of a large job, the table's root); the
header page overwritten; a write-ahead log left beside it, whole or torn. The salvaged file
is opened by an ordinary publisher that sends every job to a real queue, and the test counts
what arrives against an oracle: the jobs SQLite itself can still read, one id at a time.
The damaged file is never modified; a file in use by another process is refused.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.support.helpers import free_port, outbox_rows, run_warren, wait_until
from warren import ConnectionConfig, Metrics, OutboxError, Publisher, PublisherConfig
from warren._outbox.outbox import Outbox

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.broker import Broker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

JOBS = 600
PAGE = 4096
GARBAGE = b"\xde\xad\xbe\xef" * (PAGE // 4)  # as a page number: far past any file's end
EXIT_LOST = 3


def _body(i: int) -> bytes:
    """Every 40th job is large enough to spill into overflow pages."""
    return f"{i:05d}".encode() * (1800 if i % 40 == 0 else 60)


async def _fill(path: Path, queue: str, first: int, count: int, url: str = "") -> None:
    """Enqueue jobs ``job-first``..: with no broker ``url`` they stay on disk; with one, they
    are sent, confirmed and their rows deleted."""
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    config = PublisherConfig(
        connection=ConnectionConfig(urls=url or nowhere, backoff_base=0.05, backoff_cap=0.2),
        outbox=str(path),
        outbox_sync="normal",
        flush_timeout=10 if url else 0,
    )
    pub = Publisher(config, metrics=Metrics(CollectorRegistry()), name="fill")
    async with pub, anyio.create_task_group() as tg:
        for worker in range(10):

            async def produce(worker: int = worker) -> None:
                for i in range(first + worker, first + count, 10):
                    await pub.enqueue(_body(i), routing_key=queue, message_id=f"job-{i}")

            tg.start_soon(produce)


def _jobs(path: Path) -> dict[int, tuple[str, bytes]]:
    """Row id -> (message id, body), read from a healthy outbox."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT id, message_id, body FROM warren_outbox").fetchall()
    finally:
        db.close()
    return {row_id: (mid, bytes(body)) for row_id, mid, body in rows}


def _pages(path: Path, pagetype: str) -> list[tuple[int, int, str]]:
    """(page number, cells, dbstat path) of the outbox table's pages of one type."""
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT pageno, ncell, path FROM dbstat WHERE name = 'warren_outbox'"
            " AND pagetype = ? ORDER BY pageno",
            (pagetype,),
        ).fetchall()
    finally:
        db.close()


def _overwrite(path: Path, page: int) -> None:
    with path.open("r+b") as f:
        f.seek((page - 1) * PAGE)
        f.write(GARBAGE)


def _readable_by_sqlite(
    path: Path, jobs: dict[int, tuple[str, bytes]], scratch: Path, *, pad_to: int = 0
) -> dict[int, tuple[str, bytes]]:
    """The oracle: every job SQLite itself reads back intact by its id, from a copy of the
    file and its WAL (zero-padded to ``pad_to`` bytes: SQLite refuses a truncated file)."""
    scratch.mkdir()
    copy = scratch / path.name
    for suffix in ("", "-wal"):
        if (source := path.with_name(path.name + suffix)).exists():
            shutil.copyfile(source, copy.with_name(copy.name + suffix))
    if copy.stat().st_size < pad_to:
        with copy.open("r+b") as f:
            f.truncate(pad_to)
    found: dict[int, tuple[str, bytes]] = {}
    db = sqlite3.connect(copy)
    try:
        for row_id, job in jobs.items():
            try:
                row = db.execute(
                    "SELECT message_id, body FROM warren_outbox WHERE id = ?", (row_id,)
                ).fetchone()
            except sqlite3.DatabaseError:
                continue
            if row is not None and (row[0], bytes(row[1])) == job:
                found[row_id] = job
    finally:
        db.close()
    return found


def _fingerprint(directory: Path) -> dict[str, str]:
    """Every file in ``directory`` and its hash: salvage must change none, add none."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def _salvage(damaged: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    before = _fingerprint(damaged.parent)
    done = run_warren("outbox", "salvage", str(damaged), "--to", str(dest), timeout=50)
    assert _fingerprint(damaged.parent) == before, "salvage changed the damaged file's folder"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _lost_ranges(report: str) -> list[tuple[int, float]]:
    """The id ranges the report names as unreadable: ``ids 12..40`` or ``ids 450..end``."""
    return [
        (int(low), float("inf") if high == "end" else int(high))
        for low, high in re.findall(
            r"^unreadable: page \d+, ids (\d+)\.\.(\d+|end):", report, re.MULTILINE
        )
    ]


async def _send(path: Path, broker_url: str, broker: Broker, queue: str) -> dict[str, bytes]:
    """Open ``path`` with an ordinary publisher and let it send everything it holds; what
    arrived on ``queue``, message id -> body."""
    holding = outbox_rows(path)
    config = PublisherConfig(
        connection=ConnectionConfig(urls=broker_url, backoff_base=0.05, backoff_cap=0.2),
        outbox=str(path),
    )
    async with Publisher(config, metrics=Metrics(CollectorRegistry()), name="salvaged") as pub:
        await wait_until(lambda: pub.statistics().outbox_jobs == 0, within=40)
        assert pub.statistics().outbox_recovered == holding
    arrivals = await anyio.to_thread.run_sync(lambda: broker.drain(queue, expect=holding))
    assert arrivals.duplicates == 0
    assert broker.depth(queue) == 0
    by_id = dict(zip(arrivals.ids, arrivals.bodies, strict=True))
    assert len(by_id) == holding
    return by_id


@pytest.fixture
async def outbox(tmp_path: Path, queue_name: str) -> tuple[Path, dict[int, tuple[str, bytes]]]:
    """A healthy, closed outbox of JOBS jobs for ``queue_name``, and its rows."""
    path = tmp_path / "damaged" / "outbox.sqlite3"
    path.parent.mkdir()
    await _fill(path, queue_name, 0, JOBS)
    jobs = _jobs(path)
    assert len(jobs) == JOBS
    assert not path.with_name(path.name + "-wal").exists(), "closed: checkpointed"
    return path, jobs


async def _check(
    damaged: Path,
    jobs: dict[int, tuple[str, bytes]],
    at_least: dict[int, tuple[str, bytes]],
    exit_code: int,
    broker_url: str,
    broker: Broker,
    queue: str,
    tmp_path: Path,
) -> tuple[dict[int, tuple[str, bytes]], str]:
    """Salvage ``damaged`` and send the result. Every job the oracle read (``at_least``) is
    salvaged, intact, with its id; the report covers every job lost; the salvaged file
    opens as an outbox and a publisher sends exactly its jobs. Returns them and the report.
    """
    dest = tmp_path / "salvaged.sqlite3"
    done = _salvage(damaged, dest)
    assert done.returncode == exit_code, done.stdout + done.stderr
    salvaged = _jobs(dest)
    assert f"salvaged {len(salvaged)} jobs" in done.stdout, done.stdout
    assert all(jobs.get(i) == job for i, job in salvaged.items()), "same ids, same jobs"
    assert at_least.items() <= salvaged.items()
    ranges = _lost_ranges(done.stdout)
    lost = [i for i in jobs if i not in salvaged]
    uncovered = [i for i in lost if not any(low <= i <= high for low, high in ranges)]
    assert not uncovered, f"lost but not reported: {uncovered[:10]}\n{done.stdout}"
    arrived = await _send(dest, broker_url, broker, queue)
    assert arrived == dict(salvaged.values())
    return salvaged, done.stdout


# -- damage ---------------------------------------------------------------------------------


async def test_a_truncated_outbox_gives_up_every_job_before_the_cut(
    anyio_backend: str,
    outbox: tuple[Path, dict[int, tuple[str, bytes]]],
    broker_url: str,
    broker: Broker,
    queue_name: str,
    tmp_path: Path,
) -> None:
    path, jobs = outbox
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate((size // PAGE * 6 // 10) * PAGE + 1000)  # mid-page, as a cut-off copy
    readable = _readable_by_sqlite(path, jobs, tmp_path / "oracle", pad_to=size)
    assert JOBS // 3 < len(readable) < JOBS
    salvaged, report = await _check(
        path, jobs, readable, EXIT_LOST, broker_url, broker, queue_name, tmp_path
    )
    assert len(salvaged) < JOBS
    assert "truncated" in report


@pytest.mark.parametrize("where", ["leaf", "overflow", "root"])
async def test_one_garbage_page_loses_only_what_it_held(
    where: str,
    anyio_backend: str,
    outbox: tuple[Path, dict[int, tuple[str, bytes]]],
    broker_url: str,
    broker: Broker,
    queue_name: str,
    tmp_path: Path,
) -> None:
    """A leaf loses its rows (no more); a large job's overflow page loses that job; the
    table's root (an interior page) loses nothing: its leaves are found by scanning."""
    path, jobs = outbox
    if where == "root":
        [(page, _, _)] = _pages(path, "internal")
        lost = 0
    elif where == "overflow":
        firsts = [p for p in _pages(path, "overflow") if p[2].endswith("+000000")]
        page, _, _ = firsts[len(firsts) // 2]
        lost = 1
    else:
        leaves = _pages(path, "leaf")
        page, lost, _ = leaves[len(leaves) // 2]
    _overwrite(path, page)
    readable = _readable_by_sqlite(path, jobs, tmp_path / "oracle")
    if where != "root":
        assert len(readable) == JOBS - lost
    salvaged, report = await _check(
        path, jobs, readable, EXIT_LOST, broker_url, broker, queue_name, tmp_path
    )
    assert len(salvaged) == JOBS - lost
    assert f"page {page}" in report


async def test_a_garbage_header_page_loses_no_job(
    anyio_backend: str,
    outbox: tuple[Path, dict[int, tuple[str, bytes]]],
    broker_url: str,
    broker: Broker,
    queue_name: str,
    tmp_path: Path,
) -> None:
    """Page 1 holds the header and the schema, never a job: SQLite cannot open the file at
    all, salvage finds every job by scanning the pages, and says that page 1 was lost."""
    path, jobs = outbox
    _overwrite(path, 1)
    assert _readable_by_sqlite(path, jobs, tmp_path / "oracle") == {}
    salvaged, report = await _check(
        path, jobs, jobs, EXIT_LOST, broker_url, broker, queue_name, tmp_path
    )
    assert len(salvaged) == JOBS
    assert "page 1" in report


async def test_jobs_already_sent_do_not_come_back(
    anyio_backend: str, broker_url: str, broker: Broker, queue_name: str, tmp_path: Path
) -> None:
    """A settled job's row is deleted and its bytes zeroed (secure_delete), freed pages too:
    even a salvage that must scan every page, the header page and with it the freelist
    lost, finds only the jobs still owed; and the ids the next start reused stay theirs."""
    path = tmp_path / "damaged" / "outbox.sqlite3"
    path.parent.mkdir()
    await _fill(path, queue_name, 0, JOBS, url=broker_url)
    assert outbox_rows(path) == 0
    sent = await anyio.to_thread.run_sync(lambda: broker.drain(queue_name, expect=JOBS))
    assert sent.distinct == JOBS
    await _fill(path, queue_name, JOBS, 100)  # on some of the freed pages, not all
    jobs = _jobs(path)
    assert len(jobs) == 100 and min(jobs) == 1, "an empty outbox starts its ids again"
    _overwrite(path, 1)
    salvaged, _ = await _check(
        path, jobs, jobs, EXIT_LOST, broker_url, broker, queue_name, tmp_path
    )
    assert salvaged == jobs


# -- a write-ahead log beside it ------------------------------------------------------------


@pytest.mark.parametrize("torn", [False, True])
async def test_the_jobs_still_in_the_write_ahead_log_are_salvaged(
    torn: bool, anyio_backend: str, broker_url: str, broker: Broker, queue_name: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A process killed with jobs committed only to the WAL: salvage reads the file as
    SQLite would, the WAL's committed frames over the file's pages; a torn last frame
    drops its transaction, as SQLite does (that batch was never reported accepted)."""
    live = tmp_path / "live" / "outbox.sqlite3"
    live.parent.mkdir()
    await _fill(live, queue_name, 0, 300)  # closed: in the file itself
    damaged = tmp_path / "damaged" / "outbox.sqlite3"
    damaged.parent.mkdir()
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    config = PublisherConfig(
        connection=ConnectionConfig(urls=nowhere), outbox=str(live), flush_timeout=0
    )
    async with Publisher(config, metrics=Metrics(CollectorRegistry()), name="more") as pub:
        for i in range(300, 400):
            await pub.enqueue(_body(i), routing_key=queue_name, message_id=f"job-{i}")
        for suffix in ("", "-wal"):  # what a kill -9 now would leave
            shutil.copyfile(f"{live}{suffix}", f"{damaged}{suffix}")
    wal = damaged.with_name(damaged.name + "-wal")
    if torn:
        with wal.open("r+b") as f:
            f.truncate(wal.stat().st_size - 700)
    without_wal = tmp_path / "file-only.sqlite3"
    shutil.copyfile(damaged, without_wal)
    assert outbox_rows(without_wal) == 300, "the last 100 jobs are only in the WAL"
    jobs = _jobs(live)
    readable = _readable_by_sqlite(damaged, jobs, tmp_path / "oracle")
    assert 300 < len(readable) <= 400
    assert (len(readable) < 400) == torn
    # a torn commit never happened: its jobs were never reported accepted
    salvaged, _ = await _check(
        damaged, readable, readable, 0, broker_url, broker, queue_name, tmp_path
    )
    assert salvaged == readable, "no more than SQLite reads: a torn commit never happened"


# -- refusals ---------------------------------------------------------------------------------


async def test_an_outbox_a_publisher_holds_is_refused(
    anyio_backend: str, outbox: tuple[Path, dict[int, tuple[str, bytes]]], tmp_path: Path
) -> None:
    path, _ = outbox
    holder = Outbox(str(path))
    await holder.open()
    try:
        dest = tmp_path / "salvaged.sqlite3"
        done = await anyio.to_thread.run_sync(
            lambda: run_warren("outbox", "salvage", str(path), "--to", str(dest))
        )
    finally:
        await holder.aclose()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "in use by another process" in done.stderr and str(path) in done.stderr
    assert not dest.exists()


def test_an_outbox_another_process_has_open_in_sqlite_is_refused(
    outbox_file: Path, tmp_path: Path
) -> None:
    """An application's own connection (the transactional outbox) in another process."""
    script = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
              " db.execute('SELECT count(*) FROM warren_outbox').fetchone();"
              " print('ready', flush=True); sys.stdin.read()")  # fmt: skip
    app = subprocess.Popen([sys.executable, "-c", script, str(outbox_file)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert app.stdout is not None
        assert app.stdout.readline().strip() == "ready"
        dest = tmp_path / "salvaged.sqlite3"
        done = run_warren("outbox", "salvage", str(outbox_file), "--to", str(dest))
    finally:
        app.communicate("", timeout=10)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "open in another process" in done.stderr and str(outbox_file) in done.stderr
    assert not dest.exists()


@pytest.fixture
def outbox_file(tmp_path: Path) -> Path:
    """A small healthy outbox, written without a broker (one job)."""
    path = tmp_path / "outbox.sqlite3"
    anyio.run(_fill, path, "warren.test.unused", 0, 1)
    return path


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing", "no such file"),
        ("directory", "not a file"),
        ("destination-exists", "already exists"),
        ("same-file", "already exists"),
        ("destination-dir-missing", "no such directory"),
        ("not-sqlite", "no outbox"),
        ("no-outbox-table", "no outbox"),
    ],
)
def test_bad_arguments_exit_2_naming_them(
    case: str, needle: str, outbox_file: Path, tmp_path: Path
) -> None:
    source, dest = outbox_file, tmp_path / "out" / "salvaged.sqlite3"
    dest.parent.mkdir()
    if case == "missing":
        source = tmp_path / "nope.sqlite3"
    elif case == "directory":
        source = tmp_path / "out"
    elif case == "destination-exists":
        dest.write_bytes(b"precious")
    elif case == "same-file":
        dest = source
    elif case == "destination-dir-missing":
        dest = tmp_path / "no" / "such" / "salvaged.sqlite3"
    elif case == "not-sqlite":
        source = tmp_path / "notes.txt"
        source.write_text("not a database\n" * 500)
    elif case == "no-outbox-table":
        source = tmp_path / "other.sqlite3"
        db = sqlite3.connect(source)
        db.execute("CREATE TABLE t (x)")
        db.commit()
        db.close()
    before = dest.read_bytes() if dest.exists() else None
    done = run_warren("outbox", "salvage", str(source), "--to", str(dest))
    assert done.returncode == 2, done.stdout + done.stderr
    assert needle in done.stderr, done.stderr
    named = dest if case in ("destination-exists", "destination-dir-missing") else source
    assert str(named) in done.stderr, done.stderr
    assert (dest.read_bytes() if dest.exists() else None) == before
    assert "Traceback" not in done.stderr


def test_the_destination_is_required() -> None:
    done = run_warren("outbox", "salvage", "damaged.sqlite3")
    assert done.returncode == 2
    assert "--to" in done.stderr


def test_a_healthy_outbox_is_copied_whole_and_exits_0(outbox_file: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copy" / "salvaged.sqlite3"
    dest.parent.mkdir()
    done = _salvage(outbox_file, dest)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "salvaged 1 jobs" in done.stdout and "unreadable" not in done.stdout
    assert _jobs(dest) == _jobs(outbox_file)


@pytest.mark.parametrize("where", ["header", "leaf", "overflow", "truncated"])
async def test_a_damaged_outbox_is_refused_at_open_pointing_to_salvage(
    where: str, anyio_backend: str, outbox: tuple[Path, dict[int, tuple[str, bytes]]]
) -> None:
    """Loud at open, before any job is re-sent: a broken overflow chain included, which a
    row count does not read (the publisher failed mid-recovery on it, again each start)."""
    path, _ = outbox
    if where == "truncated":
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif where == "header":
        _overwrite(path, 1)
    else:
        pages = _pages(path, where)
        pages = [p for p in pages if where == "leaf" or p[2].endswith("+000000")]
        _overwrite(path, pages[len(pages) // 2][0])
    with pytest.raises(OutboxError, match="warren outbox salvage") as info:
        await Outbox(str(path)).open()
    assert str(path) in str(info.value)


def test_help_documents_the_exit_codes() -> None:
    done = run_warren("outbox", "salvage", "--help")
    assert done.returncode == 0
    assert "exit codes" in done.stdout
    assert "3" in done.stdout and "--to" in done.stdout
