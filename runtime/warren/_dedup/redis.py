"""The deduplication store on Redis, shared by every replica.

It speaks RESP on the event loop's own sockets (``_resp``), so it runs on asyncio and trio
alike with no thread hop. The calls that arrive while one round trip is out form the next
one (one pipeline, one write), so a busy consumer pays about one round trip per batch, not
per message. A claim is a set-if-absent with a lease; releases delete only a claim this
store made.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio

from warren._common.redact import redact_url
from warren._dedup.resp import RedisAddress, RespConnection, RespError, RespProtocolError, encode
from warren._dedup.store import Claim, DedupUnavailable, check_keys

if TYPE_CHECKING:
    from collections.abc import Sequence

# One command per batch: a claim is SET NX with the lease, else what holds the key
# (0 claimed, 1 done, 2 held; gone in between counts as held: another try later is safe).
_CLAIM = (
    "local r = {} for i, k in ipairs(KEYS) do "
    "if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then r[i] = 0 "
    "elseif redis.call('GET', k) == 'done' then r[i] = 1 else r[i] = 2 end end return r"
)
_DONE = "for _, k in ipairs(KEYS) do redis.call('SET', k, 'done', 'PX', ARGV[1]) end return #KEYS"
_RELEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_CLAIMS = (Claim.CLAIMED, Claim.DONE, Claim.HELD)
_FAILURES = (OSError, anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError,
             TimeoutError, RespProtocolError, RespError, ValueError)  # fmt: skip


@dataclass
class _Call:
    op: str  # claim | done | release
    keys: list[bytes]
    ms: int
    done: anyio.Event
    result: Any = None


@final
class RedisDedupStore:
    """Claims and marks in Redis under ``prefix`` + key.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS).
        prefix: the key namespace.
        timeout: seconds for connecting and for each round trip before the store counts as
            unavailable (the next call connects again).
    """

    def __init__(self, url: str, *, prefix: str = "warren:dedup:", timeout: float = 2.0) -> None:
        self._address = RedisAddress.parse(url, "dedup_url")
        self._timeout = timeout
        self._prefix = prefix
        self._owner = f"claim:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}".encode()
        self._conn: RespConnection | None = None
        self._pending: list[_Call] = []
        self._running = False
        self.round_trips = 0  # pipelines sent (the bench reports calls per round trip)
        self.url = redact_url(url)

    async def claim(self, keys: Sequence[str], lease: float) -> list[Claim]:
        check_keys(keys)
        if not keys:
            return []
        return await self._call("claim", keys, lease)  # type: ignore[no-any-return]

    async def done(self, keys: Sequence[str], retention: float) -> None:
        check_keys(keys)
        if keys:
            await self._call("done", keys, retention)

    async def release(self, key: str) -> None:
        await self._call("release", [key], 0.0)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()

    async def _call(self, op: str, keys: Sequence[str], seconds: float) -> Any:
        prefix = self._prefix
        call = _Call(op, [(prefix + key).encode() for key in keys], max(1, int(seconds * 1000)),
                     anyio.Event())  # fmt: skip
        self._pending.append(call)
        if not self._running:
            # the first caller sends batches until none is left; shielded, so a cancelled
            # caller never strands the others' calls (each round trip is bounded by timeout)
            self._running = True
            try:
                with anyio.CancelScope(shield=True):
                    while self._pending:
                        # one turn of the loop first: the handlers that are ready to call
                        # join this round trip instead of waiting for the next
                        await anyio.lowlevel.cancel_shielded_checkpoint()
                        batch, self._pending = self._pending, []
                        try:
                            await self._send(batch)
                        finally:  # whatever went wrong, no caller waits forever
                            for stranded in batch:
                                if not stranded.done.is_set():
                                    stranded.result = DedupUnavailable("redis: round trip failed")
                                    stranded.done.set()
            finally:
                self._running = False
        await call.done.wait()
        if isinstance(call.result, BaseException):
            raise call.result
        return call.result

    async def _send(self, batch: list[_Call]) -> None:
        commands: list[bytes] = []
        for call in batch:
            n = len(call.keys)
            if call.op == "claim":
                commands.append(encode(b"EVAL", _CLAIM, n, *call.keys, self._owner, call.ms))
            elif call.op == "done":
                commands.append(encode(b"EVAL", _DONE, n, *call.keys, call.ms))
            else:  # rare (a failed handler): compare-and-delete
                commands.append(encode(b"EVAL", _RELEASE, 1, call.keys[0], self._owner))
        try:
            with anyio.fail_after(self._timeout):
                if self._conn is None:
                    self._conn = await RespConnection.open(self._address)
                replies = await self._conn.pipeline(commands)
        except _FAILURES as exc:
            await self._drop()
            error = DedupUnavailable(f"redis at {self.url}: {type(exc).__name__}: {exc}")
            for call in batch:
                call.result = error
                call.done.set()
            return
        self.round_trips += 1
        for call, reply in zip(batch, replies, strict=True):
            call.result = _result(call, reply)
            call.done.set()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await conn.aclose()


def _result(call: _Call, reply: Any) -> Any:
    """One call's result from its reply: claims, None, or the error to raise."""
    if isinstance(reply, RespError):
        return DedupUnavailable(f"redis: {reply}")
    if call.op != "claim":
        return None
    codes = range(len(_CLAIMS))
    if (
        not isinstance(reply, list)
        or len(reply) != len(call.keys)
        or any(not isinstance(code, int) or code not in codes for code in reply)
    ):
        return DedupUnavailable(f"redis: unexpected claim reply {reply!r:.80}")
    return [_CLAIMS[code] for code in reply]
