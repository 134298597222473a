"""Prometheus metrics, read from the workers' own counters at scrape time.

Workers count in plain integers (``statistics()``); one collector registered in the injected
registry turns every worker's snapshot into metric families when Prometheus scrapes. Nothing
on the per-job path takes a metrics lock, which keeps the publisher fast.

The names are a public contract (docs/metrics.md): keep them. Labels stay bounded: ``worker``
is the worker's configured name, ``reason`` one of ``DROP_REASONS``; never a job id or a
routing key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from warren._exceptions import ConfigError
from warren._version import VERSION

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client import CollectorRegistry

    from warren._worker.statistics import ConsumerStatistics, HistogramSnapshot, PublisherStatistics

DROP_REASONS = ("refused", "evicted", "shutdown", "gave_up")


@final
class Metrics:
    """Warren's metric families in ``registry``; workers register their statistics here.

    The registry is a required argument: a default would silently register in the
    process-global registry, which breaks tests and running two workers side by side.
    One ``Metrics`` per registry (a second raises ``ValueError`` from prometheus-client).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._publishers: dict[str, Callable[[], PublisherStatistics]] = {}
        self._consumers: dict[str, Callable[[], ConsumerStatistics]] = {}
        self._running: dict[str, Callable[[], bool]] = {}
        registry.register(_Collector(self._publishers, self._consumers))

    def publishers(self) -> dict[str, PublisherStatistics]:
        """A statistics snapshot of every registered publisher, by worker name."""
        return {name: stats() for name, stats in list(self._publishers.items())}

    def consumers(self) -> dict[str, ConsumerStatistics]:
        """A statistics snapshot of every registered consumer, by worker name."""
        return {name: stats() for name, stats in list(self._consumers.items())}

    def add_publisher(
        self,
        worker: str,
        statistics: Callable[[], PublisherStatistics],
        *,
        running: Callable[[], bool] = lambda: False,
    ) -> None:
        """Export ``worker``'s statistics. ``running`` says whether that worker is still
        running: a name is one worker's while it runs (see ``add_consumer``).

        Raises:
            ConfigError: a running worker already has that name.
        """
        self._claim(worker, running)
        self._publishers[worker] = statistics

    def add_consumer(
        self,
        worker: str,
        statistics: Callable[[], ConsumerStatistics],
        *,
        running: Callable[[], bool] = lambda: False,
    ) -> None:
        """Export a consumer worker's statistics. Names are shared by publishers and
        consumers: two running workers with one name would hide each other in the metrics
        and the health checks, so that is refused; a finished worker's name can be reused.

        Raises:
            ConfigError: a running worker already has that name.
        """
        self._claim(worker, running)
        self._consumers[worker] = statistics

    def _claim(self, worker: str, running: Callable[[], bool]) -> None:
        holder = self._running.get(worker)
        if holder is not None and holder():
            raise ConfigError(
                "name",
                f"worker name {worker!r} is already used by a running worker in this process"
                " (metrics and health would mix them up); give each worker its own name",
            )
        self._publishers.pop(worker, None)
        self._consumers.pop(worker, None)
        self._running[worker] = running


@final
class _Collector:
    def __init__(
        self,
        publishers: dict[str, Callable[[], PublisherStatistics]],
        consumers: dict[str, Callable[[], ConsumerStatistics]],
    ) -> None:
        self._publishers = publishers
        self._consumers = consumers

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        info = InfoMetricFamily("warren", "The Warren runtime serving these metrics.")
        info.add_metric([], {"version": VERSION})
        families.append(info)
        by_name = {f.name: f for f in families}
        for worker, statistics in list(self._publishers.items()):
            _add_publisher(by_name, worker, statistics())
        for worker, consumer in list(self._consumers.items()):
            _add_consumer(by_name, worker, consumer())
        yield from families

    @staticmethod
    def _families() -> list[Metric]:
        w = ["worker"]
        return [
            GaugeMetricFamily("warren_buffer_depth", "Jobs accepted and not yet settled.",
                              labels=w),
            GaugeMetricFamily("warren_buffer_capacity", "Most jobs the buffer holds.", labels=w),
            GaugeMetricFamily("warren_buffer_bytes",
                              "Bytes the unsettled jobs take (payloads plus bookkeeping).",
                              labels=w),
            GaugeMetricFamily("warren_buffer_max_bytes", "Most bytes the buffer holds.",
                              labels=w),
            GaugeMetricFamily("warren_connection_up", "1 while connected to the broker.",
                              labels=w),
            GaugeMetricFamily("warren_connected_node",
                              "1 for the broker node (host:port) the worker is connected to.",
                              labels=["worker", "node"]),
            GaugeMetricFamily("warren_connection_blocked",
                              "1 while the broker blocks publishing (resource alarm).", labels=w),
            CounterMetricFamily("warren_reconnects", "Successful reconnections.", labels=w),
            CounterMetricFamily("warren_disconnected_seconds",
                                "Time spent without a broker connection.", labels=w),
            CounterMetricFamily("warren_confirm_timeouts",
                                "Connections dropped because a publish stayed unconfirmed.",
                                labels=w),
            GaugeMetricFamily("warren_buffer_oldest_job_age_seconds",
                              "How long the oldest unsettled job has waited.", labels=w),
            CounterMetricFamily("warren_jobs_submitted", "Jobs accepted into the buffer.",
                                labels=w),
            CounterMetricFamily("warren_jobs_confirmed", "Jobs acked by the broker.", labels=w),
            CounterMetricFamily("warren_jobs_dropped", "Jobs refused or dropped, by reason.",
                                labels=["worker", "reason"]),
            CounterMetricFamily("warren_jobs_returned", "Jobs returned as unroutable.", labels=w),
            CounterMetricFamily("warren_jobs_nacked", "Broker nacks (the job is re-sent).",
                                labels=w),
            CounterMetricFamily("warren_jobs_rerouted",
                                "Jobs returned unroutable to a route the topology declares, "
                                "re-sent after declaring it again.", labels=w),
            CounterMetricFamily("warren_jobs_kept",
                                "Jobs left in the outbox at a stop; the next start sends them.",
                                labels=w),
            GaugeMetricFamily("warren_outbox_jobs", "Jobs stored in the outbox file.",
                              labels=w),
            GaugeMetricFamily("warren_outbox_bytes", "The outbox's size on disk (with its WAL).",
                              labels=w),
            CounterMetricFamily("warren_outbox_recovered",
                                "Jobs found in the outbox at start and sent again.", labels=w),
            CounterMetricFamily("warren_topology_redeclared",
                                "Times the topology was declared again on a live connection "
                                "(a declared queue had gone).", labels=w),
            HistogramMetricFamily("warren_publish_confirm_seconds",
                                  "Time from submit to broker ack.", labels=w),
            CounterMetricFamily("warren_deliveries", "Deliveries settled, by outcome.",
                                labels=["worker", "outcome"]),
            GaugeMetricFamily("warren_handlers_in_flight", "Handlers running now.", labels=w),
            CounterMetricFamily("warren_dedup_unavailable",
                                "Deduplication store calls that failed (store unreachable).",
                                labels=w),
            HistogramMetricFamily("warren_handler_seconds", "Handler run time.", labels=w),
        ]  # fmt: skip


