"""``make demo``: the incident Warren exists for, live, against a real broker.

An API accepts messages at a steady rate; each one's push goes through RabbitMQ to a push
sender and a fake push provider. Midway the API's link to RabbitMQ is silently cut (the
``docker network disconnect`` of the original incident) and later healed. The demo shows the
buffer filling and draining, the connection lost and back, and counts every message end to
end: accepted, delivered, lost (must be 0), duplicates. It writes a PNG and an HTML report
and ends with one ``key=value`` line for scripts. Run: ``python -m warren_services.demo``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import anyio
from rich.console import Console

from warren import configure_logging
from warren_services.demo._broker import LOCAL, DemoError, broker
from warren_services.demo._report import plot, summarize, write_html
from warren_services.demo._scenario import DemoConfig, Run, run_scenario
from warren_services.demo._view import LineView, LiveView, View, summary_table

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m warren_services.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--partition-at", type=float, default=20.0, help="cut at (default 20 s)")
    p.add_argument("--partition-seconds", type=float, default=15.0, help="cut for (default 15)")
    p.add_argument("--rate", type=float, default=50.0, help="POSTs per second (default 50)")
    p.add_argument("--heartbeat", type=int, default=5, help="AMQP heartbeat, s (default 5)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="where reports go")
    p.add_argument("--local-broker", default=LOCAL, metavar="HOST:PORT",
                   help=f"where a local broker is looked for (default {LOCAL})")  # fmt: skip
    p.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when nothing was lost, 1 when something was, 2 when it cannot run."""
    args = _parser().parse_args(argv)
    try:
        config = DemoConfig(duration=args.duration, partition_at=args.partition_at,
                            partition_seconds=args.partition_seconds, rate=args.rate,
                            heartbeat=args.heartbeat)  # fmt: skip
    except ValueError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with (out / "warren.log").open("w") as log_file:
        configure_logging({"WARREN_LOG_LEVEL": "INFO"}, stream=log_file)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
        try:
            with broker(os.environ, local=args.local_broker, say=console.print) as found:
                console.print(f"broker: {found.origin}; the API reaches it through a fault "
                              f"proxy; logs: {out / 'warren.log'}")  # fmt: skip
                run = _run(config, found.url, found.origin, console, args.backend)
        except DemoError as exc:
            console.print(f"[red]demo: {exc}[/]")
            return 2
        finally:
            root.handlers[:], level = saved
            root.setLevel(level)
    if run.cleanup_error:
        console.print(f"[yellow]demo: {run.cleanup_error}[/]")
    summary = summarize(run)
    png, page = out / "warren-demo.png", out / "warren-demo.html"
    plot(run, png)
    write_html(run, summary, png, page)
    summary_table(summary, console)
    console.print(f"picture: {png}\nreport:  {page}")
    print(summary.key_values(), flush=True)
    return 0 if summary.lost == 0 else 1


def _run(config: DemoConfig, url: str, origin: str, console: Console, backend: str) -> Run:
    view: View = LiveView(config.duration, console) if console.is_terminal else LineView(
        sys.stdout)  # fmt: skip
    try:
        return anyio.run(lambda: run_scenario(config, url, view.update, origin=origin),
                         backend=backend)  # fmt: skip
    finally:
        view.close()
