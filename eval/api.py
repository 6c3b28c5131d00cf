"""Public API for other stages (the merge stage scores its sweep candidates with this)."""

from __future__ import annotations

from pathlib import Path

from .evaluator import EvalSettings, evaluate

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    model_path: str,
    benchmark_path: str,
    out_dir: Path,
    *,
    method: str = "letter",
    batch_size: int = 8,
    limit: int | None = None,
    name: str | None = None,
    split: str | None = None,
    dtype: str = "float32",
) -> dict:
    """Score a checkpoint on an MCQ benchmark; write report.json/.md, predictions.jsonl, plots into out_dir.

    Returns the report dict: "accuracy" (None when unlabelled), "accuracy_ci95", "n", "ece",
    "brier", "nll" (None when unlabelled), "per_topic", ... . Rerunning with the same inputs reuses
    the scores stored in ``out_dir`` instead of scoring again.
    """
    settings = EvalSettings(method=method, batch_size=batch_size, limit=limit, dtype=dtype)
    return evaluate(str(model_path), str(benchmark_path), Path(out_dir), settings, name=name, split=split)
