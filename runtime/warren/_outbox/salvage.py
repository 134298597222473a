"""``warren outbox salvage``: every job a damaged outbox still holds, copied to a new one.

SQLite's reader stops at the first bad page, so the damaged file is read with
``_outbox_pages``, without SQLite:

1. The schema (the b-tree on page 1) gives the root page of ``warren_outbox``.
2. That table's b-tree is walked from its root. A page that does not read is skipped and
   reported with the ids its parent's keys bound it to: a *hole*. A row whose overflow
   chain breaks is lost alone, and reported by its id.
3. If there are holes, or the schema did not read, every page the walk did not reach and
   the freelist does not hold is scanned for table leaves whose cells decode as outbox rows
   (the leaves under a damaged interior or header page). A scanned row is kept only inside
   a hole, once per id: elsewhere the walk read what is true.

Rows keep their id, message id, exchange, routing key and wire bytes, so the new file is
sent as the old one would have been, and deduplicating consumers drop repeats.

The damaged file and its WAL are only read (no SQLite connection, so no checkpoint, no
``-shm``). A file a publisher holds, or an SQLite connection in another process has open,
is refused; a shared lock keeps publishers out while it is read. The new file is built
under a temporary name and linked into place when complete, never over an existing file.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import os
import sqlite3
import stat
import struct
import tempfile
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, final

from warren._exceptions import OutboxError
from warren._outbox.outbox import CREATE_TABLE, INSERT, SCHEMA_VERSION
from warren._outbox.pages import (
    TABLE_INTERIOR,
    TABLE_LEAF,
    DamagedPage,
    DatabaseFile,
    TreePage,
    interior_cell,
    record,
)

if TYPE_CHECKING:
    from collections.abc import Callable

EXIT_LOST: Final = 3  # salvaged what read; some pages or rows did not
_SQLITE_LOCKS: Final = (0x40000000, 512)  # SQLite's pending, reserved and shared lock bytes
_FLOCK: Final = "hhqqi4x"  # Linux's struct flock: type, whence, start, len, pid
_BATCH: Final = 500

Row = tuple[int, float, str, str, str, bytes, bytes, bytes]  # as the outbox's INSERT takes it
Bounds = tuple[int | None, int | None]  # the ids a page may hold, None: unbounded


@final
@dataclass(frozen=True, slots=True)
class Unreadable:
    """A page, or rows of it, that could not be read, and the job ids it may have held."""

    page: int
    reason: str
    ids: Bounds | None  # None: not known (found by scanning, or the schema's page)
    rows: int = 0  # rows of the page that did not read; 0: the page itself did not
    lost: int | None = None  # at most this many jobs lost: ids in range not copied

    def describe(self) -> str:
        where = f"page {self.page}"
        if self.ids is not None:
            low, high = self.ids
            where += f", ids {1 if low is None else low}..{'end' if high is None else high}"
        most = "" if self.lost is None else f"; at most {_jobs(self.lost)} lost"
        return f"unreadable: {where}: {self.reason}{most}"


@final
@dataclass(frozen=True, slots=True)
class SalvageReport:
    """What ``salvage`` copied, and what it could not read."""

    source: str
    destination: str
    jobs: int  # copied to the destination
    ids: tuple[int, int] | None  # the lowest and highest id copied
    scanned: int  # of them, found by scanning pages the table's tree no longer reaches
    unreadable: tuple[Unreadable, ...]
    notes: tuple[str, ...]
    other_tables: tuple[str, ...]  # an application's tables in the same file: not copied
    page_size: int
    pages: int
    wal_frames: int

    @property
    def complete(self) -> bool:
        """Every page and row read: nothing was lost."""
        return not self.unreadable

    def lines(self) -> list[str]:
        out = [f"read {self.source!r}: page size {self.page_size}, {self.pages} pages,"
               f" {self.wal_frames} of them from its WAL"]  # fmt: skip
        out += [f"note: {note}" for note in self.notes]
        out += [u.describe() for u in self.unreadable]
        if self.scanned:
            out.append(f"scanned: {self.scanned} jobs found on pages the table's tree no"
                       " longer reaches")  # fmt: skip
        if self.other_tables:
            out.append(f"not copied: the file's other tables ({', '.join(self.other_tables)});"
                       " salvage copies the outbox's jobs only")  # fmt: skip
        span = "" if self.ids is None else f" (ids {self.ids[0]}..{self.ids[1]})"
        pages = sum(1 for u in self.unreadable if not u.rows)
        rows = sum(u.rows for u in self.unreadable)
        verdict = ("every page read, nothing lost" if self.complete else
                   f"unreadable: {pages} page{'s' * (pages != 1)}, {rows} row{'s' * (rows != 1)};"
                   " the jobs on them that no scan found are lost (listed above)")  # fmt: skip
        out.append(f"salvaged {self.jobs} jobs{span} to {self.destination!r}; {verdict}")
        return out


def _jobs(count: int) -> str:
    return f"{count} job{'s' * (count != 1)}"


def salvage(source: str, destination: str) -> SalvageReport:
    """Copy every job ``source`` still holds to a new outbox file ``destination``.

    Raises:
        OutboxError: refused before anything was written; the message names the path: a
            source that is missing, not a file, in use by another process, or holds no
            outbox; a destination that exists or whose directory does not.
        OSError: reading the source or writing the destination failed.
    """
    _check_paths(source, destination)
    fd = _open_file(source, "DAMAGED")
    wal_fd = -1
    try:
        _refuse_if_in_use(source, fd)
        with contextlib.suppress(FileNotFoundError):
            wal_fd = _open_file(source + "-wal", "the WAL beside DAMAGED")
        db = DatabaseFile(fd, wal_fd if wal_fd >= 0 else None)
        return _salvage(db, source, destination)
    finally:
        if wal_fd >= 0:
            os.close(wal_fd)
        os.close(fd)  # and the lock with it


def _salvage(db: DatabaseFile, source: str, destination: str) -> SalvageReport:
    if db.header_ok and (version := int.from_bytes(db.header[60:64], "big")) > SCHEMA_VERSION:
        raise OutboxError(f"DAMAGED {source!r} was written by a newer Warren (schema {version})")
    where, name = os.path.split(os.path.abspath(destination))
    fd, partial = tempfile.mkstemp(dir=where, prefix=f".{name}.", suffix=".partial")
    os.close(fd)
    try:
        out = sqlite3.connect(partial, isolation_level=None)
        try:
            out.execute(CREATE_TABLE)
            out.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            out.execute("BEGIN")
            reader = _Reader(db, source, lambda rows: out.executemany(INSERT, rows))
            other_tables = reader.read()
            if not db.header_ok and not reader.ids:
                raise OutboxError(f"DAMAGED {source!r}: no outbox in it (not an SQLite file,"
                                  " and no page of it holds a job)")  # fmt: skip
            out.execute("COMMIT")
        finally:
            out.close()
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(partial, destination)
        except FileExistsError:
            raise OutboxError(f"--to {destination!r}: already exists") from None
    finally:
        os.unlink(partial)
    _fsync_directory(destination)
    ids = (min(reader.ids), max(reader.ids)) if reader.ids else None
    return SalvageReport(source=source, destination=destination, jobs=len(reader.ids), ids=ids,
                         scanned=reader.scanned, unreadable=tuple(reader.unreadable),
                         notes=tuple(db.notes + _twice(reader.twice)),
                         other_tables=tuple(other_tables),
                         page_size=db.page_size, pages=db.page_count,
                         wal_frames=db.wal_frames)  # fmt: skip


@final
class _Reader:
    """Reads the outbox's rows out of ``db`` and hands them to ``keep`` in batches."""

    def __init__(self, db: DatabaseFile, source: str, keep: Callable[[list[Row]], object]) -> None:
        self._db = db
        self._source = source
        self._keep = keep
        self.ids: set[int] = set()
        self.visited: set[int] = set()
        self.unreadable: list[Unreadable] = []
        self.scanned = 0
        self.twice = 0  # rows found by scanning whose id was already copied
        self._tables: dict[str, int] = {}

    def read(self) -> list[str]:
        """Read every job that reads; return the names of the file's other tables."""
        root = None
        if not self._db.header_ok:
            reason = "the header and the schema: not an SQLite header; every page was scanned"
            self.unreadable.append(Unreadable(1, reason, None))
        else:
            for exc, _ in self._walk(1, self._schema_leaf):
                self.unreadable.append(Unreadable(exc.page, f"(the schema) {exc.reason}", None))
            root = self._tables.pop("warren_outbox", None)
            if root is None and not self.unreadable:
                raise OutboxError(f"DAMAGED {self._source!r}: no outbox in it (no"
                                  " warren_outbox table)")  # fmt: skip
        holes: list[Bounds] | None = None  # None: the whole table is one
        if root is not None:
            holes = []
            for exc, bounds in self._walk(root, self._outbox_leaf):
                holes.append(bounds)
                self.unreadable.append(Unreadable(exc.page, exc.reason, bounds))
        if holes is None or holes:
            self._scan(holes)
        copied = sorted(self.ids)
        self.unreadable = [_count(u, copied) for u in self.unreadable]
        return sorted(self._tables)

    def _walk(
        self, root: int, leaf: Callable[[TreePage, Bounds], None]
    ) -> list[tuple[DamagedPage, Bounds]]:
        """Visit the table b-tree under ``root``, each leaf with the ids it may hold; the
        pages that did not read, with theirs."""
        failures: list[tuple[DamagedPage, Bounds]] = []
        stack: list[tuple[int, Bounds]] = [(root, (None, None))]
        while stack:
            number, bounds = stack.pop()
            try:
                if number in self.visited:
                    raise DamagedPage(number, "reached twice: the tree has a loop")
                self.visited.add(number)
                page = self._db.tree_page(number)
                if page.kind == TABLE_LEAF:
                    leaf(page, bounds)
                elif page.kind == TABLE_INTERIOR:
                    stack.extend(reversed(_children(page, bounds)))
                else:
                    raise DamagedPage(number, f"an index page (type {page.kind}) in a table")
            except DamagedPage as exc:
                failures.append((exc, bounds))
        return failures

    def _schema_leaf(self, page: TreePage, bounds: Bounds) -> None:
        for offset in page.cells:
            try:
                _, payload, chain = self._db.leaf_cell(page, offset)
                kind, name, _, root, _ = record(payload)
            except (DamagedPage, ValueError) as exc:
                self.unreadable.append(Unreadable(page.number, f"(the schema) {exc}", None))
                continue
            self.visited.update(chain)
            if kind == "table" and isinstance(name, str) and isinstance(root, int):
                self._tables[name] = root

    def _outbox_leaf(self, page: TreePage, bounds: Bounds) -> None:
        rows, nameless = [], []
        for offset in page.cells:
            try:
                row, chain = self._job(page, offset)
                if not _within(row[0], bounds):
                    raise DamagedPage(page.number, f"row {row[0]} is outside its page's range")
            except DamagedPage as exc:
                if exc.rowid is None:  # which of the page's ids: not known
                    nameless.append(exc.reason)
                else:
                    entry = Unreadable(exc.page, exc.reason, (exc.rowid,) * 2, rows=1, lost=1)
                    self.unreadable.append(entry)
                continue
            self.visited.update(chain)
            rows.append(row)
        for reason in dict.fromkeys(nameless):
            count = nameless.count(reason)
            entry = Unreadable(page.number, reason, bounds, rows=count, lost=count)
            self.unreadable.append(entry)
        self._store(rows)

    def _scan(self, holes: list[Bounds] | None) -> None:
        """Look for the outbox's rows in the ``holes`` on every page the walk did not reach
        and the freelist does not hold (``None``: the whole table is a hole)."""
        free = self._db.free_pages()
        for number in self._db.stored_pages():
            if number in self.visited or number in free:
                continue
            try:
                page = self._db.tree_page(number)
            except DamagedPage:
                continue
            if page.kind != TABLE_LEAF:
                continue
            rows, failed = [], []
            for offset in page.cells:
                try:
                    row, _ = self._job(page, offset)
                except DamagedPage as exc:
                    failed.append(exc)
                    continue
                if holes is None or any(_within(row[0], hole) for hole in holes):
                    rows.append(row)
            if rows:  # an outbox leaf: its cells that did not read were jobs
                stored = self._store(rows)
                self.scanned += stored
                self.twice += len(rows) - stored
                self.unreadable += [Unreadable(e.page, e.reason, None, rows=1) for e in failed]

    def _job(self, page: TreePage, offset: int) -> tuple[Row, list[int]]:
        rowid, payload, chain = self._db.leaf_cell(page, offset)
        try:
            values = record(payload)
        except ValueError as exc:
            raise DamagedPage(page.number, f"row {rowid} does not decode: {exc}", rowid) from None
        match values:
            case [None, int() | float() as at, str() as ex, str() as key, str() as mid,
                  bytes() as method, bytes() as header, bytes() as body]:  # fmt: skip
                return (rowid, float(at), ex, key, mid, method, header, body), chain
        raise DamagedPage(page.number, f"row {rowid} does not have an outbox row's columns", rowid)

    def _store(self, rows: list[Row]) -> int:
        fresh = [row for row in rows if row[0] not in self.ids]
        self.ids.update(row[0] for row in fresh)
        for i in range(0, len(fresh), _BATCH):
            self._keep(fresh[i : i + _BATCH])
        return len(fresh)


