"""An SQLite file read page by page, trusting nothing in it: what outbox salvage stands on.

SQLite's own reader stops at the first damaged page on its way down a b-tree, and a file
whose header page is damaged (or that is shorter than its header says) it does not open at
all. This module reads the file format directly (sqlite.org/fileformat2.html): the pages,
with the committed frames of a write-ahead log beside the file laid over them as SQLite
would read them; b-tree pages, their cells, records and overflow chains. Every offset is
checked against its page before it is used; what does not check out raises ``DamagedPage``
naming the page, so a caller can skip it and read on.

It only reads: ``os.pread`` on descriptors the caller opened read-only. No lock, no
checkpoint, no ``-shm`` file: the damaged file stays exactly as it was.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from warren._exceptions import OutboxError

if TYPE_CHECKING:
    from collections.abc import Iterator

TABLE_INTERIOR: Final = 5
TABLE_LEAF: Final = 13
_HEADER_SIZES: Final = {2: 12, 5: 12, 10: 8, 13: 8}  # b-tree page type -> page header bytes
_MAGIC: Final = b"SQLite format 3\x00"
_WAL_MAGIC: Final = (0x377F0682, 0x377F0683)  # little- or big-endian checksums
_FRAME_HEADER: Final = 24
_GUESSES: Final = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)


class DamagedPage(OutboxError):
    """A page, or a cell on it, that does not check out. ``rowid`` is the row's id when
    the cell got that far (its overflow chain is what broke), else None."""

    def __init__(self, page: int, reason: str, rowid: int | None = None) -> None:
        super().__init__(f"page {page}: {reason}")
        self.page = page
        self.reason = reason
        self.rowid = rowid


@final
@dataclass(frozen=True, slots=True)
class TreePage:
    """One b-tree page whose header and cell pointers are within bounds."""

    number: int
    kind: int
    cells: tuple[int, ...]  # offsets of the cells, in key order
    right: int  # an interior page's right-most child (0 on a leaf)
    data: bytes
    valid: int  # bytes of it that are in the file (the rest: cut off, zero-filled)


@final
class DatabaseFile:
    """The pages of an SQLite file as SQLite would read them (a committed WAL frame wins
    over the file's copy of its page), plus what was odd about the file (``notes``)."""

    def __init__(self, fd: int, wal_fd: int | None) -> None:
        self._fd = fd
        self._wal_fd = wal_fd
        self.file_size = os.fstat(fd).st_size
        self.header = os.pread(fd, 100, 0)
        self.notes: list[str] = []
        header_size = _header_page_size(self.header)
        wal_size, self._frames, wal_pages = self._read_wal(header_size)
        if wal_fd is not None and (offset := self._frames.get(1)) is not None:
            self.header = os.pread(wal_fd, 100, offset)  # the newer copy of page 1
            header_size = _header_page_size(self.header)
        self.header_ok = header_size is not None
        self.page_size = header_size or wal_size or self._guess_page_size()
        self.usable = self.page_size - (self.header[20] if self.header_ok else 0)
        self.wal_frames = len(self._frames)
        self.file_pages = -(-self.file_size // self.page_size)
        said = (
            _u32(self.header, 28)
            if self.header_ok and self.header[24:28] == self.header[92:96]
            else 0
        )
        self.page_count = max(self.file_pages, wal_pages or said, max(self._frames, default=0))
        if said > self.file_pages and wal_pages <= self.file_pages:
            self.notes.append(f"the file is truncated: {self.file_size} bytes, {self.file_pages}"
                              f" of the {said} pages its header counts")  # fmt: skip

    def stored(self, number: int) -> bool:
        """Page ``number`` is in the file or in its WAL (not only counted by a header)."""
        return 1 <= number <= min(self.file_pages, self.page_count) or number in self._frames

    def stored_pages(self) -> Iterator[int]:
        """The pages that are in the file or in its WAL, ascending: what a scan reads. Not
        up to ``page_count``: a damaged header (or a crafted WAL) can count billions."""
        in_file = range(1, min(self.file_pages, self.page_count) + 1)
        yield from in_file
        yield from sorted(number for number in self._frames if number not in in_file)

    def page(self, number: int) -> bytes:
        """Page ``number`` (1-based), whole.

        Raises:
            DamagedPage: not in the database, or cut short by the end of the file.
        """
        data, valid = self._read(number)
        if valid < self.page_size:
            raise DamagedPage(number, f"cut short by the end of the file (truncated) after"
                              f" {valid} of its {self.page_size} bytes")  # fmt: skip
        return data

    def _read(self, number: int) -> tuple[bytes, int]:
        """Page ``number`` zero-filled to its size, and how many of its bytes are real."""
        if (offset := self._frames.get(number)) is not None and self._wal_fd is not None:
            return os.pread(self._wal_fd, self.page_size, offset), self.page_size
        if not 1 <= number <= self.page_count:
            raise DamagedPage(number, f"no such page (the database has {self.page_count})")
        data = os.pread(self._fd, self.page_size, (number - 1) * self.page_size)
        if not data:
            raise DamagedPage(number, "past the end of the file (truncated)")
        return data.ljust(self.page_size, b"\x00"), len(data)

    def tree_page(self, number: int) -> TreePage:
        """Page ``number`` as a b-tree page, its header and cell pointers checked (a page
        cut short by the end of the file still reads: its cells that are whole do too)."""
        data, valid = self._read(number)
        start = 100 if number == 1 else 0
        kind = data[start]
        if kind not in _HEADER_SIZES:
            raise DamagedPage(number, f"not a b-tree page (type byte {kind:#04x})")
        pointers = start + _HEADER_SIZES[kind]
        count = _u16(data, start + 3)
        content = _u16(data, start + 5) or 65536
        if pointers + 2 * count > min(content, self.usable) and count:
            raise DamagedPage(number, f"{count} cells do not fit the page")
        if pointers + 2 * count > valid:
            raise DamagedPage(number, "cut short by the end of the file (truncated)")
        cells = tuple(_u16(data, pointers + 2 * i) for i in range(count))
        if any(not content <= c < self.usable for c in cells):
            raise DamagedPage(number, "a cell pointer points outside the cell content area")
        right = _u32(data, start + 8) if kind in (2, 5) else 0
        return TreePage(number, kind, cells, right, data, valid)

    def leaf_cell(self, page: TreePage, offset: int) -> tuple[int, bytes, list[int]]:
        """A table leaf's cell: its rowid, its whole payload, the overflow pages it used."""
        try:
            size, pos = varint(page.data, offset)
            rowid, pos = varint(page.data, pos)
        except IndexError:
            raise DamagedPage(
                page.number, f"the cell at offset {offset} runs off the page"
            ) from None
        if pos > page.valid:
            raise DamagedPage(page.number, "a row is cut off by the end of the file (truncated)")
        rowid -= (rowid >> 63) << 64  # a signed 64-bit integer
        local = _local_size(size, self.usable)
        end = pos + local + (4 if local < size else 0)
        if end > self.usable:
            raise DamagedPage(page.number, f"row {rowid} runs off the page", rowid)
        if end > page.valid:
            raise DamagedPage(page.number, f"row {rowid} is cut off by the end of the file"
                              " (truncated)", rowid)  # fmt: skip
        payload = page.data[pos : pos + local]
        if local == size:
            return rowid, payload, []
        chunks, chain = [payload], list[int]()
        remaining, previous, number = size - local, page.number, _u32(page.data, pos + local)
        while remaining > 0:
            if not 2 <= number <= self.page_count or number in chain:
                where = "overflow" if chain else "row"
                raise DamagedPage(previous, f"{where} chain of row {rowid} points to page"
                                  f" {number}, which cannot be in it", rowid)  # fmt: skip
            try:
                data = self.page(number)
            except DamagedPage as exc:
                reason = f"overflow page of row {rowid}: {exc.reason}"
                raise DamagedPage(number, reason, rowid) from None
            chain.append(number)
            chunks.append(data[4 : 4 + min(remaining, self.usable - 4)])
            remaining -= self.usable - 4
            previous, number = number, _u32(data, 0)
        return rowid, b"".join(chunks), chain

    def free_pages(self) -> set[int]:
        """The pages on the freelist (old content, not rows), as far as it reads."""
        if not self.header_ok:
            return set()
        free: set[int] = set()
        trunk, total = _u32(self.header, 32), _u32(self.header, 36)
        while trunk and trunk not in free and len(free) <= total:
            try:
                data = self.page(trunk)
            except DamagedPage:
                break
            free.add(trunk)
            leaves = min(_u32(data, 4), self.usable // 4 - 2)
            leaf_pages = (_u32(data, 8 + 4 * i) for i in range(leaves))
            free.update(number for number in leaf_pages if self.stored(number))
            trunk = _u32(data, 0)
        return free

    def _read_wal(self, header_size: int | None) -> tuple[int, dict[int, int], int]:
        """(its page size, page -> offset of its last committed frame, the database's page
        count at the last commit), as SQLite recovers a WAL: frames up to the first bad one."""
        if self._wal_fd is None:
            return 0, {}, 0
        head = os.pread(self._wal_fd, 32, 0)
        if len(head) < 32 or struct.unpack(">I", head[:4])[0] not in _WAL_MAGIC:
            if head:
                self.notes.append("the WAL beside it has no valid header: ignored")
            return 0, {}, 0
        magic, _, size, _, salt1, salt2, sum1, sum2 = struct.unpack(">8I", head)
        big = magic & 1 == 1
        sums = _checksum(head[:24], (0, 0), big)
        if (size not in _GUESSES and size != 65536) or sums != (sum1, sum2):
            self.notes.append("the WAL beside it has a damaged header: ignored")
            return 0, {}, 0
        if header_size is not None and size != header_size:
            self.notes.append("the WAL beside it has another page size: ignored")
            return 0, {}, 0
        committed: dict[int, int] = {}
        pending: dict[int, int] = {}
        pages, offset = 0, 32
        while len(frame := os.pread(self._wal_fd, _FRAME_HEADER + size, offset)) == (
            _FRAME_HEADER + size
        ):
            number, commit, s1, s2, c1, c2 = struct.unpack(">6I", frame[:_FRAME_HEADER])
            if (s1, s2) != (salt1, salt2):
                break
            sums = _checksum(frame[_FRAME_HEADER:], _checksum(frame[:8], sums, big), big)
            if sums != (c1, c2):
                break
            pending[number] = offset + _FRAME_HEADER
            if commit:
                committed.update(pending)
                pending.clear()
                pages = commit
            offset += _FRAME_HEADER + size
        if pending or os.fstat(self._wal_fd).st_size > offset:
            self.notes.append("the WAL ends in a transaction that never committed or was torn:"
                              " ignored, as SQLite ignores it")  # fmt: skip
        return size, committed, pages

    def _guess_page_size(self) -> int:
        """The header is gone: the page size under which most pages read as b-tree pages."""
        best, best_score = _GUESSES[0], -1
        for size in _GUESSES:
            score = 0
            for offset in range(size, min(self.file_size, size * 2000), size):
                data = os.pread(self._fd, 12, offset)
                count, content = _u16(data, 3), _u16(data, 5) or 65536
                if data[0] in _HEADER_SIZES and count > 0 and 8 + 2 * count <= content <= size:
                    score += 1
            if score > best_score:
                best, best_score = size, score
        self.notes.append(f"the header is damaged: read with a page size of {best} (guessed)")
        return best


def varint(data: bytes, pos: int) -> tuple[int, int]:
    """SQLite's variable-length integer at ``pos``: (value, the position after it)."""
    value = 0
    for i in range(8):
        byte = data[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    return (value << 8) | data[pos + 8], pos + 9


def interior_cell(page: TreePage, offset: int) -> tuple[int, int]:
    """A table interior cell: (its left child page, its key: the largest rowid under it)."""
    try:
        key, end = varint(page.data, offset + 4)
    except IndexError:
        raise DamagedPage(page.number, f"the cell at offset {offset} runs off the page") from None
    if end > page.valid:
        raise DamagedPage(page.number, "its cells are cut off by the end of the file (truncated)")
    return _u32(page.data, offset), key - ((key >> 63) << 64)


def record(payload: bytes) -> list[object]:
    """The values of one record, every length checked against the payload.

    Raises:
        ValueError: not a well-formed record (with UTF-8 text).
    """
    try:
        size, pos = varint(payload, 0)
        types = []
        while pos < size:
            kind, pos = varint(payload, pos)
            types.append(kind)
    except IndexError:
        raise ValueError("its header runs off the payload") from None
    if pos != size:
        raise ValueError("its header does not end where it says")
    values: list[object] = []
    for kind in types:
        length = _serial_length(kind)
        field = payload[pos : pos + length]
        if len(field) != length:
            raise ValueError("its values run off the payload")
        pos += length
        if kind == 0:
            values.append(None)
        elif kind <= 6:
            values.append(int.from_bytes(field, "big", signed=True))
        elif kind == 7:
            values.append(struct.unpack(">d", field)[0])
        elif kind in (8, 9):
            values.append(kind - 8)
        elif kind % 2 == 0:
            values.append(field)
        else:
            values.append(field.decode())  # UnicodeDecodeError is a ValueError
    if pos != len(payload):
        raise ValueError("its values do not fill the payload")
    return values


def _serial_length(kind: int) -> int:
    if kind in (10, 11):
        raise ValueError(f"reserved serial type {kind}")
    if kind >= 12:
        return (kind - 12) // 2
    return (0, 1, 2, 3, 4, 6, 8, 8, 0, 0)[kind]


def _local_size(payload: int, usable: int) -> int:
    """Bytes of a table leaf cell's payload stored on the page itself (the rest overflows)."""
    most = usable - 35
    if payload <= most:
        return payload
    least = (usable - 12) * 32 // 255 - 23
    local = least + (payload - least) % (usable - 4)
    return local if local <= most else least


def _header_page_size(header: bytes) -> int | None:
    """The page size an SQLite header states; None: not a valid header."""
    if len(header) < 100 or not header.startswith(_MAGIC):
        return None
    size = _u16(header, 16)
    size = 65536 if size == 1 else size
    if size < 512 or size & (size - 1) or size - header[20] < 480:
        return None
    return size


def _checksum(data: bytes, sums: tuple[int, int], big: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    s0, s1 = sums
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _u16(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


def _u32(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 4], "big")
