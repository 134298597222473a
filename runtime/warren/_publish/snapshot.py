"""A publisher's statistics, read from its parts at one instant.

The counters live where they change (the ledger's books, the settlement's streaks, the
re-declaration's count, the link state, the outbox); this gathers them into one
``PublisherStatistics``, for ``Publisher.statistics()``, the metrics scrape and the health
check. Plain code, no I/O. A scrape may run on another thread while the loop changes the
books: each number is read once, and the oldest job's age reads 0 if the race is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from warren._worker.statistics import PublisherStatistics

if TYPE_CHECKING:
    from warren._outbox.outbox import Outbox
    from warren._publish.ledger import Ledger
    from warren._publish.settlement import Settlement
    from warren._worker.link_state import LinkState


def publisher_statistics(
    books: Ledger,
    link: LinkState,
    settle: Settlement,
    redeclared: int,
    outbox: Outbox | None,
    *,
    blocked: bool,
    now: float,
) -> PublisherStatistics:
    """The statistics now (``now`` by the publisher's clock)."""
    last_confirm = settle.last_confirm
    return PublisherStatistics(
        connected=link.connected,
        node=link.node,
        blocked=blocked,
        buffer_depth=books.depth,
        buffer_capacity=books.capacity,
        buffer_bytes=books.bytes,
        buffer_max_bytes=books.max_bytes,
        in_flight=len(books.inflight),
        submitted=books.submitted,
        confirmed=books.confirmed,
        returned=books.returned,
        dropped=dict(books.dropped),
        nacked=books.nacked,
        rerouted=books.rerouted,
        redeclared=redeclared,
        returned_in_a_row=settle.returned_in_a_row,
        kept=books.kept,
        outbox_jobs=0 if outbox is None else outbox.rows,
        outbox_bytes=0 if outbox is None else outbox.disk_bytes,
        outbox_recovered=0 if outbox is None else outbox.recovered,
        reconnects=link.reconnects,
        last_error=link.last_error,
        seconds_since_confirm=None if last_confirm is None else now - last_confirm,
        confirm_seconds=settle.latency.snapshot(),
        oldest_job_age=_oldest_job_age(books, now),
        disconnected_seconds=link.disconnected_seconds(),
        confirm_timeouts=link.confirm_timeouts,
        failed=link.failed,
    )


def _oldest_job_age(books: Ledger, now: float) -> float:
    # A scrape from another thread may race the loop; then this scrape reads 0.
    try:
        oldest = books.oldest()
    except (RuntimeError, IndexError, StopIteration):
        return 0.0
    return 0.0 if oldest is None else max(0.0, now - oldest.submitted_at)
