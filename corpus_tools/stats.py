"""The corpus stage's counts (how many papers each step passed on), metrics and summary table.

"tokens" is a whitespace-token estimate (``len(text.split())``), not a tokenizer count.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from .selection import Selection
from .writer import Totals

MISSING_REASONS = ("eprint_missing", "download_failed", "eprint_not_found")
DUPLICATE_REASONS = ("exact_duplicate", "near_duplicate")


def _missing(reason: str) -> bool:
    return reason in MISSING_REASONS or reason.startswith("eprint_http_")


def stage_counts(harvested: int, chosen: Selection, written: dict[str, Totals]) -> dict[str, int]:
    """Papers per step, harvested -> kept (= train + heldout), with the rejections broken down by reason."""
    reasons = Counter(r["reason"] for r in chosen.rejected)
    filtered = {r: n for r, n in reasons.items() if r.startswith("filtered_")}
    failed = {f"failed_{r}": n for r, n in reasons.items()
              if not r.startswith(("filtered_", "decontaminated_")) and r not in DUPLICATE_REASONS and not _missing(r)}
    source, ngram = reasons.get("decontaminated_source", 0), reasons.get("decontaminated_ngram", 0)
    flagged = len(chosen.contamination)
    train, heldout = written["docs"], written["heldout"]
    return {
        "harvested": harvested,
        "downloaded": harvested - sum(n for r, n in reasons.items() if _missing(r)),
        "extracted": chosen.extracted + sum(filtered.values()),
        **dict(sorted(failed.items())),
        "filtered": sum(filtered.values()),
        **dict(sorted(filtered.items())),
        "decontaminated": source + ngram + flagged,
        "decontaminated_source": source,
        "decontaminated_ngram": ngram if not flagged else flagged,
        "deduped": reasons.get("exact_duplicate", 0) + reasons.get("near_duplicate", 0),
        "deduped_exact": reasons.get("exact_duplicate", 0),
        "deduped_near": reasons.get("near_duplicate", 0),
        "kept": train.rows + heldout.rows,
        "heldout": heldout.rows,
        "train": train.rows,
        "tokens": train.tokens,
    }


def stage_metrics(chosen: Selection, written: dict[str, Totals], benchmarks: list[str], benchmark_ngrams: int) -> dict[str, Any]:
    """The manifest's metrics: split sizes, text volume, rejections by reason, the benchmarks checked against."""
    train, heldout = written["docs"], written["heldout"]
    reasons = Counter(r["reason"] for r in chosen.rejected)
    return {"kept": train.rows + heldout.rows, "train": train.rows, "heldout": heldout.rows, "heldout_chars": heldout.chars,
            "heldout_tokens_whitespace_estimate": heldout.tokens, "tokens_whitespace_estimate": train.tokens, "chars": train.chars,
            "rejected": len(chosen.rejected), "rejected_by_reason": dict(sorted(reasons.items())), "benchmarks": benchmarks,
            "benchmark_ngrams": benchmark_ngrams}


def print_table(console: Console, counts: dict[str, int]) -> None:
    """The counts as a step | papers table (sub-counts indented)."""
    table = Table(title="corpus", title_justify="left")
    table.add_column("step")
    table.add_column("papers", justify="right")
    for key, value in counts.items():
        label = f"  {key}" if key.startswith(("filtered_", "failed_", "decontaminated_", "deduped_")) else key
        table.add_row(label + (" (whitespace estimate)" if key == "tokens" else ""), f"{value:,}")
    console.print(table)
