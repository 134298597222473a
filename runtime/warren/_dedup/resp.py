"""A Redis connection on the event loop's own sockets: pipelines of commands, RESP2 replies.

Only what the deduplication store needs (a handful of commands, sent in batches), on anyio,
so it runs on asyncio and trio without a thread hop per batch. redis-py's asyncio client is
asyncio-only, and its blocking client in a worker thread cost ~37 µs per command here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import anyio

from warren._exceptions import ConfigError

if TYPE_CHECKING:
    from anyio.abc import ByteStream


class RespError(Exception):
    """An error reply (``-ERR ...``) to one command of a pipeline."""


class RespProtocolError(Exception):
    """The server sent something that is not RESP2: the connection is unusable."""


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str, setting: str) -> RedisAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ConfigError(setting, "not a Redis URL (redis://[:password@]host[:port][/db])")
        try:
            port = parts.port or 6379
            db = int(parts.path.lstrip("/") or 0)
        except ValueError:
            raise ConfigError(setting, "not a Redis URL (bad port or db number)") from None
        return cls(parts.hostname, port, db, unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None,
                   parts.scheme == "rediss")  # fmt: skip


def encode(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespConnection:
    """One connection; ``pipeline()`` sends commands in one write and reads their replies."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._pos = 0

    @classmethod
    async def open(cls, address: RedisAddress) -> RespConnection:
        stream: ByteStream
        if address.tls:
            stream = await anyio.connect_tcp(address.host, address.port, tls=True)
        else:
            stream = await anyio.connect_tcp(address.host, address.port)
        conn = cls(stream)
        setup: list[bytes] = []
        if address.password is not None:
            auth = (address.username, address.password) if address.username else (
                address.password,)  # fmt: skip
            setup.append(encode("AUTH", *auth))
        if address.db:
            setup.append(encode("SELECT", address.db))
        if setup:
            for reply in await conn.pipeline(setup):
                if isinstance(reply, RespError):
                    await conn.aclose()
                    raise reply
        return conn

    async def pipeline(self, commands: list[bytes]) -> list[Any]:
        """Send encoded commands; return one reply each (a ``RespError`` for an error)."""
        await self._stream.send(b"".join(commands))
        return [await self._reply() for _ in commands]

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n", self._pos)
            if end >= 0:
                line = bytes(self._buffer[self._pos : end])
                self._pos = end + 2
                return line
            await self._fill()

    async def _exactly(self, n: int) -> bytes:
        while len(self._buffer) - self._pos < n + 2:
            await self._fill()
        data = bytes(self._buffer[self._pos : self._pos + n])
        self._pos += n + 2
        return data

    async def _fill(self) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += await self._stream.receive()

    async def _reply(self) -> Any:
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else await self._exactly(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [await self._reply() for _ in range(n)]
        raise RespProtocolError(f"unexpected reply {line[:40]!r}")
