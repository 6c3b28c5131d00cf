"""Merge sweeps: one merge per weight/density, each scored on a dev benchmark, the best selected.

Scoring goes through the evaluator (``eval.api.evaluate_checkpoint``); without it a sweep fails
with a clear error, because a selection without evaluation would be made up. The record is
``sweep.json`` (every point and the selection), ``sweep.md`` (the table) and ``sweep.png``
(metric vs weight, one line per density).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from ..core.artifacts import atomic_write_json, atomic_write_text
from ..core.recipe import BenchmarkRef, Recipe
from .config import MergePoint

__all__ = [
    "SweepError",
    "LOWER_IS_BETTER",
    "sweep_points",
    "is_sweep",
    "metric_value",
    "load_evaluator",
    "dev_benchmark",
    "select_best",
    "sweep_rank",
    "write_sweep_record",
]

#: metrics where a smaller value is better; every other metric is maximised
LOWER_IS_BETTER = frozenset({"ece", "brier", "nll"})

Evaluator = Callable[..., dict[str, Any]]


class SweepError(RuntimeError):
    """A merge sweep cannot run or cannot select a model."""


def sweep_points(recipe: Recipe) -> list[MergePoint]:
    """The merge settings to run: the sweep grid, or the single (weight, density) of the recipe."""
    m = recipe.merge
    weights = list(dict.fromkeys(m.sweep)) or [m.weight]
    densities: list[float | None]
    if m.method in ("ties", "dare_ties"):
        densities = list(dict.fromkeys(m.sweep_density)) or [m.density]
    else:
        densities = [None]
    return [MergePoint(w, d) for d in densities for w in weights]


def is_sweep(recipe: Recipe) -> bool:
    return bool(recipe.merge.sweep or recipe.merge.sweep_density)


def load_evaluator() -> Evaluator:
    """``eval.api.evaluate_checkpoint``, or a SweepError saying evaluation is needed to select a merge."""
    try:
        from eval.api import evaluate_checkpoint  # type: ignore[import-not-found]
    except ImportError as exc:
        raise SweepError(
            "merge.sweep needs the evaluator to score each merge on the dev benchmark and select one, but "
            f"eval.api.evaluate_checkpoint cannot be imported ({exc}); install the evaluator (astrosage[eval]) "
            "or drop merge.sweep / merge.sweep_density to run a single merge at merge.weight"
        ) from None
    return evaluate_checkpoint


def dev_benchmark(recipe: Recipe) -> BenchmarkRef:
    """The benchmark that scores a sweep: merge.select_benchmark, else the first of eval.benchmarks."""
    benches = recipe.eval.benchmarks
    if not benches:
        raise SweepError(
            "merge.sweep needs a labelled dev benchmark: add one to eval.benchmarks (the first is used) "
            "or name one with merge.select_benchmark"
        )
    name = recipe.merge.select_benchmark
    if name is None:
        return benches[0]
    for bench in benches:
        if bench.name == name:
            return bench
    raise SweepError(f"merge.select_benchmark {name!r} is not in eval.benchmarks (have: {', '.join(b.name for b in benches)})")


def metric_value(report: dict[str, Any], metric: str) -> float | None:
    """The metric from an evaluator report as a finite float, else None."""
    value = report.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def select_best(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The row with the best ``metric``; SweepError if none has a value.

    Ties (common on small dev sets) go to the lower NLL (to the higher accuracy when selecting by
    NLL), then to the first in sweep order.
    """
    scored = [r for r in rows if r.get(metric) is not None]
    if not scored:
        raise SweepError(
            f"no merge of the sweep has a value for select_metric '{metric}'; is the dev benchmark labelled "
            "(an answer key is needed to score accuracy)? name a labelled one with merge.select_benchmark"
        )
    return max(scored, key=lambda r: sweep_rank(r, metric))


def sweep_rank(row: dict[str, Any], metric: str) -> tuple[float, float]:
    """Sort key of a sweep row: higher is better (``metric``, then the tie-breaker)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    second, second_sign = ("accuracy", 1.0) if metric == "nll" else ("nll", -1.0)
    tie = row.get(second)
    return sign * row[metric], second_sign * tie if tie is not None else -math.inf


def write_sweep_record(
    out_dir: Path, rows: list[dict[str, Any]], metric: str, selected: dict[str, Any], benchmark: BenchmarkRef
) -> dict[str, str]:
    """Write sweep.json, sweep.md and sweep.png into ``out_dir``; returns their names by kind."""
    direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    atomic_write_json(
        out_dir / "sweep.json",
        {
            "select_metric": metric,
            "direction": direction,
            "benchmark": benchmark.model_dump(mode="json"),
            "selected": selected["label"],
            "points": rows,
        },
    )
    cols = ["label", "weight", "density", "accuracy", "ece", "brier", "nll", "n"]
    lines = [
        f"# Merge sweep on `{benchmark.name}`",
        "",
        f"Selected **{selected['label']}** by `{metric}` ({direction}).",
        "",
        "| " + " | ".join(cols) + " | selected |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for row in rows:
        cells = [_cell(row.get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + f" | {'**yes**' if row is selected else ''} |")
    atomic_write_text(out_dir / "sweep.md", "\n".join(lines) + "\n")
    _plot(out_dir / "sweep.png", rows, metric, selected, benchmark.name)
    return {"sweep": "sweep.json", "sweep_table": "sweep.md", "sweep_plot": "sweep.png"}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plot(path: Path, rows: list[dict[str, Any]], metric: str, selected: dict[str, Any], bench: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    densities = list(dict.fromkeys(r.get("density") for r in rows))
    for density in densities:
        pts = sorted((r["weight"], r[metric]) for r in rows if r.get("density") == density and r.get(metric) is not None)
        if pts:
            label = f"density {density:g}" if density is not None else None
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    if selected.get(metric) is not None:
        ax.scatter([selected["weight"]], [selected[metric]], s=160, facecolors="none", edgecolors="red", zorder=3, label="selected")
    ax.set_xlabel("weight of the trained model (instruct: 1 - weight)")
    ax.set_ylabel(metric)
    ax.set_title(f"merge sweep: {metric} on {bench}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
