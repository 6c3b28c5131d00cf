"""Accuracy and calibration metrics over the four answer options.

For each question, ``probs`` is p = softmax over the four option scores; the model's confidence
is p of its predicted option (= max p for `letter` and `choices`). With N labelled questions:

* accuracy with a 95% Wilson score interval (scipy's ``binomtest(...).proportion_ci``);
* ECE with 15 equal-width bins (b/15, (b+1)/15]: sum_b (n_b/N) |acc_b - conf_b|;
* Brier: mean over questions of sum_k (p_k - [k = answer])^2 (multi-class form, range 0-2);
* NLL: mean of -log p_answer (p clipped at 1e-12);
* confidence-correctness correlation: Pearson r between confidence and 0/1 correctness
  (None when either is constant).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

N_BINS = 15


def softmax(scores: Sequence[float]) -> list[float]:
    """Numerically stable softmax."""
    x = np.asarray(scores, dtype=np.float64)
    e = np.exp(x - x.max())
    return (e / e.sum()).tolist()


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion; None when n == 0."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bin_index(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each confidence for bins (b/n, (b+1)/n]; 0 goes to the first bin."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, n_bins - 1)


def reliability_bins(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS) -> list[dict]:
    """Per bin: lower/upper edge, count, mean confidence, accuracy (None for empty bins)."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    idx = bin_index(conf, n_bins)
    rows = []
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        rows.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "n": n,
                "confidence": float(conf[mask].mean()) if n else None,
                "accuracy": float(corr[mask].mean()) if n else None,
            }
        )
    return rows


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS) -> float:
    """ECE = sum_b (n_b/N) |acc_b - conf_b| over equal-width bins."""
    total = len(confidence)
    if total == 0:
        return float("nan")
    return float(
        sum(b["n"] / total * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(confidence, correct, n_bins) if b["n"])
    )


def brier_score(probs: Sequence[Sequence[float]], answers: Sequence[int]) -> float:
    """Multi-class Brier score: mean sum_k (p_k - onehot_k)^2."""
    p = np.asarray(probs, dtype=np.float64)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(answers)), np.asarray(answers)] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def negative_log_likelihood(probs: Sequence[Sequence[float]], answers: Sequence[int]) -> float:
    """Mean -log p(answer)."""
    p = np.asarray(probs, dtype=np.float64)
    picked = p[np.arange(len(answers)), np.asarray(answers)]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def correlation(confidence: Sequence[float], correct: Sequence[bool]) -> float | None:
    """Pearson correlation of confidence with correctness; None if either is constant."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    if len(conf) < 2 or conf.std() == 0 or corr.std() == 0:
        return None
    return float(np.corrcoef(conf, corr)[0, 1])


def accuracy_block(correct: Sequence[bool]) -> dict:
    """{"n", "correct", "accuracy", "ci95"} for a list of 0/1 outcomes."""
    n = len(correct)
    k = int(sum(bool(c) for c in correct))
    return {"n": n, "correct": k, "accuracy": k / n if n else None, "ci95": wilson_interval(k, n)}


def calibration_block(probs: Sequence[Sequence[float]], predictions: Sequence[int], answers: Sequence[int]) -> dict:
    """ECE, Brier, NLL, mean confidence, correlation and the reliability bins."""
    confidence = [float(p[k]) for p, k in zip(probs, predictions)]
    correct = [k == a for k, a in zip(predictions, answers)]
    return {
        "ece": expected_calibration_error(confidence, correct),
        "brier": brier_score(probs, answers),
        "nll": negative_log_likelihood(probs, answers),
        "mean_confidence": float(np.mean(confidence)) if confidence else None,
        "confidence_correctness_r": correlation(confidence, correct),
        "reliability": reliability_bins(confidence, correct),
    }
