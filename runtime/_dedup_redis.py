"""The deduplication store on Redis, shared by every replica (``pip install 'warren[redis]'``).

redis-py's blocking client, run in a worker thread: its asyncio client runs on asyncio only,
and Warren runs on trio too. The calls that arrive while one round trip is out form the next
one (one pipeline, one thread hop), so a busy consumer pays about one round trip per batch,
not per message. Claims are one Lua script each (get, or set with a lease, atomically);
releases delete only a claim this store made.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any, final

import anyio

from ._dedup import Claim, DedupUnavailable
from ._exceptions import ConfigError
from ._redact import redact_url

_CLAIM = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'done' then return 2 end
return 3
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_CLAIMS = {1: Claim.CLAIMED, 2: Claim.DONE, 3: Claim.HELD}


@dataclass
class _Call:
    op: str  # claim | done | release
    key: str
    ms: int
    done: anyio.Event
    result: Any = None


@final
class RedisDedupStore:
    """Claims and marks in Redis under ``prefix`` + message_id.

    Args:
        url: ``redis://[:password@]host:port/db`` (or ``rediss://``).
        prefix: the key namespace (e.g. one per queue).
        timeout: seconds for connecting and for each round trip before the store counts as
            unavailable.
    """

    def __init__(self, url: str, *, prefix: str = "warren:dedup:", timeout: float = 2.0) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - the dev install has it
            raise ConfigError("dedup_url", "needs redis-py: pip install 'warren[redis]'") from None
        try:
            self._client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except ValueError as exc:
            raise ConfigError("dedup_url", f"not a Redis URL: {redact_url(url)} ({exc})") from None
        self._errors = (redis.RedisError, OSError)
        self._claim = self._client.register_script(_CLAIM)
        self._release = self._client.register_script(_RELEASE)
        self._prefix = prefix
        self._owner = f"claim:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pending: list[_Call] = []
        self._running = False
        self.round_trips = 0  # pipelines sent (the bench reports calls per round trip)
        self.url = redact_url(url)

    async def claim(self, key: str, lease: float) -> Claim:
        result = await self._call("claim", key, lease)
        return _CLAIMS[int(result)]

    async def done(self, key: str, retention: float) -> None:
        await self._call("done", key, retention)

    async def release(self, key: str) -> None:
        await self._call("release", key, 0.0)

    def close(self) -> None:
        self._client.close()

    async def _call(self, op: str, key: str, seconds: float) -> Any:
        call = _Call(op, self._prefix + key, max(1, int(seconds * 1000)), anyio.Event())
        self._pending.append(call)
        if not self._running:
            # the first caller sends batches until none is left; shielded, so a cancelled
            # caller never strands the others' calls (each round trip is bounded by timeout)
            self._running = True
            try:
                with anyio.CancelScope(shield=True):
                    while self._pending:
                        batch, self._pending = self._pending, []
                        await self._send(batch)
            finally:
                self._running = False
        await call.done.wait()
        if isinstance(call.result, BaseException):
            raise call.result
        return call.result

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await anyio.to_thread.run_sync(self._pipeline, batch)
        except self._errors as exc:
            error = DedupUnavailable(f"redis at {self.url}: {type(exc).__name__}: {exc}")
            results = [error] * len(batch)
        self.round_trips += 1
        for call, result in zip(batch, results, strict=True):
            call.result = (
                DedupUnavailable(f"redis: {result}") if isinstance(result, Exception) else result
            )
            call.done.set()

    def _pipeline(self, batch: list[_Call]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for call in batch:
            if call.op == "claim":
                self._claim(keys=[call.key], args=[self._owner, call.ms], client=pipe)
            elif call.op == "done":
                pipe.set(call.key, "done", px=call.ms)
            else:
                self._release(keys=[call.key], args=[self._owner], client=pipe)
        return list(pipe.execute(raise_on_error=False))
