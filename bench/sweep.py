"""Throughput across payload sizes: publish and consume, Warren vs raw pika (and amqplib),
with MB/s, the publishing process's peak RSS, and memory per buffered large job."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench import consume, memory, publish
from warren import PublisherConfig

if TYPE_CHECKING:
    from collections.abc import Callable

# (payload bytes, messages per round): each round moves tens of MB at the large sizes
SIZES = ((256, 10_000), (4_096, 10_000), (16_384, 5_000), (65_536, 3_000), (122_880, 2_000))
BUFFERED_JOBS = 10_000
BUFFERED_SIZES = (16_384, 65_536)
RSS_FROM = 65_536  # payload bytes from which the peak RSS is reported against the window
_MB = 1_000_000


@dataclass
class Size:
    """Medians for one payload size."""

    size: int
    messages: int
    publish: dict[str, float] = field(default_factory=dict)
    consume: dict[str, float] = field(default_factory=dict)
    peak_rss: float | None = None  # bytes Warren's publishing process grew by, at its peak
    window: int = 0  # bytes of the in-flight window (max_in_flight jobs, or the byte cap)


@dataclass
class Sweep:
    sizes: list[Size]
    buffered: dict[int, float]  # payload size -> bytes per buffered job


def _status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux: clear_refs 5) and return the RSS now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status("VmRSS")


def measure(rounds: int, amqplib: bool) -> Sweep:
    publishers: dict[str, Callable[[int, int], float]] = {
        "warren": publish.warren,
        "pika": publish.raw_pika,
    }
    consumers: dict[str, Callable[[int], float]] = {
        "warren": consume.warren,
        "pika": consume.raw_pika,
    }
    if amqplib:
        publishers["amqplib"] = publish.amqplib
        consumers["amqplib"] = consume.amqplib
    window_cap = PublisherConfig().buffer_max_bytes  # the ledger counts in-flight bytes too
    out: list[Size] = []
    for size, n in SIZES:
        pub: dict[str, list[float]] = {name: [] for name in publishers}
        con: dict[str, list[float]] = {name: [] for name in consumers}
        peaks: list[float] = []
        for r in range(rounds):
            for name, run in publishers.items():  # interleaved, as in the main table
                publish.purge(publish.QUEUE)
                before = _reset_peak() if name == "warren" else None
                pub[name].append(run(n, size))
                peak = _status("VmHWM")
                if before is not None and peak is not None:
                    peaks.append(max(0, peak - before))
            for name, drain in consumers.items():
                consume.fill(n, size)
                con[name].append(drain(n))
            print(f"round {r + 1} {size:>7} B  publish "
                  + "  ".join(f"{k} {v[-1]:,.0f}" for k, v in pub.items())
                  + "  consume "
                  + "  ".join(f"{k} {v[-1]:,.0f}" for k, v in con.items()),
                  flush=True)  # fmt: skip
        out.append(Size(
            size=size, messages=n,
            publish={k: statistics.median(v) for k, v in pub.items()},
            consume={k: statistics.median(v) for k, v in con.items()},
            peak_rss=statistics.median(peaks) if peaks else None,
            window=min(publish.WINDOW * size, window_cap),
        ))  # fmt: skip
    publish.purge(publish.QUEUE)
    consume.cleanup()
    buffered = {size: memory.measure(BUFFERED_JOBS, size) for size in BUFFERED_SIZES}
    return Sweep(out, buffered)


def _rate(rate: float, size: int) -> str:
    text = f"{rate:,.0f}"
    return text + (f" ({rate * size / _MB:,.0f} MB/s)" if size >= 16_384 else "")


def table(sweep: Sweep) -> str:
    """The sweep as markdown: a row per size and path, ratios against raw pika (target
    >= 0.9x at every size) and amqplib, then memory."""
    amqplib = "amqplib" in sweep.sizes[0].publish
    head = "| payload | path | Warren msgs/s | raw pika msgs/s |"
    rule = "| --- | --- | --- | --- |"
    if amqplib:
        head += " amqplib msgs/s |"
        rule += " --- |"
    head += " **Warren / raw pika** (>= 0.9x) |"
    rule += " --- |"
    if amqplib:
        head += " Warren / amqplib |"
        rule += " --- |"
    lines = [head, rule]
    for s in sweep.sizes:
        for path, rates in (("publish", s.publish), ("consume", s.consume)):
            row = f"| {size_name(s.size)} | {path} | {_rate(rates['warren'], s.size)} | "
            row += f"{_rate(rates['pika'], s.size)} |"
            if amqplib:
                row += f" {_rate(rates['amqplib'], s.size)} |"
            row += f" **{rates['warren'] / rates['pika']:.2f}x** |"
            if amqplib:
                row += f" {rates['warren'] / rates['amqplib']:.2f}x |"
            lines.append(row)
    lines += ["", "| memory | result | target |", "| --- | --- | --- |"]
    for s in sweep.sizes:
        if s.peak_rss is None or s.size < RSS_FROM:  # small jobs: fixed costs dominate
            continue
        lines.append(
            f"| Warren publishing {size_name(s.size)} jobs: peak RSS growth during the run "
            f"| {s.peak_rss / _MB:,.1f} MB = **{s.peak_rss / s.window:.2f}x** the in-flight "
            f"window ({s.window / _MB:,.1f} MB) | <= 2x |"
        )
    for size, per_job in sweep.buffered.items():
        lines.append(
            f"| memory per buffered {size_name(size)} job, broker unreachable "
            f"({BUFFERED_JOBS:,} jobs) | {per_job:,.0f} bytes = **{per_job / size:.2f}x** the "
            f"payload | <= 1.2x |"
        )
    return "\n".join(lines)


def size_name(size: int) -> str:
    return f"{size} B" if size < 1024 else f"{size // 1024} KB"
