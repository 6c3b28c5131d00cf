"""Turning raw scores into predictions and reports on disk.

Files written into the output folder:

* ``predictions.jsonl``: one row per question (index, id, prediction, probabilities, confidence,
  answer and correct when labelled, topic, plus method extras);
* ``report.json`` / ``report.md``: accuracy with a 95% Wilson interval, per-topic accuracy,
  calibration (ECE, Brier, NLL, correlation), settings;
* ``reliability.png`` (labelled sets) and ``topics.png``;
* ``submission.txt`` for unlabelled sets: one predicted letter per line, in question order
  (what the AstroMLab authors ask for).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from astrosage.core.artifacts import atomic_write_json, atomic_write_text

from .data import LETTERS, Question, write_jsonl
from .metrics import accuracy_block, calibration_block, softmax
from .topics import SUBFIELDS, topics_for


def prediction_rows(questions: Sequence[Question], scored: Sequence[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """Join questions with their raw score rows into prediction rows."""
    topics, _ = topics_for(list(questions))
    rows = []
    for q, raw, topic in zip(questions, scored, topics):
        probs = softmax(raw["scores"])
        best = max(range(4), key=lambda k: (probs[k], -k))
        pred = LETTERS[best]
        row: dict[str, Any] = {"index": q.index, "id": q.key, "prediction": pred}
        if method == "generate":
            row["extracted"] = raw.get("extracted") is not None
            pred = raw.get("extracted") or pred
            row["prediction"] = pred
        k = LETTERS.index(pred)
        row.update(
            probabilities=dict(zip(LETTERS, (round(p, 6) for p in probs))),
            confidence=round(probs[k], 6),
            topic=topic,
            scores=raw["scores"],
        )
        if q.answer is not None:
            row["answer"] = q.answer_letter
            row["correct"] = pred == q.answer_letter
        if method == "choices":
            row["prediction_norm"] = raw["prediction_norm"]
            if q.answer is not None:
                row["correct_norm"] = raw["prediction_norm"] == q.answer_letter
        if method == "generate":
            row["generation"] = raw.get("generation")
            row["explanation"] = raw.get("explanation")
        rows.append(row)
    return rows


def build_report(questions: Sequence[Question], rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Headline metrics, per-topic accuracy and calibration (None where labels are missing)."""
    labelled = [r for r in rows if "answer" in r]
    _, topic_source = topics_for(list(questions))
    report: dict[str, Any] = {
        **meta,
        "n": len(rows),
        "n_labelled": len(labelled),
        "labelled": bool(rows) and len(labelled) == len(rows),
        "topic_source": topic_source,
        "prediction_counts": {x: c for x, c in sorted(Counter(r["prediction"] for r in rows).items())},
        "accuracy": None,
        "accuracy_ci95": None,
        "ece": None,
        "brier": None,
        "nll": None,
        "mean_confidence": sum(r["confidence"] for r in rows) / len(rows) if rows else None,
        "confidence_correctness_r": None,
    }
    if labelled:
        acc = accuracy_block([r["correct"] for r in labelled])
        report.update(accuracy=acc["accuracy"], accuracy_ci95=acc["ci95"], n_correct=acc["correct"])
        probs = [[r["probabilities"][x] for x in LETTERS] for r in labelled]
        preds = [LETTERS.index(r["prediction"]) for r in labelled]
        answers = [LETTERS.index(r["answer"]) for r in labelled]
        report.update(calibration_block(probs, preds, answers))
        if meta.get("method") == "choices":
            report["accuracy_norm"] = accuracy_block([r["correct_norm"] for r in labelled])["accuracy"]
    if meta.get("method") == "generate":
        report["extraction_failure_rate"] = sum(not r["extracted"] for r in rows) / len(rows) if rows else None
    per_topic: dict[str, dict[str, Any]] = {}
    for topic in sorted({r["topic"] for r in rows}):
        in_topic = [r for r in rows if r["topic"] == topic]
        marked = [r["correct"] for r in in_topic if "correct" in r]
        block = accuracy_block(marked) if marked else {"accuracy": None, "ci95": None}
        per_topic[topic] = {"n": len(in_topic), "accuracy": block["accuracy"], "ci95": block["ci95"]}
    report["per_topic"] = per_topic
    return report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def render_markdown(report: dict[str, Any]) -> str:
    """A human-readable report.md."""
    ci = report.get("accuracy_ci95")
    lines = [
        f"# Evaluation: {report.get('model_name')} on {report.get('benchmark_name')}",
        "",
        f"- model: `{report.get('model')}`",
        f"- benchmark: `{report.get('benchmark')}` ({report['n']} questions scored of {report.get('n_total')})",
        f"- method: `{report.get('method')}`",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {_pct(report['accuracy'])}" + (f" (95% CI {_pct(ci[0])}–{_pct(ci[1])})" if ci else "") + " |",
    ]
    if "accuracy_norm" in report:
        lines.append(f"| accuracy (length-normalised) | {_pct(report['accuracy_norm'])} |")
    if "extraction_failure_rate" in report:
        lines.append(f"| answer extraction failures | {_pct(report['extraction_failure_rate'])} |")
    lines += [
        f"| ECE (15 bins) | {_num(report['ece'])} |",
        f"| Brier | {_num(report['brier'])} |",
        f"| NLL | {_num(report['nll'])} |",
        f"| mean confidence | {_num(report['mean_confidence'])} |",
        f"| confidence–correctness r | {_num(report['confidence_correctness_r'])} |",
        "",
        f"## Per topic (topics from {report['topic_source']})",
        "",
        "| topic | n | accuracy | 95% CI |",
        "|---|---|---|---|",
    ]
    for topic, block in report["per_topic"].items():
        name = f"{topic} ({SUBFIELDS[topic]})" if topic in SUBFIELDS else topic
        tci = block["ci95"]
        lines.append(f"| {name} | {block['n']} | {_pct(block['accuracy'])} | {f'{_pct(tci[0])}–{_pct(tci[1])}' if tci else 'n/a'} |")
    lines += ["", "Predicted letters: " + ", ".join(f"{k}: {v}" for k, v in report["prediction_counts"].items()), ""]
    if not report["labelled"]:
        lines += ["Unlabelled set: send `submission.txt` (one letter per question, in order) to the benchmark authors.", ""]
    figures = [f for f in ("reliability.png", "topics.png") if f in report.get("files", [])]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def write_reports(out_dir: Path, rows: list[dict[str, Any]], report: dict[str, Any]) -> dict[str, Any]:
    """Write predictions, plots, submission, report.json and report.md; returns the report."""
    from .plots import reliability_diagram, topic_bars

    out_dir.mkdir(parents=True, exist_ok=True)
    files = ["predictions.jsonl", "report.json", "report.md"]
    write_jsonl(rows, out_dir / "predictions.jsonl")
    title = f"{report.get('model_name')} / {report.get('benchmark_name')} ({report.get('method')})"
    if report["ece"] is not None:
        reliability_diagram(report["reliability"], report["ece"], title, out_dir / "reliability.png")
        files.append("reliability.png")
    topic_bars(report["per_topic"], title, out_dir / "topics.png")
    files.append("topics.png")
    if not report["labelled"]:
        write_submission([r["prediction"] for r in rows], out_dir / "submission.txt")
        files.append("submission.txt")
    report["files"] = files
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    return report


def write_submission(letters: Sequence[str], path: Path) -> Path:
    """One predicted letter per line, in question order."""
    bad = [i for i, x in enumerate(letters) if x not in LETTERS]
    if bad:
        raise ValueError(f"submission: rows {bad[:5]} have no letter prediction")
    return atomic_write_text(path, "".join(f"{x}\n" for x in letters))


def read_submission(path: Path) -> list[str]:
    """The letters of a submission file (for checks)."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