def _count(entry: Unreadable, copied: list[int]) -> Unreadable:
    """A page's entry with at most how many jobs it lost: the ids in its range that were
    not copied (known when the range is bounded)."""
    if entry.rows or entry.ids is None:
        return entry
    low, high = entry.ids
    if low is None or high is None:
        return entry
    found = bisect.bisect_right(copied, high) - bisect.bisect_left(copied, low)
    return replace(entry, lost=high - low + 1 - found)


def _twice(count: int) -> list[str]:
    if not count:
        return []
    return [f"{count} rows found by scanning carry an id already copied (stale copies): skipped"]


def _children(page: TreePage, bounds: Bounds) -> list[tuple[int, Bounds]]:
    """An interior page's children with the ids each may hold; its keys must ascend within
    ``bounds``."""
    low, high = bounds
    children: list[tuple[int, Bounds]] = []
    for offset in page.cells:
        child, key = interior_cell(page, offset)
        if not _within(key, (low, high)):
            raise DamagedPage(page.number, "its keys are out of order")
        children.append((child, (low, key)))
        low = key + 1
    children.append((page.right, (low, high)))
    return children


def _within(rowid: int, bounds: Bounds) -> bool:
    low, high = bounds
    return (low is None or rowid >= low) and (high is None or rowid <= high)


