"""Prometheus metrics: the families are registered once in an injected registry; each worker
gets its own children through the ``worker`` label.

The names are a public contract (see docs/): keep them. Labels stay bounded: ``worker`` is
the worker's configured name, ``reason`` is one of a fixed set; never a job id or routing key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from collections.abc import Callable

CONFIRM_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
DROP_REASONS = ("refused", "evicted", "shutdown", "gave_up")


@dataclass(frozen=True)
class PublisherMetrics:
    """One worker's children of the publisher families."""

    submitted: Counter
    confirmed: Counter
    returned: Counter
    nacked: Counter
    reconnects: Counter
    dropped: dict[str, Counter]
    confirm_seconds: Histogram
    depth: Gauge
    capacity: Gauge
    connection_up: Gauge
    blocked: Gauge


@final
class Metrics:
    """Warren's metric families in ``registry``. Create one per registry, share it by workers.

    Passing the registry is required: a default would silently register in the process-global
    registry, which breaks tests and running two workers side by side.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        w = ["worker"]
        self._depth = Gauge("warren_buffer_depth", "Jobs accepted and not yet settled.", w,
                            registry=registry)  # fmt: skip
        self._capacity = Gauge("warren_buffer_capacity", "Most jobs the buffer holds.", w,
                               registry=registry)  # fmt: skip
        self._up = Gauge("warren_connection_up", "1 while connected to the broker.", w,
                         registry=registry)  # fmt: skip
        self._blocked = Gauge("warren_connection_blocked",
                              "1 while the broker blocks publishing (resource alarm).", w,
                              registry=registry)  # fmt: skip
        self._reconnects = Counter("warren_reconnects", "Successful reconnections.", w,
                                   registry=registry)  # fmt: skip
        self._submitted = Counter("warren_jobs_submitted", "Jobs accepted into the buffer.", w,
                                  registry=registry)  # fmt: skip
        self._confirmed = Counter("warren_jobs_confirmed", "Jobs acked by the broker.", w,
                                  registry=registry)  # fmt: skip
        self._dropped = Counter("warren_jobs_dropped", "Jobs refused or dropped, by reason.",
                                ["worker", "reason"], registry=registry)  # fmt: skip
        self._returned = Counter("warren_jobs_returned", "Jobs returned as unroutable.", w,
                                 registry=registry)  # fmt: skip
        self._nacked = Counter("warren_jobs_nacked", "Broker nacks (the job is re-sent).", w,
                               registry=registry)  # fmt: skip
        self._confirm = Histogram("warren_publish_confirm_seconds",
                                  "Time from submit to broker ack.", w,
                                  buckets=CONFIRM_BUCKETS, registry=registry)  # fmt: skip

    def publisher(
        self,
        worker: str,
        *,
        depth: Callable[[], float],
        capacity: float,
        connection_up: Callable[[], float],
        blocked: Callable[[], float],
    ) -> PublisherMetrics:
        """Children for one publishing worker; gauges read live values at scrape time."""
        depth_g = self._depth.labels(worker)
        depth_g.set_function(depth)
        cap_g = self._capacity.labels(worker)
        cap_g.set(capacity)
        up_g = self._up.labels(worker)
        up_g.set_function(connection_up)
        blocked_g = self._blocked.labels(worker)
        blocked_g.set_function(blocked)
        return PublisherMetrics(
            submitted=self._submitted.labels(worker),
            confirmed=self._confirmed.labels(worker),
            returned=self._returned.labels(worker),
            nacked=self._nacked.labels(worker),
            reconnects=self._reconnects.labels(worker),
            dropped={r: self._dropped.labels(worker, r) for r in DROP_REASONS},
            confirm_seconds=self._confirm.labels(worker),
            depth=depth_g,
            capacity=cap_g,
            connection_up=up_g,
            blocked=blocked_g,
        )
