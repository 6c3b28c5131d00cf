"""Export a benchmark as an lm-evaluation-harness task that runs unchanged.

    lm_eval --model hf --model_args pretrained=MODEL --include_path DIR --tasks astro_mcq

Writes ``DIR/<task>.yaml`` and ``DIR/<task>.jsonl``. Two flavours, matching the scorers:

* ``letter``: ``doc_to_text`` is the `letter` prompt (same Jinja template), ``doc_to_choice``
  is ``["A", "B", "C", "D"]``; lm-eval joins context and choice with ``target_delimiter`` (" "),
  so it scores " A" .. " D" after "Answer:", exactly the continuations our `letter` method uses.
* ``choices``: ``doc_to_text`` is the question-only context and ``doc_to_choice`` the option
  texts (lm-eval's ``acc`` / ``acc_norm`` correspond to our raw / length-normalised predictions).

``doc_to_target`` is the 0-based answer index; unlabelled sets (the public AstroMLab-1 file) get
``0`` as a placeholder, so lm-eval's accuracy is meaningless there: use its per-sample outputs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from astrosage.core.artifacts import atomic_write_text

from .data import LETTERS, load_benchmark, write_jsonl
from .prompts import CHOICES_TEMPLATE, LETTER_TEMPLATE, TARGET_DELIMITER

TASK_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def task_config(task: str, data_file: Path, method: str = "letter") -> dict[str, Any]:
    """The task YAML as a dict."""
    if method not in ("letter", "choices"):
        raise ValueError(f"lm-eval export supports methods 'letter' and 'choices', not {method!r}")
    letter = method == "letter"
    return {
        "task": task,
        "output_type": "multiple_choice",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(Path(data_file).resolve())}},
        "test_split": "test",
        "doc_to_text": LETTER_TEMPLATE if letter else CHOICES_TEMPLATE,
        "doc_to_choice": list(LETTERS) if letter else "{{[A, B, C, D]}}",
        "doc_to_target": "answer_index",
        "target_delimiter": TARGET_DELIMITER,
        "num_fewshot": 0,
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0, "exported_by": "astrosage eval export-lm-eval", "method": method},
    }


def export_lm_eval(benchmark: str, out_dir: Path, *, task: str | None = None, method: str = "letter",
                   split: str | None = None, limit: int | None = None, allow_unlabelled: bool = False) -> Path:
    """Write the task YAML + JSONL data; returns the YAML path.

    lm-eval needs a target for every question. Unlabelled questions (the public AstroMLab-1 set)
    get a placeholder target, which makes lm-eval's accuracy meaningless (only its per-sample
    log-likelihoods are), so they are refused unless ``allow_unlabelled`` is set.
    """
    task = task or re.sub(r"[^A-Za-z0-9_]", "_", Path(str(benchmark)).stem).strip("_") or "astro_mcq"
    if method == "choices" and not task.endswith("_choices"):
        task = f"{task}_choices"
    if not TASK_NAME_RE.match(task):
        raise ValueError(f"task name {task!r} must be letters, digits, '_', '.', '-'")
    questions = load_benchmark(benchmark, split, limit)
    unlabelled = sum(q.answer is None for q in questions)
    if unlabelled and not allow_unlabelled:
        raise ValueError(
            f"{benchmark}: {unlabelled} of {len(questions)} questions have no answer; lm-eval would score them against a "
            "placeholder (its accuracy would be meaningless). Pass --unlabelled to export anyway and read only the "
            "per-sample log-likelihoods (lm_eval --log_samples)"
        )
    out_dir = Path(out_dir)
    data_file = out_dir / f"{task}.jsonl"
    write_jsonl(
        (
            {
                "question": q.question,
                **dict(zip(LETTERS, q.options)),
                "answer_index": q.answer if q.answer is not None else 0,
                "labelled": q.answer is not None,
                "id": q.key,
            }
            for q in questions
        ),
        data_file,
    )
    yaml_path = out_dir / f"{task}.yaml"
    header = f"# lm-evaluation-harness task exported from {benchmark} ({len(questions)} questions)\n"
    if unlabelled:
        header += (f"# WARNING: {unlabelled} questions are UNLABELLED and have a placeholder target (A): acc/acc_norm "
                   "are meaningless; use the per-sample log-likelihoods (--log_samples) only.\n")
    atomic_write_text(yaml_path, header + yaml.safe_dump(task_config(task, data_file, method), sort_keys=False, allow_unicode=True, width=1000))
    return yaml_path
