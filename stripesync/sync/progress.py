"""Progress bars for a backfill on a terminal: one per stream.

Each bar shows objects imported, objects/s, slices done and an ETA. The total is the
objects read so far plus the estimate of what is left (each slice's density times the
range it has left), so the bar firms up as pages come in; until a stream has read a page
the bar is indeterminate. Off a terminal nothing is drawn; the command prints a summary
table at the end.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from stripesync.sync.backfill import RunSummary, Tracker

__all__ = ["BackfillProgress", "summary_table"]


class BackfillProgress:
    """Use as a context manager; pass `update` as the backfill's ``on_progress``."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.enabled = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description:<16}"),
            BarColumn(bar_width=28),
            TextColumn("{task.fields[objects]:>10,} objects"),
            TextColumn("{task.fields[rate]:>7,.0f}/s"),
            TextColumn("slices {task.fields[slices]:>9}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
            refresh_per_second=5,
        )
        self.title = title
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BackfillProgress:
        self.console.print(self.title, highlight=False)
        self.progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def update(self, tracker: Tracker) -> None:
        if not self.enabled:
            return
        for live in tracker.snapshot():
            remaining = live.remaining()
            finished = live.finished is not None and not live.slices
            total = None if remaining is None else live.objects + remaining
            if finished:
                total = max(live.objects, 1)
            slices = f"{live.slices_done + live.slices_failed}/{live.slices_total}"
            task = self.tasks.get(live.name)
            if task is None:
                task = self.progress.add_task(
                    live.name, total=total, objects=0, rate=0.0, slices=slices
                )
                self.tasks[live.name] = task
            self.progress.update(
                task,
                completed=max(live.objects, 1) if finished else live.objects,
                total=total,
                objects=live.objects,
                rate=live.rate,
                slices=slices,
            )


def summary_table(summary: RunSummary) -> Table:
    table = Table(
        title=f"Sync of {summary.source}: {summary.seconds:,.1f}s, "
        f"{summary.requests:,} requests ({summary.rate_limited:,} rate limited)"
    )
    table.add_column("stream")
    table.add_column("state")
    table.add_column("imported", justify="right")
    table.add_column("stored", justify="right")
    table.add_column("slices", justify="right")
    table.add_column("error / note", overflow="fold")
    colors = {"done": "green", "failed": "bold red", "skipped": "yellow"}
    for o in summary.outcomes:
        color = colors.get(o.state, "white")
        table.add_row(
            o.name,
            f"[{color}]{o.state}[/]",
            f"{o.objects:,}",
            f"{o.stored:,}",
            f"{o.slices_done}/{o.slices_total}",
            escape(o.error or o.note or ""),
        )
    return table
