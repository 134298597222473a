"""The durable buffer: the jobs a publisher accepted and the broker has not settled, on disk.

With ``PublisherConfig(outbox=path)`` a job is written here before ``enqueue``/``publish``
report it accepted, and deleted once the broker confirmed it (or it was returned or
dropped: the publisher's counters say which). A publisher that starts on an outbox with
rows in it re-sends them, oldest first, with their ``message_id``: a ``kill -9``, an OOM kill
or a deploy that outran its grace period loses nothing that was accepted.

SQLite in WAL mode, from the standard library: one file, crash-safe by design, and a
transaction per *batch* of jobs (group commit): the jobs accepted while the previous commit
ran share the next one, so a burst costs a few fsyncs, not one per job. The writes run on
a worker thread (never on the event loop), one batch at a time. ``synchronous``:

- ``normal``: a commit survives the process dying at any instant (kill -9, OOM); a power
  loss or kernel crash may lose the last commits before the WAL was synced.
- ``full`` (the default): every commit is fsynced before the job is reported accepted, so a
  power loss loses nothing accepted either; each batch costs an fsync.

A transaction of the caller's may ride along (``write(job, transaction=fn)``): ``fn(db)``
runs in the same transaction as the job's row, so an application's own row and its side
effect are stored together or not at all (the transactional outbox).

A damaged file (a page, or an overflow chain, of the jobs' table that does not read) is
refused at open, naming ``warren outbox salvage``: ``_outbox_salvage`` copies every job
that still reads to a new file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Final, TypeVar, TypeVarTuple, final

import anyio

from warren._exceptions import OutboxError
from warren._job import Job

if TYPE_CHECKING:
    from collections.abc import Callable

    from warren._config import OutboxSync

log = logging.getLogger("warren.outbox")
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

SCHEMA_VERSION: Final = 1  # PRAGMA user_version of an outbox file
CREATE_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS warren_outbox (id INTEGER PRIMARY KEY,"
    " created_at REAL NOT NULL, exchange TEXT NOT NULL, routing_key TEXT NOT NULL,"
    " message_id TEXT NOT NULL, method BLOB NOT NULL, header BLOB NOT NULL,"
    " body BLOB NOT NULL)"
)
SALVAGE_HINT: Final = (
    "if the file is damaged, `warren outbox salvage FILE --to NEW` copies every job it can"
    " still read to a new outbox (see docs/operations.md, 'A damaged outbox')"
)
WAL_LIMIT: Final = 8 * 1024 * 1024  # bytes the WAL file keeps between checkpoints
_PAGE_JOBS: Final = 1_000  # jobs loaded per recovery page
_PAGE_BYTES: Final = 8 * 1024 * 1024  # and bytes: recovery pages stay small in memory
_COLUMNS: Final = "id, exchange, routing_key, message_id, method, header, body"


@final
class _Batch:
    """The jobs of one transaction, and their outcome once it ends: one event for all."""

    __slots__ = ("done", "errors", "jobs", "transactions")

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.transactions: list[Callable[[sqlite3.Connection], object] | None] = []
        self.done = anyio.Event()
        self.errors: list[BaseException | None] | None = None  # None: every job committed


@final
class Outbox:
    """One outbox file, used by one publisher (locked against other processes)."""

    def __init__(self, path: str, *, synchronous: OutboxSync = "full") -> None:
        self.path = path
        self._synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._lock_fd = -1
        self._next_id = 1
        self._recover_below = 1  # rows under this id were there at open: to recover
        self._recover_after = 0  # the last id recovered so far
        self._batch = _Batch()  # filling while the previous one commits
        self._deletes: list[int] = []
        self._wake = anyio.Event()
        self._closed = False
        self._limiter: anyio.CapacityLimiter | None = None
        self.rows = 0  # rows in the file now (jobs not yet settled, as far as committed)
        self.disk_bytes = 0  # the database file plus its WAL
        self.recovered = 0  # jobs found at open and handed back to the publisher
        self.failed_writes = 0

    # -- open and close --------------------------------------------------------------------

    async def open(self) -> int:
        """Lock and open the file (created if missing); return how many jobs it holds.

        Raises:
            OutboxError: locked by another live process, or not openable as an outbox.
        """
        self._limiter = anyio.CapacityLimiter(1)
        found = await self._in_thread(self._open)
        self.rows = found
        return found

    def _open(self) -> int:
        path = self.path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise OutboxError(f"cannot open the outbox {path!r}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxError(
                f"the outbox {path!r} is in use by another process (it holds the lock);"
                " each publisher needs its own outbox file"
            ) from None
        self._lock_fd = fd
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            db.execute("PRAGMA busy_timeout=5000")  # an application's own connection
            # a settled job's bytes are zeroed, freed pages too: a salvage of a damaged
            # file can never take a job already sent for one still owed
            db.execute("PRAGMA secure_delete=ON")
            # the WAL shrinks back to this after a checkpoint: an outage's burst of jobs
            # must not leave a file of its high-water size on disk for good
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"the outbox {path!r} was written by a newer Warren (schema {version})"
                )
            db.execute(CREATE_TABLE)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            count, top = db.execute("SELECT count(*), max(id) FROM warren_outbox").fetchone()
            if count and (problems := _check(db)):
                raise OutboxError(f"the outbox {path!r} is damaged ({problems}); {SALVAGE_HINT}")
        except sqlite3.Error as exc:
            self._close()
            hint = f"; {SALVAGE_HINT}" if _damaged(exc) else ""
            raise OutboxError(f"cannot use {path!r} as an outbox: {exc}{hint}") from None
        except BaseException:
            self._close()
            raise
        self._next_id = (top or 0) + 1
        self._recover_below = self._next_id
        self._measure()
        return int(count)

    async def aclose(self) -> None:
        """Commit the pending deletes and close (the lock goes with the file)."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            deletes, self._deletes = self._deletes, []
            if deletes and self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    await self._in_thread(self._commit, _Batch(), deletes)
            await self._in_thread(self._close)
        batch, self._batch = self._batch, _Batch()
        if batch.jobs:  # never committed: the callers were not told accepted
            batch.errors = [OutboxError("the outbox closed before the job was written")] * len(
                batch.jobs
            )
            batch.done.set()

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- the jobs --------------------------------------------------------------------------

    async def write(
        self, job: Job, transaction: Callable[[sqlite3.Connection], object] | None = None
    ) -> None:
        """Make ``job`` durable (with ``transaction(db)`` in the same transaction, if given).

        Returns once its batch is committed. Cancelled meanwhile, it waits for the batch to
        end and re-raises the cancellation; ``job.outbox_id`` then says whether the job was
        committed (not None): a committed job is never taken back, because its
        ``transaction`` (an application's row that says "sent") committed with it.

        Raises:
            OutboxError: the write failed (disk full, an I/O error, or ``transaction``
                raised: then ``__cause__`` is its exception); nothing of it was stored.
        """
        if self._closed:
            raise OutboxError("the outbox is closed")
        job.outbox_id = self._next_id
        self._next_id += 1
        batch = self._batch
        index = len(batch.jobs)
        batch.jobs.append(job)
        batch.transactions.append(transaction)
        self._wake.set()
        try:
            await batch.done.wait()
        except BaseException:  # cancelled: let the batch end, say whether it committed
            with anyio.CancelScope(shield=True):
                await batch.done.wait()
            if batch.errors is not None and batch.errors[index] is not None:
                job.outbox_id = None
            raise
        if batch.errors is not None and (error := batch.errors[index]) is not None:
            job.outbox_id = None
            raise error

    def forget(self, job: Job) -> None:
        """The job is settled: delete its row with the next batch (no wait; a crash before
        that re-sends it, which at-least-once allows)."""
        if job.outbox_id is not None:
            self._deletes.append(job.outbox_id)
            job.outbox_id = None
            self._wake.set()

    async def recover_page(self, clock: Callable[[], float]) -> list[Job]:
        """The next jobs that were in the file when it was opened, oldest first; [] when
        all have been handed out."""
        if self._recover_after + 1 >= self._recover_below:
            return []
        rows = await self._in_thread(self._load_page)
        if not rows:
            self._recover_after = self._recover_below
            return []
        now = clock()
        jobs = []
        for row_id, exchange, routing_key, message_id, method, header, body in rows:
            job = Job(body=bytes(body), exchange=exchange, routing_key=routing_key,
                      message_id=message_id, submitted_at=now,
                      wire=(bytes(method), bytes(header)))  # fmt: skip
            job.outbox_id = row_id
            jobs.append(job)
        self._recover_after = rows[-1][0]
        self.recovered += len(jobs)
        return jobs

    def _load_page(self) -> list[tuple[Any, ...]]:
        assert self._db is not None
        cursor = self._db.execute(
            f"SELECT {_COLUMNS} FROM warren_outbox WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
            (self._recover_after, self._recover_below, _PAGE_JOBS),
        )
        rows, size = [], 0
        for row in cursor:
            rows.append(row)
            size += len(row[-1])
            if size >= _PAGE_BYTES:
                break
        cursor.close()
        return rows

    # -- the writer task ---------------------------------------------------------------------

    async def run(self) -> None:
        """Commit batches until cancelled: everything written or forgotten since the last
        commit goes in the next one."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            batch, self._batch = self._batch, _Batch()
            deletes, self._deletes = self._deletes, []
            if not batch.jobs and not deletes:
                continue
            with anyio.CancelScope(shield=True):  # a batch begun is finished and answered
                try:
                    batch.errors = await self._in_thread(self._commit, batch, deletes)
                except sqlite3.Error as exc:  # the batch as a whole: disk full, I/O error
                    self.failed_writes += len(batch.jobs)
                    log.error("outbox.write_failed path=%s jobs=%d error=%s", self.path,
                              len(batch.jobs), exc)  # fmt: skip
                    failure = OutboxError(
                        f"the outbox {self.path!r} could not store the job: {exc}"
                    )
                    batch.errors = [failure] * len(batch.jobs)
                    await self._delete_alone(deletes)
                except BaseException as exc:  # a bug, or a callback's BaseException
                    error = OutboxError(f"the outbox {self.path!r} failed: {exc!r}")
                    batch.errors = [error] * len(batch.jobs)
                    raise
                finally:
                    batch.done.set()

    async def _delete_alone(self, deletes: list[int]) -> None:
        """After a failed batch: the settled jobs' deletes free room, so they must not roll
        back with the inserts that failed (a full disk would never empty)."""
        if not deletes:
            return
        try:
            await self._in_thread(self._commit, _Batch(), deletes)
        except sqlite3.Error:
            self._deletes[:0] = deletes  # retried with the next batch
            return

    def _commit(self, batch: _Batch, deletes: list[int]) -> list[BaseException | None] | None:
        """One transaction: the deletes, then the batch's jobs; the per-job errors (only a
        job with a transaction of its own can fail alone), or None if all committed."""
        db = self._db
        assert db is not None
        errors: list[BaseException | None] | None = None
        now = time.time()
        jobs, transactions = batch.jobs, batch.transactions
        db.execute("BEGIN IMMEDIATE")
        try:
            if deletes:
                db.executemany("DELETE FROM warren_outbox WHERE id = ?", [(i,) for i in deletes])
            plain = [
                _row(job, now) for job, tx in zip(jobs, transactions, strict=True) if tx is None
            ]
            if plain:
                db.executemany(INSERT, plain)
            for i, tx in enumerate(transactions):
                if tx is not None and (error := _with_savepoint(db, jobs[i], tx, now)):
                    errors = errors or [None] * len(jobs)
                    errors[i] = error
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        failed = 0 if errors is None else sum(1 for e in errors if e is not None)
        self.rows += len(jobs) - failed - len(deletes)
        self._measure()
        return errors

    def _measure(self) -> None:
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(self.path + suffix).st_size
        self.disk_bytes = size

    async def _in_thread(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)


_PLACES: Final = ", ".join("?" * 8)
INSERT: Final = f"INSERT INTO warren_outbox VALUES ({_PLACES})"  # a row as _row() makes it


def _row(job: Job, now: float) -> tuple[Any, ...]:
    return (job.outbox_id, now, job.exchange, job.routing_key, job.message_id,
            job.wire_method, job.wire_header, job.body)  # fmt: skip


def _with_savepoint(
    db: sqlite3.Connection,
    job: Job,
    transaction: Callable[[sqlite3.Connection], object],
    now: float,
) -> BaseException | None:
    """The caller's transaction and the job's row, together or not at all."""
    db.execute("SAVEPOINT warren_job")
    try:
        transaction(db)
        db.execute(INSERT, _row(job, now))
    except Exception as exc:
        if isinstance(exc, sqlite3.Error) and (_disk_trouble(exc) or not db.in_transaction):
            raise  # the whole batch fails: the disk (SQLite may have rolled it all back)
        db.execute("ROLLBACK TO warren_job")
        db.execute("RELEASE warren_job")
        error = OutboxError(f"the transaction for job {job.message_id!r} failed: {exc}")
        error.__cause__ = exc
        return error
    db.execute("RELEASE warren_job")
    return None


def _check(db: sqlite3.Connection) -> str:
    """The table's pages and overflow chains checked (a row count reads no overflow page: a
    broken chain would fail the recovery halfway, again at every start); "" if sound. One
    read of the jobs' pages (~0.1 s per 100,000 jobs), and only when there are jobs."""
    table = "(warren_outbox)" if sqlite3.sqlite_version_info >= (3, 33) else ""
    rows = db.execute(f"PRAGMA quick_check{table}").fetchmany(3)
    found = [" ".join(str(row[0]).split()) for row in rows]  # SQLite's lines, one line each
    return "" if found == ["ok"] else "; ".join(found)


def _damaged(exc: sqlite3.Error) -> bool:
    """SQLite found the file malformed, or not a database at all."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _disk_trouble(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # extended: the primary code is its low byte
    primary = None if code is None else code & 0xFF
    return primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY)
