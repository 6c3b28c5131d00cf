"""Sharded, resumable JSONL output with a done-shards ledger.

Layout inside the stage's work folder::

    qa/part-00000.jsonl        QA records of shard 0 (only committed shards' files)
    mcq/part-00000.jsonl       MCQ records of shard 0
    rejected/part-00000.jsonl  rejected replies/items of shard 0 (gathered into rejected.jsonl at the end)
    state/ledger.jsonl         one line per committed shard: its chunk keys and counts

A shard is committed by writing each of its files atomically (temp + rename), then appending
its ledger line (flushed and fsynced). On resume, shard files without a ledger line (a crash
between the two steps) and temp files are deleted, and a torn last ledger line is dropped;
ledgered shards are skipped. So a killed run neither loses nor duplicates items.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

from astrosage.core.artifacts import atomic_write_text

log = logging.getLogger("astrosage")

KINDS = ("qa", "mcq", "rejected")
_PART = re.compile(r"^part-(\d{5,})\.jsonl$")


def chunk_digest(keys) -> str:
    """Short digest of a shard's chunk keys (held in memory instead of the keys themselves)."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def _compact(entry: dict[str, Any]) -> dict[str, Any]:
    """The in-memory form of a ledger entry: chunk keys replaced by their count and digest."""
    out = {k: v for k, v in entry.items() if k != "chunks"}
    keys = entry.get("chunks", [])
    out["n_chunks"], out["chunk_digest"] = len(keys), chunk_digest(keys)
    return out


class ShardStore:
    """Committed shards of one synth run (a ``<stage>.partial`` work folder)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.ledger_path = self.root / "state" / "ledger.jsonl"
        for kind in KINDS:
            (self.root / kind).mkdir(parents=True, exist_ok=True)
        self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[int, dict[str, Any]] = self._read_ledger()
        self.removed_orphans = self._remove_orphans()

    # ------------------------------------------------------------------ reading
    def _read_ledger(self) -> dict[int, dict[str, Any]]:
        if not self.ledger_path.exists():
            return {}
        entries: dict[int, dict[str, Any]] = {}
        good_lines: list[str] = []
        torn = False
        for line in self.ledger_path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entries[int(entry["shard"])] = _compact(entry)
                good_lines.append(line)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                torn = True
        if torn:  # a crash mid-append: keep only the complete lines
            log.warning("synth: dropping a torn line from %s", self.ledger_path)
            atomic_write_text(self.ledger_path, "".join(line + "\n" for line in good_lines))
        return entries

    def _remove_orphans(self) -> list[str]:
        removed = []
        for kind in KINDS:
            for path in (self.root / kind).iterdir():
                m = _PART.match(path.name)
                orphan = (m is not None and int(m.group(1)) not in self.entries) or path.name.endswith(".tmp")
                if orphan:
                    path.unlink()
                    removed.append(f"{kind}/{path.name}")
        if removed:
            log.info("synth: removed %d uncommitted shard file(s) from an interrupted run", len(removed))
        return removed

    def done(self, shard: int) -> bool:
        return shard in self.entries

    def shard_path(self, kind: str, shard: int) -> Path:
        return self.root / kind / f"part-{shard:05d}.jsonl"

    def iter_records(self, kind: str) -> Iterator[dict[str, Any]]:
        """Records of every committed shard, in shard order."""
        for shard in sorted(self.entries):
            path = self.shard_path(kind, shard)
            if not path.exists():
                continue
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)

    def gather_rejected(self, path: Path) -> int:
        """Write every committed shard's rejections to ``path`` (JSONL), then drop the shard parts.

        Idempotent across a crash: once the parts are gone, an existing ``path`` is kept as is.
        Returns the number of lines in ``path``.
        """
        parts = [self.shard_path("rejected", s) for s in sorted(self.entries) if self.shard_path("rejected", s).exists()]
        if parts or not path.exists():
            tmp = path.with_name(path.name + ".tmp")
            with tmp.open("w", encoding="utf-8") as out:
                for part in parts:
                    with part.open(encoding="utf-8") as fh:
                        for line in fh:
                            if line.strip():
                                out.write(line if line.endswith("\n") else line + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            for part in parts:
                part.unlink()
        if not any((self.root / "rejected").iterdir()):
            (self.root / "rejected").rmdir()
        with path.open(encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())

    # ------------------------------------------------------------------ writing
    def commit(self, shard: int, records: dict[str, list[dict[str, Any]]], entry: dict[str, Any]) -> None:
        """Atomically write the shard's files, then record it in the ledger."""
        if shard in self.entries:
            raise ValueError(f"shard {shard} is already committed")
        files = {}
        for kind in KINDS:
            rows = records.get(kind) or []
            if rows:
                path = self.shard_path(kind, shard)
                atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                files[kind] = path.relative_to(self.root).as_posix()
        entry = {"shard": shard, "files": files, **entry}
        self._append_ledger(entry)
        self.entries[shard] = _compact(entry)

    def _append_ledger(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self.ledger_path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
