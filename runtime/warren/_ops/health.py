"""Liveness and readiness of a process's workers, from their statistics.

Liveness (``/healthz``): the event loop answers (the check is served from it) and no worker
has failed for good (gave up reconnecting, or the broker refused its credentials). A failed
worker makes the process exit anyway; liveness says so while it is flushing on the way out.

Readiness (``/readyz``): every worker can take work without losing any, i.e.

- a **publisher** is ready while it is connected, **or** disconnected with room left in its
  buffer. Riding out an outage in the buffer is the publisher's job: taking a replica out of
  the load balancer the moment the broker hiccups would turn a partition into an outage of
  the API. Once the buffer is full, new side effects would be refused (or block, or evict),
  so the replica stops being ready and traffic goes to replicas that still have room. It is
  not ready either while its jobs keep coming back unroutable (``RETURNS_UNREADY`` returned
  in a row, no confirm since): it answers "queued" for side effects that go nowhere. (A
  queue deleted under it is declared again first; only what that cannot heal counts.)
- a **consumer** is ready unless it failed. It takes no client traffic, so there is nothing
  to steer away from it, and marking every consumer unready during a broker outage would
  only stall rolling updates. Its connection state is still reported.

A process with no worker registered yet is not ready (it is still starting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

if TYPE_CHECKING:
    from warren._ops.metrics import Metrics
    from warren._worker.statistics import ConsumerStatistics, PublisherStatistics


RETURNS_UNREADY: Final = 10


@final
@dataclass(frozen=True, slots=True)
class Health:
    live: bool
    ready: bool
    workers: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"live": self.live, "ready": self.ready, "workers": self.workers}


def check(metrics: Metrics) -> Health:
    workers: dict[str, dict[str, Any]] = {}
    for name, p in metrics.publishers().items():
        workers[name] = _publisher(p)
    for name, c in metrics.consumers().items():
        workers[name] = _consumer(c)
    live = all(w["failed"] is None for w in workers.values())
    ready = bool(workers) and all(w["ready"] for w in workers.values())
    return Health(live=live, ready=ready, workers=workers)


def _publisher(s: PublisherStatistics) -> dict[str, Any]:
    room = s.buffer_depth < s.buffer_capacity and s.buffer_bytes < s.buffer_max_bytes
    return {
        "kind": "publisher",
        "node": s.node,
        "ready": s.failed is None
        and (s.connected or room)
        and s.returned_in_a_row < RETURNS_UNREADY,
        "connected": s.connected,
        "blocked": s.blocked,
        "buffer_depth": s.buffer_depth,
        "buffer_capacity": s.buffer_capacity,
        "oldest_job_age_seconds": round(s.oldest_job_age, 3),
        "seconds_since_confirm": None
        if s.seconds_since_confirm is None
        else round(s.seconds_since_confirm, 3),
        "returned_in_a_row": s.returned_in_a_row,
        "last_error": s.last_error,
        "failed": s.failed,
    }


def _consumer(s: ConsumerStatistics) -> dict[str, Any]:
    return {
        "kind": "consumer",
        "node": s.node,
        "ready": s.failed is None,
        "connected": s.connected,
        "in_flight": s.in_flight,
        "last_error": s.last_error,
        "failed": s.failed,
    }
