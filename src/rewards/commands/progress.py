"""The progress bar of the long commands (``evaluate``, ``backtest``) on stderr, drawn by
rich: redrawn in place on a terminal; elsewhere (a log file, CI) one line every
``log_every`` seconds and the last state when it closes."""

from __future__ import annotations

import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

_ONE_LINE = Column(no_wrap=True)  # a narrow terminal cuts the line, never wraps it


class _Count(ProgressColumn):
    """``1,234/5,000 events``; ``1,234 events`` while the total is unknown."""

    def __init__(self, unit: str) -> None:
        super().__init__(table_column=_ONE_LINE)
        self.unit = unit

    def render(self, task: Task) -> Text:
        total = "" if task.total is None else f"/{int(task.total):,}"
        return Text(f"{int(task.completed):,}{total} {self.unit}")


class _Rate(ProgressColumn):
    """``1,234 ev/s`` over the last seconds (rich's estimate)."""

    def __init__(self, unit: str) -> None:
        super().__init__(table_column=_ONE_LINE)
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed or 0:,.0f} {self.unit}/s")


class _Time(ProgressColumn):
    """``ETA 0:01:02`` while the total is known; ``elapsed 0:00:40`` while it is not."""

    def __init__(self) -> None:
        super().__init__(table_column=_ONE_LINE)
        self.remaining = TimeRemainingColumn()
        self.elapsed = TimeElapsedColumn()

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("elapsed ") + self.elapsed.render(task)
        return Text("ETA ") + self.remaining.render(task)


class ProgressBar:
    """One task's bar. Nothing is drawn until a total is known and not zero: a window
    or a run without events shows no bar (not ``0/0``)."""

    def __init__(
        self, stream: TextIO, unit: str, rate_unit: str, *, extra: str = "", log_every: float = 10.0
    ) -> None:
        self.console = Console(file=stream, highlight=False, width=None if stream.isatty() else 120)
        columns: list[str | ProgressColumn] = [
            TextColumn("{task.description}", table_column=_ONE_LINE),
            BarColumn(bar_width=20),
            TaskProgressColumn(),
            _Count(unit),
            _Rate(rate_unit),
            _Time(),
        ]
        if extra:
            columns.append(TextColumn(extra, table_column=_ONE_LINE))
        self.progress = Progress(
            *columns,
            console=self.console,
            auto_refresh=self.console.is_terminal,
            refresh_per_second=5,
        )
        self.task: TaskID | None = None
        self.log_every = log_every
        self.logged = 0.0

    def update(self, description: str, done: int, total: int | None, **fields: Any) -> None:
        """``total`` None: an indeterminate bar (a phase whose size is not known)."""
        if self.task is not None and (total is None) != (self._total() is None):
            # rich keeps a total once set: a phase of unknown size gets a task of its own
            self.progress.remove_task(self.task)
            self.task = self.progress.add_task(description, total=total, completed=done, **fields)
        elif self.task is not None:
            self.progress.update(
                self.task, description=description, total=total, completed=done, **fields
            )
        elif total != 0:
            self.progress.start()
            self.task = self.progress.add_task(description, total=total, completed=done, **fields)
        else:
            return
        now = time.monotonic()
        if not self.console.is_terminal and now - self.logged >= self.log_every:
            self.logged = now
            self.console.print(self.progress.make_tasks_table(self.progress.tasks))

    def _total(self) -> float | None:
        return next(t.total for t in self.progress.tasks if t.id == self.task)

    def close(self) -> None:
        """Stop drawing; the last state stays on screen (in a log: its last line)."""
        if self.task is not None:
            self.progress.stop()
            self.task = None
