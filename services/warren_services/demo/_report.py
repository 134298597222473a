"""The demo's verdict: a summary (numbers), a picture (PNG) and a page that embeds it (HTML)."""

from __future__ import annotations

import base64
import html
import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from warren_services.demo._scenario import Run, Sample


@dataclass(frozen=True)
class Summary:
    accepted: int
    delivered: int
    lost: int
    duplicates: int
    max_depth: int
    reconnects: int
    dropped: int
    errors: int  # POSTs not answered 202
    detection_s: float | None  # partition -> the API knew its link was gone
    heal_to_empty_s: float | None  # heal -> the API's buffer back to its steady level
    p50_up_ms: float | None
    p99_up_ms: float | None
    p50_partition_ms: float | None
    p99_partition_ms: float | None

    def key_values(self) -> str:
        """One line for scripts: ``accepted=... delivered=... lost=...``."""

        def show(value: float | None) -> str:
            if value is None:
                return "na"
            return f"{value:.2f}" if isinstance(value, float) else str(value)

        return " ".join(f"{k}={show(v)}" for k, v in asdict(self).items())

    def rows(self) -> list[tuple[str, str]]:
        def sec(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} s"

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} ms"

        return [
            ("accepted (202)", f"{self.accepted:,}"),
            ("delivered to the provider", f"{self.delivered:,}"),
            ("lost", f"{self.lost:,}"),
            ("duplicates", f"{self.duplicates:,}"),
            ("max buffer depth", f"{self.max_depth:,}"),
            ("reconnects", f"{self.reconnects:,}"),
            ("partition noticed after", sec(self.detection_s)),
            ("heal -> buffer drained", sec(self.heal_to_empty_s)),
            ("API p50 / p99, link up", f"{ms(self.p50_up_ms)} / {ms(self.p99_up_ms)}"),
            (
                "API p50 / p99, partitioned",
                f"{ms(self.p50_partition_ms)} / {ms(self.p99_partition_ms)}",
            ),
            ("POSTs not accepted", f"{self.errors:,}"),
        ]


def summarize(run: Run) -> Summary:
    accepted = {f"push-{i}" for i in run.accepted_ids}
    delivered = len(accepted & run.delivered_ids)
    last = run.last
    start, end = run.partition_start, run.partition_end
    detection = heal = None
    # drained: back to what it held in the steady state before the cut (a job or two in
    # flight at any moment), not necessarily 0
    steady = max((s.depth for s in run.samples
                  if start is not None and start - 2 <= s.t < start), default=0)  # fmt: skip
    for s in run.samples:
        if start is not None and detection is None and s.t >= start and not s.up:
            detection = s.t - start
        if end is not None and heal is None and s.t >= end and s.depth <= steady:
            heal = s.t - end
    up: list[float] = []
    cut: list[float] = []
    for sent, seconds, status in run.requests:
        if status != 202:
            continue
        inside = start is not None and start <= sent < (end if end is not None else float("inf"))
        (cut if inside else up).append(seconds * 1000)
    return Summary(
        accepted=len(accepted), delivered=delivered, lost=len(accepted) - delivered,
        duplicates=last.duplicates if last else 0,
        max_depth=max((s.depth for s in run.samples), default=0),
        reconnects=last.reconnects if last else 0, dropped=last.dropped if last else 0,
        errors=sum(1 for _, _, status in run.requests if status != 202),
        detection_s=detection, heal_to_empty_s=heal,
        p50_up_ms=_quantile(up, 50), p99_up_ms=_quantile(up, 99),
        p50_partition_ms=_quantile(cut, 50), p99_partition_ms=_quantile(cut, 99),
    )  # fmt: skip


def _quantile(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def plot(run: Run, path: Path) -> None:
    """Buffer depth, accepted/s and delivered/s over time, the partition shaded."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    samples = run.samples
    t = [s.t for s in samples]
    fig, (depth_ax, rate_ax) = plt.subplots(2, 1, sharex=True, figsize=(10, 6), dpi=110)
    depth_ax.plot(t, [s.depth for s in samples], color="#c0392b", label="buffer depth (API)")
    depth_ax.set_ylabel("jobs buffered")
    rate_ax.plot(t, _rate(samples, "accepted"), color="#2471a3", label="accepted/s")
    rate_ax.plot(t, _rate(samples, "delivered"), color="#229954", label="delivered/s")
    rate_ax.set_ylabel("per second")
    rate_ax.set_xlabel("seconds")
    for ax in (depth_ax, rate_ax):
        if run.partition_start is not None:
            end = run.partition_end if run.partition_end is not None else t[-1]
            ax.axvspan(run.partition_start, end, color="#7f8c8d", alpha=0.25,
                       label="API cut off from RabbitMQ")  # fmt: skip
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
    lost_at = next((s.t for s in samples if run.partition_start is not None
                    and s.t >= run.partition_start and not s.up), None)  # fmt: skip
    if lost_at is not None:
        depth_ax.axvline(lost_at, color="#c0392b", linestyle="--", linewidth=1,
                         label="API notices the link is gone")  # fmt: skip
        depth_ax.legend(loc="upper left")
    depth_ax.set_title("Warren: a silent partition between the API and RabbitMQ")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _rate(samples: list[Sample], attr: str, window: float = 1.0) -> list[float]:
    """Per-second rate of a counter over the last ``window`` seconds at each sample."""
    out: list[float] = []
    j = 0
    for s in samples:
        while samples[j].t < s.t - window:
            j += 1
        span = s.t - samples[j].t
        out.append((getattr(s, attr) - getattr(samples[j], attr)) / span if span > 0 else 0.0)
    return out


def write_html(run: Run, summary: Summary, png: Path, path: Path) -> None:
    """One self-contained page: the summary, the picture (embedded), how it was run."""
    image = base64.b64encode(png.read_bytes()).decode()
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                     for k, v in summary.rows())  # fmt: skip
    c = run.config
    verdict = "nothing lost" if summary.lost == 0 else f"{summary.lost} LOST"
    path.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Warren demo: {verdict}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}}
table{{border-collapse:collapse}}th,td{{padding:.3rem .8rem;border-bottom:1px solid #ddd;
text-align:left}}img{{max-width:100%}}code{{background:#f4f4f4;padding:0 .2rem}}</style>
</head><body>
<h1>Warren demo: {verdict}</h1>
<p>An API accepted {c.rate:g} messages/s for {c.duration:g} s; each one's push went through
RabbitMQ ({html.escape(run.broker)}) to a push sender and a fake push provider. After
{c.partition_at:g} s the API's link to RabbitMQ was silently cut (every byte dropped, no FIN,
no RST: the <code>docker network disconnect</code> of the original incident) for
{c.partition_seconds:g} s, then healed. Heartbeat {c.heartbeat} s.</p>
<table>{rows}</table>
<p><img alt="buffer depth, accepted/s and delivered/s over time"
 src="data:image/png;base64,{image}"></p>
<p>Queue <code>{html.escape(run.queue)}</code> (deleted after the run).
<code>{html.escape(summary.key_values())}</code></p>
</body></html>
""")
