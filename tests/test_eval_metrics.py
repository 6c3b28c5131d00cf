"""Metrics against values computed by hand on a fixed five-question set."""

from __future__ import annotations

import math

import pytest

from eval.data import Question
from eval.metrics import (
    accuracy_block,
    brier_score,
    calibration_block,
    correlation,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    wilson_interval,
)
from eval.report import build_report, prediction_rows

# probabilities over A-D, answer index; predictions are the argmax (first on ties)
PROBS = [
    [0.70, 0.10, 0.10, 0.10],  # answer A, predicted A (conf 0.70, bin 10)  correct
    [0.41, 0.29, 0.20, 0.10],  # answer B, predicted A (conf 0.41, bin 6)   wrong
    [0.25, 0.25, 0.25, 0.25],  # answer D, predicted A (conf 0.25, bin 3)   wrong
    [0.05, 0.05, 0.05, 0.85],  # answer D, predicted D (conf 0.85, bin 12)  correct
    [0.10, 0.72, 0.10, 0.08],  # answer A, predicted B (conf 0.72, bin 10)  wrong
]
ANSWERS = [0, 1, 3, 3, 0]
PREDS = [0, 0, 0, 3, 1]
CONF = [0.70, 0.41, 0.25, 0.85, 0.72]
CORRECT = [True, False, False, True, False]

# by hand:
# ECE: bin 10 holds 0.70 (right) and 0.72 (wrong): |0.5 - 0.71| = 0.21 with weight 2/5;
#      the others are alone: 0.41, 0.25, |1 - 0.85| = 0.15, each weight 1/5
ECE = 2 / 5 * 0.21 + (0.41 + 0.25 + 0.15) / 5  # 0.246
# Brier: 0.12 + 0.7222 + 0.75 + 0.03 + 1.3448 = 2.967 over 5
BRIER = 2.967 / 5
NLL = -(math.log(0.70) + math.log(0.29) + math.log(0.25) + math.log(0.85) + math.log(0.10)) / 5
# Pearson r: cov 0.378, sum sq conf 0.24452, sum sq correct 1.2
R = 0.378 / math.sqrt(0.24452 * 1.2)


def wilson_by_formula(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_hand_computed_calibration():
    assert ECE == pytest.approx(0.246)
    assert expected_calibration_error(CONF, CORRECT) == pytest.approx(ECE, abs=1e-12)
    assert brier_score(PROBS, ANSWERS) == pytest.approx(BRIER, abs=1e-12)
    assert negative_log_likelihood(PROBS, ANSWERS) == pytest.approx(NLL, abs=1e-12)
    assert NLL == pytest.approx(1.0891894, abs=1e-6)
    assert correlation(CONF, CORRECT) == pytest.approx(R, abs=1e-9)
    assert R == pytest.approx(0.69782, abs=1e-4)
    bins = reliability_bins(CONF, CORRECT)
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 5
    assert [i for i, b in enumerate(bins) if b["n"]] == [3, 6, 10, 12]
    assert bins[10]["n"] == 2 and bins[10]["accuracy"] == 0.5 and bins[10]["confidence"] == pytest.approx(0.71)


def test_perfect_and_degenerate_cases():
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert expected_calibration_error([0.0], [False]) == 0.0  # zero confidence lands in the first bin
    assert brier_score([[1, 0, 0, 0]], [0]) == 0.0
    assert negative_log_likelihood([[0.0, 1.0, 0, 0]], [0]) == pytest.approx(-math.log(1e-12))
    assert correlation([0.5, 0.5], [True, False]) is None
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize("k, n", [(2, 5), (0, 10), (10, 10), (37, 40)])
def test_wilson_interval(k, n):
    low, high = wilson_interval(k, n)
    exp_low, exp_high = wilson_by_formula(k, n)
    assert low == pytest.approx(exp_low, abs=1e-9) and high == pytest.approx(exp_high, abs=1e-9)
    assert 0 <= low <= k / n <= high <= 1


def test_wilson_known_value():
    low, high = wilson_interval(2, 5)
    assert (round(low, 4), round(high, 4)) == (0.1176, 0.7693)


def test_report_from_scores_matches_hand_values():
    questions = [
        Question(index=i, question=f"q{i}", options=("a", "b", "c", "d"), answer=a, topic="GA" if i < 3 else "SR")
        for i, a in enumerate(ANSWERS)
    ]
    scored = [{"index": i, "scores": [math.log(p) - 3.0 for p in probs]} for i, probs in enumerate(PROBS)]
    rows = prediction_rows(questions, scored, "letter")
    assert [r["prediction"] for r in rows] == ["ABCD"[k] for k in PREDS]
    assert [r["correct"] for r in rows] == CORRECT
    report = build_report(questions, rows, {"method": "letter"})
    assert report["accuracy"] == pytest.approx(0.4)
    assert report["accuracy_ci95"] == pytest.approx(wilson_by_formula(2, 5))
    assert report["ece"] == pytest.approx(ECE, abs=1e-5)
    assert report["brier"] == pytest.approx(BRIER, abs=1e-5)
    assert report["nll"] == pytest.approx(NLL, abs=1e-5)
    assert report["per_topic"]["GA"]["n"] == 3 and report["per_topic"]["GA"]["accuracy"] == pytest.approx(1 / 3)
    assert report["per_topic"]["SR"]["accuracy"] == pytest.approx(0.5)
    assert report["topic_source"] == "data"


def test_calibration_block_and_accuracy_block_agree():
    block = calibration_block(PROBS, PREDS, ANSWERS)
    assert block["ece"] == pytest.approx(ECE) and block["mean_confidence"] == pytest.approx(sum(CONF) / 5)
    acc = accuracy_block(CORRECT)
    assert (acc["n"], acc["correct"], acc["accuracy"]) == (5, 2, 0.4)
