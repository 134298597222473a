"""The side-effect publisher: a worker whose loop selects over jobs and connection events.

``submit()`` puts a job in a bounded buffer and returns at once; the worker loop takes jobs
from it only while the connection can take them, and a lost connection is just another case
of that loop. A job leaves the buffer only when the broker acks it; nacked jobs and jobs in
flight when the connection died are sent again (same ``message_id``: at-least-once). Every
accepted job ends up confirmed, returned (unroutable) or counted as dropped with a reason:
``submitted == confirmed + returned + dropped(after accept) + depth`` at all times.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final, Self, final

import anyio
from anyio import ClosedResourceError, WouldBlock

from ._amqp import (
    AmqpConnection,
    Blocked,
    ChannelClosed,
    Confirmed,
    Connected,
    ConnectFailed,
    ConnectionEvent,
    ConnectionLost,
    GaveUp,
    Nacked,
    PublishEncoder,
    Returned,
    Unblocked,
)
from ._backoff import Backoff
from ._config import PublisherConfig
from ._exceptions import (
    AccessRefused,
    BufferFull,
    ConnectionGaveUp,
    InvalidJob,
    JobDropped,
    JobReturned,
    PublisherClosed,
)
from ._job import Job, MessageIds, Outcome, encode_body
from ._link_state import LinkState
from ._select import Closed, Default, Received, Timeout, select
from ._statistics import LatencyHistogram, PublisherStatistics
from ._worker import raise_single

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from ._amqp import Topology
    from ._metrics import Metrics

_CANCEL_CHECK_EVERY = 64
log = logging.getLogger("warren.publisher")

_NO_DEADLINE: Final = math.inf


@final
class Publisher:
    """Buffers side-effect jobs and publishes them with confirms across any number of outages.

    Use as ``async with Publisher(config, metrics=Metrics(registry), name="api") as pub``.
    Leaving the block flushes what is buffered (up to ``config.flush_timeout``), closes the
    connection cleanly, and counts what could not be flushed as dropped (reason
    ``shutdown``). Not thread-safe: call it from the event loop it runs in.

    Raises (out of the ``async with``):
        ConnectionGaveUp: reconnect attempts ran out; carries the number of jobs lost.
        AccessRefused: the broker refused the credentials (not retried).
    """

    def __init__(
        self,
        config: PublisherConfig | None = None,
        *,
        metrics: Metrics,
        name: str = "publisher",
        topology: Topology | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config or PublisherConfig()
        self._name = name
        self._clock = clock
        self._events_tx, self._events_rx = anyio.create_memory_object_stream[
            ConnectionEvent | _Wake
        ](math.inf)
        # The job memory-stream is the buffer's FIFO; capacity is enforced by _depth, which
        # also counts jobs in flight and jobs waiting to be re-sent.
        self._jobs_tx, self._jobs_rx = anyio.create_memory_object_stream[Job](math.inf)
        self._backoff = backoff or Backoff(
            base=self._config.backoff_base, cap=self._config.backoff_cap
        )
        self._conn = AmqpConnection(
            self._config, self._events_tx, name=name, topology=topology, backoff=self._backoff
        )
        # After a nack the broker is refusing (e.g. a full queue with reject-publish): wait
        # before re-sending, longer each time, instead of hammering it.
        self._nack_streak = 0
        self._resend_at = -math.inf
        self._retry: deque[Job] = deque()
        # Jobs handed to the connection and not yet settled, in order. The I/O thread keeps
        # max_in_flight of them unconfirmed at the broker and queues the rest, so it can
        # refill its window on every ack without a round trip through this loop.
        self._inflight: dict[Job, None] = {}
        self._handoff_limit = 2 * self._config.max_in_flight
        self._depth = 0
        self._session = 0
        self._link = LinkState(self._clock)
        self._blocked = False
        self._closing = False
        self._deadline = _NO_DEADLINE
        self._last_confirm: float | None = None
        self._room = anyio.Event()
        self._full_reported = False
        self._flushed = anyio.Event()
        self._drained = anyio.Event()  # set while the buffer is empty
        self._connected_event = anyio.Event()
        self._counts = {"submitted": 0, "confirmed": 0, "returned": 0, "nacked": 0}
        self._dropped = {"refused": 0, "evicted": 0, "shutdown": 0, "gave_up": 0}
        self._confirm_latency = LatencyHistogram()
        self._new_id = MessageIds()
        self._calls = 0
        self._encode = PublishEncoder(persistent=self._config.persistent)
        metrics.add_publisher(name, self.statistics)
        self._stack: AsyncExitStack | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        tg = await stack.enter_async_context(anyio.create_task_group())
        self._stack = stack
        tg.start_soon(self._run, name=f"warren-publisher-{self._name}")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._stack is not None
        try:
            self._begin_close()
        finally:
            try:
                await self._stack.__aexit__(et, e, tb)
            except BaseExceptionGroup as group:
                raise_single(group)

    async def aclose(self) -> None:
        """Stop accepting, flush (up to ``flush_timeout``), close the connection cleanly."""
        self._begin_close()
        with anyio.CancelScope(shield=True):
            await self._flushed.wait()

    def _begin_close(self) -> None:
        if not self._closing:
            self._closing = True
            self._deadline = self._clock() + self._config.flush_timeout
            self._jobs_tx.close()
            self._room.set()
            with contextlib.suppress(ClosedResourceError):  # the loop already ended
                self._events_tx.send_nowait(_WAKE)

    # -- submitting ----------------------------------------------------------------------

    def submit(
        self,
        payload: object,
        *,
        routing_key: str,
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """Accept a job into the buffer and return its ``message_id`` at once.

        ``payload`` is bytes (sent as is) or anything JSON-serializable; ``content_type``
        overrides the one Warren sets (``application/octet-stream`` or ``application/json``).

        Raises:
            InvalidJob: the payload is not serializable or over ``max_job_bytes``.
            BufferFull: the buffer is full and the policy is ``drop-newest`` or ``block``
                (with ``block``, ``await enqueue()`` waits for room instead).
            PublisherClosed: shutdown has begun.
        """
        job = self._make_job(payload, routing_key, exchange, headers, message_id, content_type)
        self._offer(job)
        return job.message_id

    async def enqueue(
        self,
        payload: object,
        *,
        routing_key: str,
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """Like ``submit``, but under the ``block`` policy wait for room instead of refusing.

        A scheduling point only when it waits; a cancellation point then, and at least once
        every 64 calls (not on every call: that check is costly, see ``_wait_for_room``).
        """
        await self._wait_for_room()
        job = self._make_job(payload, routing_key, exchange, headers, message_id, content_type)
        self._offer(job)
        return job.message_id

    async def publish(
        self,
        payload: object,
        *,
        routing_key: str,
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """Enqueue, then wait until the broker confirmed the job; return its ``message_id``.

        Raises:
            JobReturned: unroutable. JobDropped: evicted, or unflushed at shutdown.
            plus what ``submit`` raises. Cancelling the wait does not withdraw the job.
        """
        await self._wait_for_room()
        job = self._make_job(payload, routing_key, exchange, headers, message_id, content_type)
        job.waiter = outcome = Outcome()
        self._offer(job)
        await outcome.wait()
        return job.message_id

    async def _wait_for_room(self) -> None:
        # A scheduling point only when it must wait: a full yield per job halves throughput
        # for producers that enqueue in a tight loop, and the bounded buffer guarantees such a
        # loop waits (and so yields) within buffer_size jobs. A cancellation point every
        # _CANCEL_CHECK_EVERY calls: asking the backend per call was a seventh of the loop's
        # time in the publish benchmark.
        self._calls = (self._calls + 1) % _CANCEL_CHECK_EVERY
        if not self._calls:
            await anyio.lowlevel.checkpoint_if_cancelled()
        if self._config.overflow == "block":
            while self._depth >= self._config.buffer_size and not self._closing:
                await self._room.wait()

    def _offer(self, job: Job) -> None:
        """Apply the overflow policy, then accept ``job``."""
        if self._depth >= self._config.buffer_size:
            policy = self._config.overflow
            if not self._full_reported:
                # once per episode, not once per refused job: a long outage must not flood logs
                self._full_reported = True
                log.warning(
                    "buffer.full worker=%s capacity=%d policy=%s connected=%s",
                    self._name, self._config.buffer_size, policy, self._link.connected,
                )  # fmt: skip
            if policy == "drop-oldest":
                self._evict_oldest()
            else:
                self._drop_count("refused")
                hint = "; await enqueue() waits for room" if policy == "block" else ""
                raise BufferFull(self._config.buffer_size, hint)
        self._accept(job)

    def _make_job(
        self,
        payload: object,
        routing_key: str,
        exchange: str | None,
        headers: Mapping[str, Any] | None,
        message_id: str | None,
        content_type: str | None = None,
    ) -> Job:
        if self._closing:
            raise PublisherClosed(f"publisher {self._name!r} is closed to new jobs")
        # 63 characters are at most 252 UTF-8 bytes: encode only longer keys to measure them
        if message_id is not None and (not isinstance(message_id, str) or not message_id):
            raise InvalidJob("message_id must be a non-empty str")
        body, encoded_as = encode_body(payload, max_bytes=self._config.max_job_bytes)
        content_type = content_type or encoded_as
        exchange = self._config.exchange if exchange is None else exchange
        message_id = message_id or self._new_id()
        wire = self._encode(
            exchange=exchange,
            routing_key=routing_key,
            message_id=message_id,
            content_type=content_type,
            headers=headers,
            body_size=len(body),
        )
        return Job(
            body=body,
            exchange=exchange,
            routing_key=routing_key,
            message_id=message_id,
            submitted_at=self._clock(),
            wire=wire,
        )

    def _accept(self, job: Job) -> None:
        try:
            self._jobs_tx.send_nowait(job)
        except ClosedResourceError:
            raise PublisherClosed(f"publisher {self._name!r} is closed to new jobs") from None
        self._depth += 1
        if self._drained.is_set():
            self._drained = anyio.Event()
        self._counts["submitted"] += 1

    def _evict_oldest(self) -> None:
        """Drop the oldest unsettled job: waiting for a re-send, then handed to the
        connection (it may still reach the broker; a late confirm for it is ignored), then
        waiting in the stream."""
        if self._retry:
            victim = self._retry.popleft()
        elif self._inflight:
            victim = next(iter(self._inflight))
            del self._inflight[victim]
        else:
            victim = self._jobs_rx.receive_nowait()
        self._settle_dropped([victim], "evicted")

    # -- state ---------------------------------------------------------------------------

    def statistics(self) -> PublisherStatistics:
        """Counters and state now; cheap enough to call from a health check."""
        c = self._counts
        link = self._link
        now = self._clock()
        since = None if self._last_confirm is None else now - self._last_confirm
        return PublisherStatistics(
            connected=link.connected,
            blocked=self._blocked,
            buffer_depth=self._depth,
            buffer_capacity=self._config.buffer_size,
            in_flight=len(self._inflight),
            submitted=c["submitted"],
            confirmed=c["confirmed"],
            returned=c["returned"],
            dropped=dict(self._dropped),
            nacked=c["nacked"],
            reconnects=link.reconnects,
            last_error=link.last_error,
            seconds_since_confirm=since,
            confirm_seconds=self._confirm_latency.snapshot(),
            oldest_job_age=self._oldest_job_age(now),
            disconnected_seconds=link.disconnected_seconds(),
            confirm_timeouts=link.confirm_timeouts,
            failed=link.failed,
        )

    def _oldest_job_age(self, now: float) -> float:
        # Jobs are settled roughly in submit order: the oldest is at the head of the re-send
        # queue, of the in-flight jobs, or of the stream (peeked: anyio 4's buffer deque).
        # A scrape from another thread may race the loop; then this scrape reads 0.
        try:
            heads = [self._retry[0].submitted_at] if self._retry else []
            if self._inflight:
                heads.append(next(iter(self._inflight)).submitted_at)
            waiting = self._jobs_rx._state.buffer  # anyio 4 internals (pinned), as in _select
            if waiting:
                heads.append(waiting[0].submitted_at)
        except (RuntimeError, IndexError, StopIteration):
            return 0.0
        return max(0.0, now - min(heads)) if heads else 0.0

    async def wait_connected(self) -> None:
        """Return once the first connection is up (topology declared)."""
        await self._connected_event.wait()

    async def wait_flushed(self) -> None:
        """Return once the buffer is empty (every accepted job settled)."""
        while self._depth:
            await self._drained.wait()

    # -- the worker loop -----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._conn.run, name=f"warren-amqp-{self._name}")
                await self._serve()
                await self._conn.aclose()
        finally:
            self._link.connected = False
            for end in (self._jobs_tx, self._jobs_rx, self._events_tx, self._events_rx):
                end.close()
            self._flushed.set()

    async def _serve(self) -> None:
        handoff_limit = self._handoff_limit
        jobs_open = True
        while True:
            if self._closing:
                if self._depth == 0:
                    return
                remaining = self._deadline - self._clock()
                if remaining <= 0:
                    self._drop_unflushed()
                    return
            else:
                remaining = math.inf
            can_send = (
                self._link.connected and not self._blocked and len(self._inflight) < handoff_limit
            )
            if can_send and self._retry and (wait := self._resend_at - self._clock()) > 0:
                # paused after a nack; new jobs wait too, so order is kept
                match await select(events=self._events_rx, timeout=min(wait, remaining)):
                    case Received(_, event):
                        self._on_event(event)
                continue
            if can_send and self._retry:
                match await select(events=self._events_rx, default=True):
                    case Default():
                        self._send_batch(None)
                    case Received(_, event):
                        self._on_event(event)
                continue
            timeout = None if remaining == math.inf else remaining
            if can_send and jobs_open:
                result = await select(events=self._events_rx, jobs=self._jobs_rx, timeout=timeout)
            else:
                result = await select(events=self._events_rx, timeout=timeout)
            match result:
                case Received("jobs", job):
                    self._send_batch(job)
                case Received("events", event):
                    self._on_event(event)
                case Closed("jobs"):
                    jobs_open = False
                case Timeout():
                    pass
                case _:  # pragma: no cover - the events stream is never closed while we run
                    raise AssertionError(f"unexpected select result {result!r}")

    def _send_batch(self, first: Job | None) -> None:
        room = self._handoff_limit - len(self._inflight)
        batch: list[Job] = []
        if first is not None:
            batch.append(first)
            room -= 1
        retry = self._retry
        while room > 0 and retry:
            batch.append(retry.popleft())
            room -= 1
        receive = self._jobs_rx.receive_nowait
        while room > 0:
            try:
                batch.append(receive())
            except (WouldBlock, anyio.EndOfStream):
                break
            room -= 1
        inflight = self._inflight
        for job in batch:
            inflight[job] = None
        self._conn.publish(self._session, batch)
        # If that connection is already gone, a ConnectionLost for it is on its way and the
        # batch goes back to the front of the queue then.

    def _on_event(self, event: ConnectionEvent | _Wake) -> None:
        match event:
            case Confirmed(session, jobs):
                self._on_confirmed(session, jobs)
            case Connected(session, url):
                self._session = session
                if self._link.up():
                    log.warning("connection.reconnected worker=%s url=%s", self._name, url)
                else:
                    log.info("connection.up worker=%s url=%s", self._name, url)
                self._connected_event.set()
            case ConnectionLost(session, kind, detail, clean, code):
                self._on_lost(session, kind, detail, clean, code)
            case Nacked(session, jobs):
                requeue = [j for j in jobs if self._inflight.pop(j, 0) is None]
                self._retry.extendleft(reversed(requeue))
                self._nack_streak += 1
                self._resend_at = self._clock() + self._backoff.delay(self._nack_streak)
                self._counts["nacked"] += len(requeue)
                log.warning("publish.nacked worker=%s jobs=%d", self._name, len(requeue))
            case Returned(session, job, code, text):
                if self._inflight.pop(job, 0) is None:
                    self._settle(1)
                    self._counts["returned"] += 1
                    if job.waiter is not None:
                        job.waiter.fail(JobReturned(job.message_id, code, text))
                    log.warning(
                        "publish.returned worker=%s exchange=%r routing_key=%r reply=%d %s",
                        self._name, job.exchange, job.routing_key, code, text,
                    )  # fmt: skip
            case Blocked(_, reason):
                self._blocked = True
                log.warning("connection.blocked worker=%s reason=%s", self._name, reason)
            case Unblocked():
                self._blocked = False
                log.info("connection.unblocked worker=%s", self._name)
            case ChannelClosed(_, code, text):
                self._link.last_error = f"channel closed by broker: {code} {text}"
                log.error("channel.closed worker=%s reply=%d %s", self._name, code, text)
            case ConnectFailed(attempt, url, detail, fatal):
                self._link.last_error = detail
                if fatal:
                    log.error("connection.refused worker=%s url=%s %s", self._name, url, detail)
                    self._link.fail("the broker refused the credentials")
                    raise AccessRefused(url, detail)
                log.warning(
                    "connection.failed worker=%s url=%s attempt=%d %s",
                    self._name, url, attempt, detail,
                )  # fmt: skip
            case GaveUp(attempts, last_error):
                self._link.fail(f"gave up reconnecting after {attempts} attempts")
                lost = self._depth
                self._drop_all("gave_up")
                log.critical(
                    "connection.gave_up worker=%s attempts=%d jobs_lost=%d last_error=%s",
                    self._name, attempts, lost, last_error,
                )  # fmt: skip
                raise ConnectionGaveUp(attempts, lost, last_error)
            case _:
                pass  # _WAKE: re-evaluate the loop (shutdown began)

    def _on_confirmed(self, session: int, jobs: tuple[Job, ...]) -> None:
        now = self._clock()
        inflight = self._inflight
        observe = self._confirm_latency.observe
        n = 0
        for job in jobs:
            if inflight.pop(job, 0) is not None:
                continue  # stale: already settled or re-queued
            n += 1
            observe(now - job.submitted_at)
            if job.waiter is not None:
                job.waiter.confirm()
        if n:
            self._nack_streak = 0
            self._counts["confirmed"] += n
            self._last_confirm = now
            self._settle(n)

    def _on_lost(self, session: int, kind: str, detail: str, clean: bool, code: int) -> None:
        if session != self._session:
            # a connection that never became ready; ConnectFailed-like, nothing in flight
            self._link.last_error = f"{kind}: {detail}"
            log.warning("connection.lost worker=%s kind=%s %s", self._name, kind, detail)
            return
        self._link.down(kind, detail)
        self._blocked = False
        pending = list(self._inflight)
        self._inflight.clear()
        self._retry.extendleft(reversed(pending))
        log.warning(
            "connection.lost worker=%s kind=%s clean=%s in_flight=%d buffered=%d %s",
            self._name, kind, clean, len(pending), self._depth, detail,
        )  # fmt: skip

    def _settle(self, n: int) -> None:
        self._depth -= n
        # hysteresis: an evict-then-accept cycle at capacity must not log twice per job
        cap = self._config.buffer_size
        if self._full_reported and self._depth < cap - max(1, cap // 10):
            self._full_reported = False
            log.info("buffer.room worker=%s depth=%d", self._name, self._depth)
        if self._depth == 0:
            self._drained.set()
        if not self._room.is_set():
            self._room.set()
            self._room = anyio.Event()

    def _drop_count(self, reason: str, n: int = 1) -> None:
        self._dropped[reason] += n

    def _settle_dropped(self, jobs: list[Job], reason: str) -> None:
        for job in jobs:
            if job.waiter is not None:
                job.waiter.fail(JobDropped(job.message_id, reason))
        if jobs:
            self._drop_count(reason, len(jobs))
            self._settle(len(jobs))

    def _drop_all(self, reason: str) -> None:
        jobs = list(self._inflight) + list(self._retry)
        self._inflight.clear()
        self._retry.clear()
        while True:
            try:
                jobs.append(self._jobs_rx.receive_nowait())
            except (WouldBlock, anyio.EndOfStream):
                break
        self._settle_dropped(jobs, reason)

    def _drop_unflushed(self) -> None:
        lost = self._depth
        self._drop_all("shutdown")
        log.error(
            "shutdown.unflushed worker=%s jobs_dropped=%d flush_timeout=%.1fs",
            self._name, lost, self._config.flush_timeout,
        )  # fmt: skip


@final
class _Wake:
    """Posted on the event stream to make the loop look again (shutdown began)."""


_WAKE: Final = _Wake()
