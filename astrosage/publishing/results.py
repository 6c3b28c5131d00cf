"""Evaluation results for the model card: the eval stage's ``comparison.json`` -> ``model-index``.

Fields used (anything else is ignored; a missing or malformed file means "no evaluation"):
``method`` (str) and ``rows``, a list of objects with ``checkpoint`` (e.g. ``base``, ``sft``,
``merge``, ``merge@w0.75``), ``benchmark`` (name from ``eval.benchmarks``), ``model`` (path), ``n``,
``accuracy`` (null for unlabelled sets), ``ci95``, ``delta_vs_base``, ``ece``, ``brier``, ``nll``.
The rows of the published checkpoint (``checkpoint`` equal to its stage name, or ``model`` equal to
its path) go into ``model-index``; every row appears in the card's comparison table.
``perplexity`` (optional) lists held-out text rows: ``checkpoint``, ``set`` (``heldout`` = the
corpus's held-out papers, or an ``eval.perplexity_sets`` name), ``model``, ``n_docs``,
``bits_per_byte``, ``perplexity``, ``delta_bpb_vs_base``; :func:`read_comparison` returns them among
the rows with ``kind: "perplexity"`` and ``benchmark`` = the set name, and the card lists bits per
byte beside MCQ accuracy (in ``model-index`` too).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..core.models import is_hub_id
from ..core.recipe import Recipe

SOURCE_URL = "https://github.com/astrosage/astrosage"
SOURCE_NAME = "astrosage eval"
CALIBRATION = {"ece": "Expected calibration error (15 bins)", "brier": "Brier score", "nll": "Negative log-likelihood"}


def read_comparison(path: Path | None) -> tuple[list[dict[str, Any]], str | None]:
    """(rows, method) from the eval stage's comparison.json; ([], None) when absent or unreadable."""
    if path is None or not path.is_file():
        return [], None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return [], None
    rows = data.get("rows") if isinstance(data, dict) else data
    method = data.get("method") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return [], None
    good = [r for r in rows if isinstance(r, dict) and isinstance(r.get("checkpoint"), str) and isinstance(r.get("benchmark"), str)]
    ppl = data.get("perplexity") if isinstance(data, dict) else None
    for r in ppl if isinstance(ppl, list) else []:
        if isinstance(r, dict) and isinstance(r.get("checkpoint"), str) and isinstance(r.get("set"), str):
            good.append({**r, "kind": "perplexity", "benchmark": r["set"]})
    return good, method if isinstance(method, str) else None


def rows_for_checkpoint(rows: list[dict[str, Any]], stage: str, model_path: str) -> list[dict[str, Any]]:
    """The comparison rows that score the published model."""
    resolved = str(Path(model_path).resolve()) if Path(model_path).exists() else model_path
    picked = []
    for row in rows:
        path = row.get("model")
        same_path = isinstance(path, str) and Path(path).exists() and str(Path(path).resolve()) == resolved
        if row["checkpoint"] == stage or same_path:
            picked.append(row)
    return picked


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None (booleans, strings, NaN and infinities are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def eval_results(rows: list[dict[str, Any]], recipe: Recipe, method: str | None) -> list[Any]:
    """huggingface_hub EvalResults for the published model's rows: MCQ accuracy + calibration, held-out bits per byte."""
    from huggingface_hub import EvalResult

    benches = {b.name: b for b in recipe.eval.benchmarks}
    sets = {s.name: s for s in recipe.eval.perplexity_sets}
    results = []
    for row in rows:
        if row.get("kind") == "perplexity":
            results += _perplexity_results(row, sets.get(row["benchmark"]))
            continue
        bench = benches.get(row["benchmark"])
        common = dict(
            task_type="text-generation",
            task_name=f"Astronomy multiple-choice QA ({method or 'letter'} scoring)",
            dataset_type=bench.path if bench is not None and is_hub_id(bench.path) else row["benchmark"],
            dataset_name=row["benchmark"],
            dataset_split=bench.split if bench is not None else None,
            source_name=SOURCE_NAME,
            source_url=SOURCE_URL,
        )
        acc = number(row.get("accuracy"))
        if acc is None:
            continue  # unlabelled benchmark: calibration is undefined too
        results.append(EvalResult(metric_type="accuracy", metric_value=acc, metric_name="Accuracy", **common))
        for key, name in CALIBRATION.items():
            value = number(row.get(key))
            if value is not None:
                results.append(EvalResult(metric_type=key, metric_value=value, metric_name=name, **common))
    return results


def _perplexity_results(row: dict[str, Any], ref: Any) -> list[Any]:
    """Bits per byte (and perplexity) on a held-out text set, as model-index results."""
    from huggingface_hub import EvalResult

    held = row["benchmark"] == "heldout"
    on_hub = ref is not None and is_hub_id(ref.path)
    common = dict(
        task_type="text-generation",
        task_name="Held-out astronomy text (language modelling)" if held else "Language modelling",
        dataset_type=ref.path if on_hub else row["benchmark"],
        dataset_name="held-out arXiv astro-ph papers (corpus split)" if held else row["benchmark"],
        dataset_config=ref.config if ref is not None else None,
        dataset_split=ref.split if on_hub else None,
        source_name=SOURCE_NAME,
        source_url=SOURCE_URL,
    )
    out = []
    bpb = number(row.get("bits_per_byte"))
    if bpb is not None:
        out.append(EvalResult(metric_type="bits_per_byte", metric_value=bpb, metric_name="Bits per byte", **common))
    ppl = number(row.get("perplexity"))
    if ppl is not None:
        out.append(EvalResult(metric_type="perplexity", metric_value=ppl, metric_name="Perplexity (per token)", **common))
    return out
