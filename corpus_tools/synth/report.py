"""The synth stage's results over every committed shard: counts, the MCQ dev set, the summary table, metrics."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any, Iterable

from astrosage.core.artifacts import atomic_write_text

from .progress import Throughput
from .store import ShardStore

DEV_FIELDS = ("id", "question", "A", "B", "C", "D", "answer", "explanation", "topic", "paper_id")
TOP_REASONS = 5  # rejection reasons shown with an example in the summary


def totals(store: ShardStore, tasks: Iterable[str]) -> dict[str, int]:
    """Counts summed over every committed shard (so they survive resumes)."""
    gen: Counter = Counter()
    kept: Counter = Counter()
    rej: Counter = Counter()
    chunks = requests = ptok = ctok = 0
    for entry in store.entries.values():
        chunks += entry["n_chunks"]
        requests += entry["requests"]
        ptok += entry.get("prompt_tokens", 0)
        ctok += entry.get("completion_tokens", 0)
        gen.update(entry["generated"])
        kept.update(entry["kept"])
        rej.update(entry["rejected"])
    counts = {
        "shards": len(store.entries),
        "chunks": chunks,
        "requests": requests,
        "generated": sum(gen.values()),
        "kept": sum(kept.values()),
        "rejected": sum(rej.values()),
        "prompt_tokens": ptok,
        "completion_tokens": ctok,
    }
    counts.update({f"kept_{t}": kept.get(t, 0) for t in tasks})
    counts.update({f"rejected_{r}": n for r, n in sorted(rej.items())})
    return counts


def counts_structured(store: ShardStore) -> dict[str, int]:
    """Replies per structured-output mode over all committed shards."""
    out: Counter = Counter()
    for entry in store.entries.values():
        out.update(entry.get("structured", {}))
    return dict(sorted(out.items()))


def write_dev_set(store: ShardStore, size: int, path: Path) -> list[dict[str, Any]]:
    """The first ``size`` validated MCQs (evaluator format + provenance) -> ``mcq/dev.jsonl``."""
    rows = []
    for rec in islice(store.iter_records("mcq"), size):
        rows.append({**{k: rec.get(k) for k in DEV_FIELDS}, "meta": rec.get("meta", {})})
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def top_reasons(path: Path, n: int = TOP_REASONS) -> list[tuple[str, int, str]]:
    """(reason, count, one example detail) for the ``n`` commonest reasons in rejected.jsonl."""
    counts: Counter = Counter()
    example: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            counts[row["reason"]] += 1
            example.setdefault(row["reason"], f"{row['task']} {row['chunk']}: {row.get('detail', '')}")
    return [(reason, count, example[reason]) for reason, count in counts.most_common(n)]


def summary_table(counts: dict[str, int], tasks: Iterable[str], reasons: list[tuple[str, int, str]]):
    """The final table: chunks, requests, items, kept per task, and the top rejection reasons with an example."""
    from rich.table import Table

    table = Table(title="synth", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("example", overflow="fold", max_width=70)
    for key in ("chunks", "requests", "generated"):
        table.add_row(key, str(counts.get(key, 0)), "")
    for task in tasks:
        table.add_row(f"kept: {task}", str(counts.get(f"kept_{task}", 0)), "")
    table.add_row("kept", f"[bold]{counts.get('kept', 0)}[/]", "")
    table.add_row("rejected", str(counts.get("rejected", 0)), "all in rejected.jsonl" if counts.get("rejected") else "")
    for reason, count, example in reasons:
        table.add_row(f"  {reason}", str(count), example[:200])
    table.add_row("mcq dev set", str(counts.get("mcq_dev", 0)), "")
    return table


def stage_metrics(*, counts: dict[str, int], store: ShardStore, dev: list[dict[str, Any]], reasons: list[tuple[str, int, str]],
                  n_logged: int, rate: Throughput, ran: bool, setup: dict[str, Any], decontam: dict[str, Any]) -> dict[str, Any]:
    """The manifest's metrics: outcomes, this run's throughput (``ran``: a teacher was started), the set-up.

    ``setup`` holds backend, teacher, prompts, structured_output and shards_resumed; ``decontam``
    decontaminated_against, decontam_skipped and decontam_ngram.
    """
    elapsed = rate.seconds if ran else 0.0
    return {
        "kept": counts["kept"],
        "rejected": counts["rejected"],
        "items_per_s": round(rate.items / elapsed, 4) if elapsed > 0 else 0.0,
        "tokens_per_s": round(rate.tokens / elapsed, 2) if elapsed > 0 else 0.0,
        "backend": setup["backend"],
        "teacher": setup["teacher"],
        "prompts": setup["prompts"],
        "rejected_by_reason": {k[len("rejected_"):]: v for k, v in counts.items() if k.startswith("rejected_")},
        "rejected_logged": n_logged,
        "top_rejections": [{"reason": r, "count": n, "example": ex} for r, n, ex in reasons],
        "seconds": round(elapsed, 2),
        "requests_this_run": rate.requests,
        "completion_tokens_this_run": rate.tokens,
        "structured": counts_structured(store),
        "truncated": sum(e.get("truncated", 0) for e in store.entries.values()),
        "structured_output": setup["structured_output"],
        "shards_resumed": setup["shards_resumed"],
        "shards_this_run": rate.shards,
        **decontam,
        "dev_answer_letters": dict(sorted(Counter(r["answer"] for r in dev).items())),
    }
