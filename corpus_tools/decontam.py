"""Benchmark decontamination: word 13-gram overlap with benchmark items, and drop-by-source.

Each benchmark item contributes the n-grams of ``question + options`` (the text a model is scored
on, as in GPT-3 / lm-eval decontamination). A document sharing any one of them is contaminated.
Papers from the benchmark's source journal (ARA&A for AstroMLab-1) are dropped by DOI prefix or
journal reference before their text is even extracted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .hashing import ngram_hashes, word_hashes, words

OPTION_KEYS = ("A", "B", "C", "D", "E")


def _benchmark_error():
    from eval.data import BenchmarkError

    return BenchmarkError


class BenchmarkFormatError(ValueError):
    """A benchmark file cannot be read as multiple-choice items."""


def _item_text(item: dict[str, Any]) -> str:
    parts = [str(item.get("question") or item.get("prompt") or "")]
    for key in OPTION_KEYS:
        if item.get(key) is not None:
            parts.append(str(item[key]))
    for key in ("choices", "options"):
        val = item.get(key)
        if isinstance(val, list):
            parts.extend(str(v) for v in val)
        elif isinstance(val, dict):
            parts.extend(str(v) for v in val.values())
    return " ".join(p for p in parts if p)


def load_benchmark_texts(path: str | Path, split: str | None = None) -> list[str]:
    """question + options of every item of a benchmark, read by the evaluator's own reader
    (:func:`eval.data.iter_raw_rows`: JSON list / {"questions": [...]}, JSONL, CSV, parquet, datasets),
    so decontamination and evaluation always see the same list of questions. Options may be
    A-E fields or a ``choices``/``options`` list; answers are not needed."""
    from eval.data import iter_raw_rows

    try:
        items = [row for row, _ in iter_raw_rows(path, split)]
    except _benchmark_error() as exc:
        raise BenchmarkFormatError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchmarkFormatError(f"{path}: cannot read benchmark ({type(exc).__name__}: {exc})") from None
    if not all(isinstance(i, dict) for i in items):
        raise BenchmarkFormatError(f"{path}: expected a list of question objects")
    texts = [_item_text(i) for i in items]
    if not any(texts):
        raise BenchmarkFormatError(f"{path}: no item has a 'question' field")
    return texts


def benchmark_refs(recipe: Any) -> list[str]:
    """Benchmarks to decontaminate against: ``eval.benchmarks`` + ``corpus.decontamination.benchmarks``, first mention first."""
    refs = [b.path for b in recipe.eval.benchmarks] + [str(p) for p in recipe.corpus.decontamination.benchmarks]
    return list(dict.fromkeys(refs))


def load_benchmark(ref: str) -> list[str]:
    """question + options of every item of a local benchmark file or, failing that, a Hub dataset id."""
    path = Path(ref).expanduser()
    if path.exists():
        return load_benchmark_texts(path)
    try:
        import datasets

        ds = datasets.load_dataset(ref, split="train")
    except Exception as exc:  # noqa: BLE001 - any loader failure means we cannot decontaminate
        raise RuntimeError(f"cannot load benchmark {ref!r} for decontamination: {exc}") from None
    return [_item_text(dict(r)) for r in ds]


class NgramIndex:
    """Sorted array of benchmark n-gram hashes; membership tests are vectorised (np.searchsorted)."""

    def __init__(self, hashes: np.ndarray, n: int):
        self.hashes = np.unique(hashes.astype(np.uint64))
        self.n = n

    @classmethod
    def from_benchmarks(cls, refs: Iterable[str], n: int) -> "NgramIndex":
        """The n-grams of every item of the benchmarks (see :func:`load_benchmark`)."""
        return cls.from_texts((text for ref in refs for text in load_benchmark(ref)), n)

    @classmethod
    def from_texts(cls, texts: Iterable[str], n: int) -> "NgramIndex":
        arrays = []
        for text in texts:
            wh = word_hashes(words(text))
            if len(wh) >= n:
                arrays.append(ngram_hashes(wh, n))
        return cls(np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint64), n)

    def save(self, path: Path) -> None:
        np.save(path, self.hashes)

    @classmethod
    def load(cls, path: Path, n: int) -> "NgramIndex":
        return cls(np.load(path), n)

    def overlap(self, text: str) -> int:
        """Number of the text's n-grams that occur in a benchmark item."""
        if len(self.hashes) == 0:
            return 0
        wh = word_hashes(words(text))
        if len(wh) < self.n:
            return 0
        grams = ngram_hashes(wh, self.n)
        pos = np.searchsorted(self.hashes, grams)
        pos[pos == len(self.hashes)] = 0
        return int(np.count_nonzero(self.hashes[pos] == grams))


def source_match(meta: dict[str, Any], doi_prefixes: Iterable[str], journal_refs: Iterable[str]) -> str | None:
    """Why the paper comes from a benchmark source (DOI prefix / journal_ref), else None."""
    doi = (meta.get("doi") or "").strip().lower()
    for prefix in doi_prefixes:
        if prefix and doi.startswith(prefix.lower()):
            return f"doi {doi} starts with {prefix}"
    ref = (meta.get("journal_ref") or "").lower()
    for name in journal_refs:
        if name and name.lower() in ref:
            return f"journal_ref {meta.get('journal_ref')!r} contains {name!r}"
    return None
