"""Rich progress for a pipeline run and the summary table printed at its end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

STATUS_STYLE = {
    "done": "[green]done[/]",
    "cached": "[cyan]cached[/]",
    "disabled": "[dim]disabled[/]",
    "skipped": "[dim]not selected[/]",
    "failed": "[bold red]FAILED[/]",
    "preempted": "[bold yellow]preempted[/]",
}


class StageProgress:
    """One overall bar over the stages to run; stages add their own bars for long work."""

    def __init__(self, console: Console, stages: Sequence[str]):
        self.stages = list(stages)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not self.stages,
        )
        self.task = None

    def __enter__(self) -> "StageProgress":
        self.progress.__enter__()
        first = self.stages[0] if self.stages else ""
        self.task = self.progress.add_task(f"stage {first}", total=len(self.stages))
        return self

    def update(self, outcome: Any) -> None:
        if outcome.stage not in self.stages or self.task is None:
            return
        self.progress.advance(self.task)
        index = self.stages.index(outcome.stage)
        nxt = self.stages[index + 1] if index + 1 < len(self.stages) else "finished"
        self.progress.update(self.task, description=f"stage {nxt}")

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)


def _fmt_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_table(run_name: str, outcomes: Sequence[Any], run_dir: Path) -> Table:
    """Stage | status | time | key metrics | output folder."""
    table = Table(title=f"astrosage run '{run_name}'  ->  {run_dir}", title_justify="left")
    table.add_column("stage", style="bold")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("metrics / detail", overflow="fold")
    table.add_column("output", overflow="fold")
    for o in outcomes:
        metrics = ", ".join(f"{k}={_fmt_metric(v)}" for k, v in list(o.metrics.items())[:4] if not isinstance(v, (dict, list)))
        detail = metrics or o.detail
        seconds = f"{o.duration_s:.1f}s" if o.status in ("done", "failed", "preempted") else ""
        output = ""
        if o.path is not None:
            try:
                output = str(o.path.relative_to(Path.cwd()))
            except ValueError:
                output = str(o.path)
        table.add_row(o.stage, STATUS_STYLE.get(o.status, o.status), seconds, detail, output)
    return table
