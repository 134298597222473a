"""What the demo shows while it runs: a live panel on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from warren_services.demo._report import Summary
    from warren_services.demo._scenario import Run


class View(Protocol):
    def update(self, run: Run) -> None: ...

    def close(self) -> None: ...


def _numbers(run: Run) -> list[tuple[str, str]]:
    s = run.last
    if s is None:
        return []
    return [
        ("phase", run.phase),
        ("accepted", f"{s.accepted:,}"),
        ("buffer depth (API)", f"{s.depth:,}"),
        ("API -> RabbitMQ", "connected" if s.up else "DOWN"),
        ("reconnects", f"{s.reconnects:,}"),
        ("pushes delivered", f"{s.delivered:,}"),
        ("duplicates", f"{s.duplicates:,}"),
        ("lost so far (dropped)", f"{s.dropped:,}"),
    ]


class LiveView:
    """A progress bar over the run and a table, redrawn about four times a second."""

    def __init__(self, run_seconds: float, console: Console) -> None:
        self._console = console
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  TimeElapsedColumn(), console=console)  # fmt: skip
        self._task = self._progress.add_task("starting", total=run_seconds)
        self._table = Table()
        self._live = Live(Group(self._progress, self._table), console=console,
                          refresh_per_second=4, transient=False)  # fmt: skip
        self._live.start()

    def update(self, run: Run) -> None:
        s = run.last
        self._progress.update(self._task, completed=s.t if s else 0, description=run.phase)
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for key, value in _numbers(run):
            style = "red" if value in ("DOWN", "partition") else ""
            table.add_row(key, f"[{style}]{value}[/]" if style else value)
        self._live.update(Group(self._progress, table))

    def close(self) -> None:
        self._live.stop()


class LineView:
    """One line a second (stdout is a file or a pipe)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last = 0.0

    def update(self, run: Run) -> None:
        now = time.monotonic()
        if now - self._last < 1.0 and run.phase != "done":
            return
        self._last = now
        s = run.last
        if s is None:
            return
        line = (f"t={s.t:5.1f}s phase={run.phase.replace(' ', '_')} accepted={s.accepted} "
                f"depth={s.depth} up={int(s.up)} reconnects={s.reconnects} "
                f"delivered={s.delivered} dropped={s.dropped}")  # fmt: skip
        print(line, file=self._out, flush=True)

    def close(self) -> None:
        pass


def summary_table(summary: Summary, console: Console) -> None:
    table = Table(title="Warren demo: the partition, in numbers", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    for key, value in summary.rows():
        table.add_row(key, value)
    console.print(table)
