"""The eval stage's comparison of checkpoints ("did domain training help?"): rows, tables, files, metrics.

``comparison.json`` (rows per checkpoint x benchmark and x text set), ``comparison.md`` (MCQ
accuracy with its change against the base model, then bits per byte) and ``comparison.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from astrosage.core.artifacts import atomic_write_json, atomic_write_text

from .checkpoints import Checkpoint


def comparison_rows(reports: list[tuple[Checkpoint, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per checkpoint x benchmark, with the accuracy change against the base model."""
    base_acc = {bench: rep["accuracy"] for ckpt, bench, rep in reports if ckpt.name == "base"}
    rows = []
    for ckpt, bench, rep in reports:
        acc, ref = rep["accuracy"], base_acc.get(bench)
        rows.append(
            {
                "checkpoint": ckpt.name,
                "benchmark": bench,
                "model": ckpt.path,
                "n": rep["n"],
                "accuracy": acc,
                "ci95": rep["accuracy_ci95"],
                "delta_vs_base": None if acc is None or ref is None or ckpt.name == "base" else acc - ref,
                "ece": rep["ece"],
                "brier": rep["brier"],
                "nll": rep["nll"],
                "report": f"{ckpt.name}/{bench}/report.md",
            }
        )
    return rows


def perplexity_rows(reports: list[tuple[Checkpoint, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per checkpoint x text set: bits per byte and perplexity, with the change against the base model."""
    base = {rep["set"]: rep["bits_per_byte"] for ckpt, rep in reports if ckpt.name == "base"}
    rows = []
    for ckpt, rep in reports:
        bpb, ref = rep["bits_per_byte"], base.get(rep["set"])
        delta = None if bpb is None or ref is None or ckpt.name == "base" else bpb - ref
        rows.append({
            "checkpoint": ckpt.name,
            "set": rep["set"],
            "model": ckpt.path,
            "n_docs": rep["n_docs"],
            "tokens": rep["tokens"],
            "bytes": rep["bytes"],
            "bits_per_byte": bpb,
            "perplexity": rep["perplexity"],
            "delta_bpb_vs_base": delta,
            "relative_bpb_change": delta / ref if delta is not None and ref else None,
            "report": f"{ckpt.name}/perplexity/{rep['set']}/report.md",
        })
    return rows


def perplexity_markdown(rows: list[dict[str, Any]], window: int, stride: int) -> list[str]:
    """The bits-per-byte table (lower is better) for comparison.md."""
    lines = [
        "## Bits per byte on held-out text (lower is better)",
        "",
        f"Token NLL over a sliding window of {window} tokens (stride {stride}), in bits per UTF-8 byte of the text: "
        "tokenizer-independent, so every checkpoint compares fairly. Perplexity is per token of each model's tokenizer.",
        "",
        "| checkpoint | text | documents | bytes | bits per byte | vs base | perplexity |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = "" if r["delta_bpb_vs_base"] is None else f"{r['delta_bpb_vs_base']:+.4f} ({100 * r['relative_bpb_change']:+.1f}%)"
        lines.append(f"| {r['checkpoint']} | {r['set']} | {r['n_docs']} | {r['bytes']:,} | {_fmt(r['bits_per_byte'])} | {delta} | "
                     f"{_fmt(r['perplexity'])} |")
    return lines + [""]


def _fmt(x: float | None, pct: bool = False, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    if pct:
        return f"{100 * x:+.1f} pts" if sign else f"{100 * x:.1f}%"
    return f"{x:.4f}"


def comparison_markdown(rows: list[dict[str, Any]], method: str, ppl: list[str] | None = None) -> str:
    """The "did domain training help?" tables: MCQ accuracy, then bits per byte (``ppl``, from perplexity_markdown)."""
    lines = [
        f"# Checkpoint comparison (method `{method}`)",
        "",
        "| checkpoint | benchmark | n | accuracy | 95% CI | vs base | ECE | Brier | NLL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = f"{_fmt(r['ci95'][0], True)}–{_fmt(r['ci95'][1], True)}" if r["ci95"] else "n/a"
        lines.append(
            f"| {r['checkpoint']} | {r['benchmark']} | {r['n']} | {_fmt(r['accuracy'], True)} | {ci} | "
            f"{_fmt(r['delta_vs_base'], True, True)} | {_fmt(r['ece'])} | {_fmt(r['brier'])} | {_fmt(r['nll'])} |"
        )
    lines += ["", "Unlabelled benchmarks show n/a: their `submission.txt` files hold the predicted letters.", ""]
    lines += (ppl or []) + ["![comparison](comparison.png)", ""]
    return "\n".join(lines)


def write_comparison(work_dir: Path, method: str, reports: list[tuple[Checkpoint, str, dict[str, Any]]],
                     ppl_reports: list[tuple[Checkpoint, dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write comparison.json / .md / .png from the benchmark and perplexity reports; return (rows, perplexity rows)."""
    from .plots import comparison_chart

    rows = comparison_rows(reports)
    ppl = perplexity_rows(ppl_reports)
    comparison: dict[str, Any] = {"method": method, "rows": rows}
    ppl_md: list[str] = []
    if ppl:
        ps = ppl_reports[0][1]["settings"]
        comparison["perplexity"] = ppl
        comparison["perplexity_settings"] = {"window": ps["window"], "stride": ps["stride"]}
        ppl_md = perplexity_markdown(ppl, ps["window"], ps["stride"])
    atomic_write_json(work_dir / "comparison.json", comparison)
    atomic_write_text(work_dir / "comparison.md", comparison_markdown(rows, method, ppl_md))
    comparison_chart(rows, work_dir / "comparison.png", ppl)
    return rows, ppl


def comparison_metrics(rows: list[dict[str, Any]], ppl: list[dict[str, Any]]) -> dict[str, Any]:
    """``<checkpoint>/<benchmark>/<accuracy|ece|brier|nll>`` and ``<checkpoint>/<set>/<bpb|perplexity|delta_bpb>``."""
    metrics: dict[str, Any] = {}
    for name in ("accuracy", "ece", "brier", "nll"):
        for r in rows:
            if r[name] is not None:
                metrics[f"{r['checkpoint']}/{r['benchmark']}/{name}"] = r[name]
    for name, key in (("bpb", "bits_per_byte"), ("perplexity", "perplexity"), ("delta_bpb", "delta_bpb_vs_base")):
        for r in ppl:
            if r[key] is not None:
                metrics[f"{r['checkpoint']}/{r['set']}/{name}"] = r[key]
    return metrics
