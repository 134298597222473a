"""What workers count, and the frozen snapshots they hand out (``statistics()``).

Workers count in plain integers and lock-free histograms on their own event loop; the
metrics collector, the health checks and users read the snapshots. Kept apart from the
workers and from ``_metrics`` so that neither imports the other.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Mapping

CONFIRM_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip


@final
@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Per-bucket counts (not cumulative; the last bucket is +Inf) and the sum of values."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        return sum(self.counts)


@final
class LatencyHistogram:
    """A lock-free histogram for one event loop: ``observe`` is a bisect and two adds."""

    __slots__ = ("_bounds", "_counts", "_total")

    def __init__(self, bounds: tuple[float, ...] = CONFIRM_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._total += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._bounds, tuple(self._counts), self._total)


HANDLER_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@final
@dataclass(frozen=True, slots=True)
class PublisherStatistics:
    """A snapshot of one publisher's counters (the metrics read the same numbers)."""

    connected: bool
    node: str | None
    """The broker node (host:port) it is connected to, None while down."""
    blocked: bool
    buffer_depth: int
    buffer_capacity: int
    buffer_bytes: int
    """What the unsettled jobs cost: payloads plus ~512 bytes each."""
    buffer_max_bytes: float
    in_flight: int
    submitted: int
    confirmed: int
    returned: int
    dropped: Mapping[str, int]
    nacked: int
    rerouted: int
    """Jobs that came back unroutable to a declared route and were re-sent after the
    topology was declared again."""
    redeclared: int
    """Times the topology was declared again on a live connection (a queue deleted)."""
    returned_in_a_row: int
    """Jobs returned for good since the last confirm (sustained: the publisher is unready)."""
    kept: int
    """Jobs left in the outbox at a stop (shutdown or gave up): the next start sends them."""
    outbox_jobs: int
    """Rows in the outbox file now (0 without an outbox)."""
    outbox_bytes: int
    """The outbox's size on disk, its WAL included."""
    outbox_recovered: int
    """Jobs found in the outbox at start and handed back to the buffer."""
    reconnects: int
    last_error: str | None
    seconds_since_confirm: float | None
    confirm_seconds: HistogramSnapshot
    oldest_job_age: float
    """Seconds the oldest unsettled job has waited (0 when the buffer is empty)."""
    disconnected_seconds: float
    confirm_timeouts: int
    failed: str | None
    """Why the worker stopped for good (gave up reconnecting, credentials refused)."""


@final
@dataclass(frozen=True, slots=True)
class ConsumerStatistics:
    connected: bool
    node: str | None
    """The broker node (host:port) it is connected to, None while down."""
    reconnects: int
    in_flight: int
    outcomes: Mapping[str, int]
    dedup_unavailable: int
    """Deduplication store calls that failed (unreachable): see ``dedup_on_error``."""
    handler_seconds: HistogramSnapshot
    last_error: str | None
    disconnected_seconds: float
    failed: str | None
