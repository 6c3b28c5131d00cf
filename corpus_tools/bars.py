"""The corpus stage's progress display: one rich bar per step (harvest, download, extract, dedup, write)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class StepBars:
    """Call ``bars(step, completed, total)`` from any step; the bar for ``step`` appears on first use."""

    def __init__(self, console: Console):
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]corpus {task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)
        self.tasks: dict[str, Any] = {}

    def __call__(self, step: str, completed: int, total: int | None) -> None:
        if step not in self.tasks:
            self.tasks[step] = self.progress.add_task(step, total=total)
        self.progress.update(self.tasks[step], completed=completed, total=total)
