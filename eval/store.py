"""The resumable score store: one JSONL file of raw per-question scores, appended batch by batch.

The first line is a header ``{"fingerprint": ...}`` (model + benchmark + method + settings),
written with the first batch (a run that fails before scoring anything leaves no file). Rows
are ``{"index": i, "scores": [...], ...}``, flushed and fsynced after every batch, so a killed
run loses at most the batch in flight. On reopening, rows with the same fingerprint are reused
(a torn last line is cut off); a different fingerprint starts a fresh file. Because rows are
keyed by question index, a ``--limit 10`` run followed by ``--limit 20`` scores only 10 more.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger("astrosage")


class ScoreStore:
    """Append-only per-question scores for one fingerprint."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.rows: dict[int, dict[str, Any]] = {}
        self._started = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        good_bytes = 0
        with self.path.open("rb") as fh:
            header_line = fh.readline()
            try:
                header = json.loads(header_line)
            except json.JSONDecodeError:
                header = {}
            if not header_line.endswith(b"\n") or header.get("fingerprint") != self.fingerprint:
                log.info("eval: %s was made with other settings or is damaged; it is replaced once new scores exist", self.path)
                return
            self._started = True
            good_bytes = len(header_line)
            for line in fh:
                try:
                    row = json.loads(line)
                    complete = line.endswith(b"\n") and isinstance(row.get("index"), int)
                except (json.JSONDecodeError, AttributeError):
                    complete = False
                if not complete:
                    break
                self.rows.setdefault(row["index"], row)
                good_bytes += len(line)
        if good_bytes < self.path.stat().st_size:
            log.info("eval: cutting a torn last line from %s", self.path)
            with self.path.open("r+b") as fh:
                fh.truncate(good_bytes)

    def _start(self) -> None:
        """Write a fresh file holding only the header (replacing another fingerprint's file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint}) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
        self._started = True

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Persist a batch of rows (new indices only) and make it durable."""
        fresh = [r for r in rows if r["index"] not in self.rows]
        if not fresh:
            return
        if not self._started:
            self._start()
        with self.path.open("a", encoding="utf-8") as fh:
            for row in fresh:
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for row in fresh:
            self.rows[row["index"]] = row
