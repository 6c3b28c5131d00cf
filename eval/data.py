"""MCQ benchmark loading: JSON / JSONL / CSV / parquet files, a saved dataset folder, or a Hub name.

Every row needs ``question, A, B, C, D``; ``answer`` (a letter A-D or a 0-based index),
``explanation``, ``topic`` and ``id`` are optional. The public AstroMLab-1 release (no answers)
loads as-is. Problems raise :class:`BenchmarkError` naming the file, the row and the field.

    questions = load_benchmark("examples/mcq/astro_mcq_sample.json")
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from astrosage.core.models import is_local_reference

LETTERS: tuple[str, str, str, str] = ("A", "B", "C", "D")
REQUIRED_FIELDS: tuple[str, ...] = ("question", *LETTERS)
FILE_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".csv", ".parquet")


class BenchmarkError(ValueError):
    """A benchmark file is missing, unreadable or has an invalid row."""


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``answer`` is a 0-based option index or None (unlabelled)."""

    index: int
    question: str
    options: tuple[str, str, str, str]
    answer: int | None = None
    explanation: str | None = None
    topic: str | None = None
    id: str | None = None

    @property
    def answer_letter(self) -> str | None:
        """The answer as a letter, or None when unlabelled."""
        return None if self.answer is None else LETTERS[self.answer]

    @property
    def key(self) -> str:
        """The question's id if it has one, else its 0-based index as text."""
        return self.id if self.id is not None else str(self.index)


def _text(value: Any) -> str | None:
    """A cell as stripped text; None for missing/NaN."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from CSV/parquet
        return None
    return str(value).strip()


def parse_answer(value: Any) -> int | None:
    """'A'-'D' (any case), 0-3 or '0'-'3' -> 0-based index; None/'' -> None; else ValueError."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not one of A, B, C, D or 0-3")
    if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= int(value) <= 3:
        return int(value)
    text = str(value).strip()
    if text == "":
        return None
    if text.upper() in LETTERS:
        return LETTERS.index(text.upper())
    if text in ("0", "1", "2", "3"):
        return int(text)
    raise ValueError(f"{value!r} is not one of A, B, C, D or 0-3")


def make_question(row: Any, index: int, where: str) -> Question:
    """Validate one raw row; ``where`` (e.g. "file.json: row 3") prefixes every error."""
    if not isinstance(row, dict):
        raise BenchmarkError(f"{where}: expected an object with fields {', '.join(REQUIRED_FIELDS)}, got {type(row).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in row or _text(row[f]) is None]
    if missing:
        raise BenchmarkError(f"{where}: missing field(s) {', '.join(repr(m) for m in missing)} (each row needs {', '.join(REQUIRED_FIELDS)})")
    values = {f: _text(row[f]) for f in REQUIRED_FIELDS}
    empty = [f for f, v in values.items() if not v]
    if empty:
        kind = "question" if empty == ["question"] else "option"
        raise BenchmarkError(f"{where}: field {', '.join(repr(e) for e in empty)} is empty ({kind} text is required)")
    try:
        answer = parse_answer(row.get("answer"))
    except ValueError as exc:
        raise BenchmarkError(f"{where}: field 'answer': {exc}") from None
    ident = _text(row.get("id"))
    return Question(
        index=index,
        question=values["question"],  # type: ignore[arg-type]
        options=tuple(values[letter] for letter in LETTERS),  # type: ignore[arg-type]
        answer=answer,
        explanation=_text(row.get("explanation")) or None,
        topic=_text(row.get("topic")) or None,
        id=ident or None,
    )


def _read_json(path: Path) -> Iterator[tuple[Any, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if "questions" in data and isinstance(data["questions"], list):
            data = data["questions"]
        elif len(lists) == 1:
            data = data[lists[0]]
        else:
            raise BenchmarkError(f"{path}: expected a JSON list of questions (or an object with a 'questions' list)")
    if not isinstance(data, list):
        raise BenchmarkError(f"{path}: expected a JSON list of questions, got {type(data).__name__}")
    for i, row in enumerate(data):
        yield row, f"row {i}"


def _read_jsonl(path: Path) -> Iterator[tuple[Any, str]]:
    with path.open(encoding="utf-8") as fh:
        i = 0
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}: row {i} (line {lineno}): malformed JSON: {exc.msg} at column {exc.colno}") from None
            yield row, f"row {i} (line {lineno})"
            i += 1


def _read_csv(path: Path) -> Iterator[tuple[Any, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for i, row in enumerate(reader):
            if None in row:
                raise BenchmarkError(f"{path}: row {i} (line {reader.line_num}): more cells than header columns")
            yield row, f"row {i} (line {reader.line_num})"


def _read_parquet(path: Path) -> Iterator[tuple[Any, str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise BenchmarkError(f"{path}: not a readable parquet file: {exc}") from None
    for i, row in enumerate(table.to_pylist()):
        yield row, f"row {i}"


_READERS = {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}


def _read_dataset(ref: str, split: str | None) -> Iterator[tuple[Any, str]]:
    """A folder written by ``Dataset.save_to_disk`` or a Hub dataset name."""
    import datasets

    path = Path(ref).expanduser()
    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(ref, split=split or "train")
    except Exception as exc:
        raise BenchmarkError(f"{ref}: cannot load as a dataset ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        name = split or ("train" if "train" in loaded else next(iter(loaded)))
        if name not in loaded:
            raise BenchmarkError(f"{ref}: no split {name!r} (has: {', '.join(loaded)})")
        loaded = loaded[name]
    for i, row in enumerate(loaded):
        yield row, f"row {i}"


def iter_raw_rows(ref: str | Path, split: str | None = None) -> Iterator[tuple[Any, str]]:
    """(raw row, location) pairs from a benchmark reference; raises BenchmarkError for bad files."""
    ref = str(ref)
    path = Path(ref).expanduser()
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix not in _READERS:
            raise BenchmarkError(f"{path}: unknown file type {suffix or '(none)'!r}; use one of {', '.join(FILE_SUFFIXES)}")
        return _READERS[suffix](path)
    if is_local_reference(ref):
        if not path.exists():
            raise BenchmarkError(f"{path}: benchmark file not found")
    return _read_dataset(ref, split)


def load_benchmark(ref: str | Path, split: str | None = None, limit: int | None = None) -> list[Question]:
    """Load and validate every question (the first ``limit`` only, if given)."""
    shown = str(ref)
    questions: list[Question] = []
    for i, (row, where) in enumerate(iter_raw_rows(ref, split)):
        if limit is not None and i >= limit:
            break
        questions.append(make_question(row, i, f"{shown}: {where}"))
    if not questions:
        raise BenchmarkError(f"{shown}: no questions found")
    return questions


def benchmark_fingerprint(ref: str | Path, split: str | None = None) -> str:
    """Content hash of a local benchmark file/folder; for a Hub name, a hash of name + split."""
    from astrosage.core.artifacts import tree_fingerprint

    path = Path(str(ref)).expanduser()
    if path.exists():
        return tree_fingerprint(path)
    return hashlib.sha256(f"hub-dataset:{ref}:{split or 'train'}".encode()).hexdigest()


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    """Atomically write rows as JSON lines."""
    from astrosage.core.artifacts import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