def _check_paths(source: str, destination: str) -> None:
    if not os.path.lexists(source):
        raise OutboxError(f"DAMAGED {source!r}: no such file")
    if not os.path.isfile(source):
        raise OutboxError(f"DAMAGED {source!r}: not a file")
    if os.path.lexists(destination):
        raise OutboxError(f"--to {destination!r}: already exists (salvage never overwrites a"
                          " file; name a new one)")  # fmt: skip
    parent = os.path.dirname(os.path.abspath(destination))
    if not os.path.isdir(parent):
        raise OutboxError(f"--to {destination!r}: no such directory {parent!r}")
    for suffix in ("-wal", "-shm", "-journal"):
        if os.path.lexists(destination + suffix):
            raise OutboxError(f"--to {destination!r}: a stale {destination + suffix!r} is"
                              " beside it (SQLite would apply it to the new file)")  # fmt: skip


def _open_file(path: str, what: str) -> int:
    """``path`` opened read-only; refused unless it is a regular file (without O_NONBLOCK
    the open of a FIFO waits for a writer forever; a directory fails every read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutboxError(f"{what} {path!r}: not a file")
    return fd


def _refuse_if_in_use(source: str, fd: int) -> None:
    """Refuse a file a publisher holds, or an SQLite connection in another process has open;
    keep a shared lock, so no publisher opens it while it is read."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutboxError(f"DAMAGED {source!r} is in use by another process (a publisher"
                          " holds its lock): stop it, then salvage") from None  # fmt: skip
    start, length = _SQLITE_LOCKS
    query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
    held = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    if held[0] != fcntl.F_UNLCK:
        raise OutboxError(f"DAMAGED {source!r} is open in another process (pid {held[4]} holds"
                          " an SQLite lock on it): stop it, then salvage")  # fmt: skip


def _fsync_directory(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
