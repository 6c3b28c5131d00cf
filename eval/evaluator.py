"""Score one checkpoint on one benchmark: load, score what the store lacks, write the reports.

    report = evaluate("path/to/model", "bench.json", Path("out"), EvalSettings(method="letter"))

Scores go to a resumable store (``scores-cache.jsonl`` in the output folder unless another path
is given), so an interrupted run resumes where it stopped and a finished one is not redone; the
model is loaded only when something is left to score.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .data import Question, benchmark_fingerprint, load_benchmark
from .prompts import PROMPT_VERSION
from .report import build_report, prediction_rows, write_reports
from .store import ScoreStore

log = logging.getLogger("astrosage")

METHODS = ("letter", "choices", "generate")
#: Bump when scoring changes in a way that alters stored scores.
SCORER_VERSION = 1
STORE_NAME = "scores-cache.jsonl"


@dataclass(frozen=True)
class EvalSettings:
    """How to score; everything except batch_size and limit is part of the cache key."""

    method: str = "letter"
    batch_size: int = 8
    limit: int | None = None
    dtype: str = "float32"
    backend: str = "transformers"
    max_new_tokens: int = 512
    thinking: bool = False
    attn_implementation: str = "sdpa"  # same scores up to float rounding: not in the cache key
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")

    def key_fields(self) -> dict[str, Any]:
        """The settings that change scores."""
        fields: dict[str, Any] = {"method": self.method, "dtype": self.dtype, "prompt": PROMPT_VERSION, "scorer": SCORER_VERSION}
        if self.method == "generate":
            fields.update(backend=self.backend, max_new_tokens=self.max_new_tokens, thinking=self.thinking)
        return fields


def score_key(model_fp: str, bench_fp: str, settings: EvalSettings) -> str:
    """sha256 of model fingerprint + benchmark fingerprint + scoring settings."""
    blob = json.dumps({"model": model_fp, "benchmark": bench_fp, **settings.key_fields()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _batches(lm: Any, todo: list[Question], settings: EvalSettings, model_path: str):
    if settings.method == "letter":
        from .scoring import iter_letter

        return iter_letter(lm, todo, settings.batch_size)
    if settings.method == "choices":
        from .choices import iter_choices

        return iter_choices(lm, todo, settings.batch_size)
    from .generate import generate_vllm, iter_generate

    if settings.backend == "vllm":
        return generate_vllm(model_path, todo, settings.max_new_tokens, settings.thinking, settings.dtype)
    return iter_generate(lm, todo, settings.batch_size, settings.max_new_tokens, settings.thinking)


def evaluate(
    model_path: str,
    benchmark: str,
    out_dir: Path,
    settings: EvalSettings,
    *,
    name: str | None = None,
    benchmark_name: str | None = None,
    split: str | None = None,
    revision: str | None = None,
    model_fp: str | None = None,
    store_path: Path | None = None,
    store_dir: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score ``model_path`` on ``benchmark`` and write the reports into ``out_dir``; returns the report.

    The score store is ``store_path``, else ``<store_dir>/<score key>.jsonl``, else
    ``<out_dir>/scores-cache.jsonl``. ``on_progress(done, total)`` follows the scoring;
    ``on_batch(k)`` is called after the k-th new batch is stored (an exception there stops the
    run, keeping what was stored).
    """
    from astrosage.core.models import model_fingerprint

    if settings.method == "generate":
        from .generate import require_backend

        require_backend(settings.backend)
    out_dir = Path(out_dir)
    questions = load_benchmark(benchmark, split)
    selected = questions[: settings.limit] if settings.limit else questions
    key = score_key(model_fp or model_fingerprint(model_path, revision), benchmark_fingerprint(benchmark, split), settings)
    if store_path is None:
        store_path = Path(store_dir) / f"{key[:32]}.jsonl" if store_dir is not None else out_dir / STORE_NAME
    store = ScoreStore(store_path, key)
    todo = [q for q in selected if q.index not in store.rows]
    done = len(selected) - len(todo)
    if on_progress:
        on_progress(done, len(selected))
    t0 = time.monotonic()
    if todo:
        lm = None
        if not (settings.method == "generate" and settings.backend == "vllm"):
            from .modeling import load_model

            lm = load_model(
                model_path, settings.dtype, revision,
                attn_implementation=settings.attn_implementation, trust_remote_code=settings.trust_remote_code,
            )
        t0 = time.monotonic()
        for k, rows in enumerate(_batches(lm, todo, settings, model_path), start=1):
            store.append(rows)
            done += len(rows)
            if on_progress:
                on_progress(done, len(selected))
            if on_batch:
                on_batch(k)
    elapsed = time.monotonic() - t0
    scored = [store.rows[q.index] for q in selected]
    rows = prediction_rows(selected, scored, settings.method)
    meta = {
        "model": str(model_path),
        "model_name": name or Path(str(model_path)).name,
        "benchmark": str(benchmark),
        "benchmark_name": benchmark_name or Path(str(benchmark)).stem,
        "split": split,
        "method": settings.method,
        "settings": asdict(settings),
        "n_total": len(questions),
        "scored_now": len(todo),
        "from_cache": len(selected) - len(todo),
        "scoring_seconds": round(elapsed, 3),
        "questions_per_second": round(len(todo) / elapsed, 2) if todo and elapsed > 0 else None,
        "score_key": key,
    }
    report = build_report(selected, rows, meta)
    return write_reports(out_dir, rows, report)
