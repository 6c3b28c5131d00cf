"""The synth stage's live display: requests done, kept/rejected items, items/s, tokens/s and the ETA.

With a terminal a rich bar is updated per finished request and per committed shard; without one
(Slurm logs) a progress line is logged after a shard at most every 30 s. :class:`Throughput`
counts this process's work only (a resumed run's earlier shards are not in its rates).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .backends.base import GenResult
from .chunking import doc_files
from .generate import ShardResult
from .store import ShardStore

log = logging.getLogger("astrosage")
LOG_EVERY_S = 30.0


def console():
    """The CLI's console when running under it (one live display), else a stderr console."""
    from rich.console import Console

    cli = sys.modules.get("astrosage.cli")
    return getattr(cli, "console", None) or Console(stderr=True)


def estimate_chunks(docs: Path, chunk_chars: int, overlap: int, max_chunks: int | None) -> int | None:
    """Rough chunk count from the docs' n_chars column (for the progress bar), or None."""
    import pyarrow.parquet as pq

    total = 0
    try:
        for path in doc_files(docs):
            for n in pq.read_table(path, columns=["n_chars"]).column("n_chars").to_pylist():
                total += max(1, -(-max(0, (n or 0) - overlap) // (chunk_chars - overlap)))
    except (KeyError, ValueError, OSError):
        return max_chunks
    return min(total, max_chunks) if max_chunks else total


class Throughput:
    """This process's generation rates (a resumed run's earlier shards are not counted)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.requests = self.items = self.tokens = self.shards = 0
        self.lock = threading.Lock()

    def add_request(self, completion_tokens: int) -> None:
        with self.lock:
            self.requests += 1
            self.tokens += completion_tokens

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start

    def rates(self) -> tuple[float, float]:
        elapsed = max(self.seconds, 1e-9)
        return self.items / elapsed, self.tokens / elapsed

    def eta_s(self, done: int, total: int | None) -> float | None:
        if not total or not self.requests or done >= total:
            return None
        return (total - done) * self.seconds / self.requests


def _bar(out: Any):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "requests  [green]{task.fields[kept]} kept[/]  [red]{task.fields[rejected]} rejected[/]  "
            "{task.fields[items_s]:.2f} items/s  {task.fields[tok_s]:.0f} tok/s"
        ),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=out,
        transient=True,
    )


class SynthProgress:
    """The bar over all requests (committed shards count as done) and this run's :class:`Throughput`."""

    def __init__(self, out: Any, total: int | None, store: ShardStore):
        self.console, self.total = out, total
        self.rate = Throughput()
        entries = store.entries.values()
        self.done = sum(e["requests"] for e in entries)
        self.kept = sum(sum(e["kept"].values()) for e in entries)
        self.rejected = sum(sum(e["rejected"].values()) for e in entries)
        self.progress = _bar(out)
        self.bar: Any = None
        self._last_log = 0.0

    def __enter__(self) -> "SynthProgress":
        self.progress.__enter__()
        self.bar = self.progress.add_task("synth", total=self.total, completed=self.done, kept=self.kept, rejected=self.rejected,
                                          items_s=0.0, tok_s=0.0)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def restart_clock(self) -> None:
        """Start the rates now (after the teacher has loaded)."""
        self.rate = Throughput()

    def on_request(self, res: GenResult) -> None:
        """One finished request (called from the backend's worker threads for openai)."""
        self.rate.add_request(res.completion_tokens)
        self.progress.update(self.bar, advance=1, tok_s=self.rate.rates()[1])

    def on_shard(self, result: ShardResult) -> None:
        """One committed shard: totals, rates, and the log line when there is no terminal."""
        self.done += result.requests
        self.rate.items += sum(result.kept.values())
        self.rate.shards += 1
        self.kept += sum(result.kept.values())
        self.rejected += sum(result.rejected.values())
        items_s, tok_s = self.rate.rates()
        self.progress.update(self.bar, completed=self.done, kept=self.kept, rejected=self.rejected, items_s=items_s, tok_s=tok_s)
        if not self.console.is_terminal and time.monotonic() - self._last_log >= LOG_EVERY_S:
            self._last_log = time.monotonic()
            eta = self.rate.eta_s(self.done, self.total)
            log.info(
                "synth: %d/%s requests, %d kept, %d rejected, %.2f items/s, %.0f tok/s, ETA %s",
                self.done, self.total if self.total else "?", self.kept, self.rejected, items_s, tok_s,
                f"{eta / 60:.1f} min" if eta is not None else "?",
            )