def _add_publisher(families: dict[str, Metric], worker: str, s: PublisherStatistics) -> None:
    def add(name: str, value: float) -> None:
        families[name].add_metric([worker], value)  # type: ignore[attr-defined]

    add("warren_buffer_depth", s.buffer_depth)
    add("warren_buffer_capacity", s.buffer_capacity)
    add("warren_buffer_bytes", s.buffer_bytes)
    add("warren_buffer_max_bytes", s.buffer_max_bytes)
    add("warren_connection_up", 1.0 if s.connected else 0.0)
    add("warren_connection_blocked", 1.0 if s.blocked else 0.0)
    _add_node(families, worker, s.node)
    add("warren_reconnects", s.reconnects)
    add("warren_disconnected_seconds", s.disconnected_seconds)
    add("warren_confirm_timeouts", s.confirm_timeouts)
    add("warren_buffer_oldest_job_age_seconds", s.oldest_job_age)
    add("warren_jobs_submitted", s.submitted)
    add("warren_jobs_confirmed", s.confirmed)
    add("warren_jobs_returned", s.returned)
    add("warren_jobs_nacked", s.nacked)
    add("warren_jobs_rerouted", s.rerouted)
    add("warren_topology_redeclared", s.redeclared)
    add("warren_jobs_kept", s.kept)
    add("warren_outbox_jobs", s.outbox_jobs)
    add("warren_outbox_bytes", s.outbox_bytes)
    add("warren_outbox_recovered", s.outbox_recovered)
    dropped = families["warren_jobs_dropped"]
    for reason in DROP_REASONS:
        dropped.add_metric([worker, reason], s.dropped.get(reason, 0))  # type: ignore[attr-defined]
    _add_histogram(families["warren_publish_confirm_seconds"], worker, s.confirm_seconds)


def _add_consumer(families: dict[str, Metric], worker: str, s: ConsumerStatistics) -> None:
    families["warren_connection_up"].add_metric([worker], 1.0 if s.connected else 0.0)  # type: ignore[attr-defined]
    families["warren_reconnects"].add_metric([worker], s.reconnects)  # type: ignore[attr-defined]
    _add_node(families, worker, s.node)
    families["warren_disconnected_seconds"].add_metric([worker], s.disconnected_seconds)  # type: ignore[attr-defined]
    families["warren_handlers_in_flight"].add_metric([worker], s.in_flight)  # type: ignore[attr-defined]
    families["warren_dedup_unavailable"].add_metric([worker], s.dedup_unavailable)  # type: ignore[attr-defined]
    for outcome, n in s.outcomes.items():
        families["warren_deliveries"].add_metric([worker, outcome], n)  # type: ignore[attr-defined]
    _add_histogram(families["warren_handler_seconds"], worker, s.handler_seconds)


def _add_node(families: dict[str, Metric], worker: str, node: str | None) -> None:
    if node is not None:  # bounded: one of the configured URLs' host:port
        families["warren_connected_node"].add_metric([worker, node], 1.0)  # type: ignore[attr-defined]


def _add_histogram(family: Metric, worker: str, h: HistogramSnapshot) -> None:
    cumulative, buckets = 0, []
    for bound, n in zip((*h.bounds, float("inf")), h.counts, strict=True):
        cumulative += n
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    family.add_metric([worker], buckets, h.total)  # type: ignore[attr-defined]
