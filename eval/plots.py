"""PNG figures with matplotlib (Agg backend): reliability diagram, per-topic bars, comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _err(block: dict) -> tuple[float, float]:
    acc, ci = block.get("accuracy"), block.get("ci95")
    if acc is None or not ci:
        return 0.0, 0.0
    return acc - ci[0], ci[1] - acc


def reliability_diagram(bins: list[dict], ece: float, title: str, path: Path) -> Path:
    """Accuracy vs confidence per bin (bar width = bin), with the diagonal and bin counts."""
    fig, ax = plt.subplots(figsize=(5, 5))
    filled = [b for b in bins if b["n"]]
    width = bins[0]["upper"] - bins[0]["lower"] if bins else 1.0
    ax.bar([b["lower"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
           edgecolor="black", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.scatter([b["confidence"] for b in filled], [b["accuracy"] for b in filled], color="crimson", zorder=3,
               s=12, label="mean confidence")
    for b in filled:
        ax.annotate(str(b["n"]), (b["lower"] + width / 2, b["accuracy"]), ha="center", va="bottom", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence (max p over A-D)", ylabel="accuracy",
           title=f"{title}\nECE = {ece:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def topic_bars(per_topic: dict[str, dict], title: str, path: Path) -> Path:
    """Accuracy per topic with 95% Wilson intervals; question counts when unlabelled."""
    topics = sorted(per_topic)
    labelled = any(per_topic[t].get("accuracy") is not None for t in topics)
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(topics) + 2), 4))
    if labelled:
        values = [per_topic[t]["accuracy"] or 0.0 for t in topics]
        errs = list(zip(*[_err(per_topic[t]) for t in topics])) or [[], []]
        ax.bar(topics, values, yerr=errs, capsize=3, color="steelblue")
        ax.axhline(0.25, ls=":", color="gray", label="chance (25%)")
        ax.set(ylim=(0, 1), ylabel="accuracy")
        ax.legend(fontsize=8)
    else:
        ax.bar(topics, [per_topic[t]["n"] for t in topics], color="gray")
        ax.set(ylabel="questions (unlabelled set)")
    ax.set_xticks(range(len(topics)), [f"{t}\nn={per_topic[t]['n']}" for t in topics])
    ax.set(title=title, xlabel="topic")
    return _save(fig, path)


def comparison_chart(rows: list[dict], path: Path, perplexity: list[dict] | None = None) -> Path:
    """Grouped bars: accuracy of every checkpoint on every benchmark (95% intervals), and, given
    ``perplexity`` rows, a second panel with bits per byte per checkpoint and text set (change vs base)."""
    import numpy as np

    benchmarks = sorted({r["benchmark"] for r in rows})
    checkpoints = list(dict.fromkeys([r["checkpoint"] for r in rows] + [r["checkpoint"] for r in perplexity or []]))
    panels = 2 if perplexity else 1
    width_in = max(5, 1.2 * len(checkpoints) * max(1, len(benchmarks)) + 2)
    fig, axes = plt.subplots(1, panels, figsize=(width_in + (5 if perplexity else 0), 4), squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(benchmarks))
    width = 0.8 / max(1, len(checkpoints))
    for j, ckpt in enumerate(checkpoints):
        blocks = [next((r for r in rows if r["checkpoint"] == ckpt and r["benchmark"] == b), {}) for b in benchmarks]
        values = [b.get("accuracy") or 0.0 for b in blocks]
        errs = list(zip(*[_err(b) for b in blocks])) or [[], []]
        ax.bar(x + j * width - 0.4 + width / 2, values, width, yerr=errs, capsize=3, label=ckpt)
    ax.axhline(0.25, ls=":", color="gray")
    ax.set_xticks(x, benchmarks)
    ax.set(ylim=(0, 1), ylabel="accuracy (95% CI)", title="Did domain training help? accuracy per checkpoint")
    ax.legend(fontsize=8)
    if perplexity:
        ax = axes[0][1]
        sets = list(dict.fromkeys(r["set"] for r in perplexity))
        x = np.arange(len(sets))
        for j, ckpt in enumerate(checkpoints):
            blocks = [next((r for r in perplexity if r["checkpoint"] == ckpt and r["set"] == s), {}) for s in sets]
            values = [b.get("bits_per_byte") or 0.0 for b in blocks]
            bars = ax.bar(x + j * width - 0.4 + width / 2, values, width, label=ckpt)
            for bar, b in zip(bars, blocks):
                if b.get("relative_bpb_change") is not None:
                    ax.annotate(f"{100 * b['relative_bpb_change']:+.1f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, sets)
        ax.set(ylabel="bits per byte (lower is better)", title="held-out bits per byte (change vs base)")
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
