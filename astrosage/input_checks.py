"""Content checks of every local input a recipe names, run before the first stage.

``astrosage validate`` and the start of ``astrosage run`` call :func:`check_inputs`, so a bad
benchmark answer or a torn data line is reported in seconds, naming file, line and field, instead of
after hours of corpus → cpt → sft → merge. What is checked (local files only; Hub ids are read by
their stage):

* benchmarks (``eval.benchmarks``, ``corpus.decontamination.benchmarks``): read with the evaluator's
  own reader (:func:`eval.data.load_benchmark`: fields, answers A–D / 0–3), UTF-8 with the file and line
  of the first bad byte, duplicate question ids;
* SFT / CPT / perplexity text files (``sft.dataset``, ``*.general_mix``, ``cpt.dataset``,
  ``eval.perplexity_sets``): every JSON line is a JSON object (``file:line``); text rows have their text field; SFT rows the stage could not turn into a
  conversation are reported as warnings (the stage drops and counts them) unless no row is usable;
* the corpus ``metadata.jsonl`` (``corpus.local_dir``): torn lines and records without an ``id``.

Errors are ``(file, field, message)`` triples like :class:`~astrosage.core.recipe.RecipeError`'s.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .core.models import is_local_reference
from .core.recipe import Recipe

#: at most this many bytes of one data file are scanned up front; the stage checks the rest row by row
SCAN_BYTES = 256 * 1024 * 1024
#: problems listed per file before the rest are counted
MAX_LISTED = 5

Problem = tuple[str, str, str]


@dataclass
class InputReport:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def lines(self, problems: Iterable[Problem]) -> list[str]:
        return [f"{src}: {dotted}: {msg}" if dotted else f"{src}: {msg}" for src, dotted, msg in problems]


class InputError(ValueError):
    """Local inputs of the recipe are unusable; ``problems`` are (file, field, message)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("bad input data\n  " + "\n  ".join(InputReport().lines(problems)))


def _utf8_problem(path: Path, data: bytes) -> str | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return (f"not UTF-8: byte 0x{data[exc.start]:02x} at line {line}, column {col} (byte offset {exc.start}); "
                "re-save the file as UTF-8")
    return None


def _local_path(ref: str | Path) -> Path | None:
    """The existing local file or folder ``ref`` names; None for Hub ids, ``tiny:`` and missing paths
    (:func:`astrosage.core.models.is_local_reference` decides; ``check_paths`` names missing ones)."""
    if not is_local_reference(ref):
        return None
    path = Path(str(ref)).expanduser()
    return path if path.exists() else None


# ------------------------------------------------------------------------------------------- benchmarks
def check_benchmark(ref: str | Path, dotted: str, split: str | None = None) -> list[Problem]:
    """Problems of one local benchmark file (none for Hub ids: the eval stage reads those)."""
    from eval.data import BenchmarkError, load_benchmark

    path = _local_path(ref)
    if path is None or not path.is_file():
        return []
    shown = str(ref)
    if path.suffix.lower() in (".json", ".jsonl", ".csv"):
        bad = _utf8_problem(path, path.read_bytes())
        if bad:
            return [(shown, dotted, bad)]
    try:
        questions = load_benchmark(path, split)
    except BenchmarkError as exc:
        text = str(exc)
        return [(shown, dotted, text[len(str(path)) + 2:] if text.startswith(f"{path}: ") else text)]
    except UnicodeDecodeError as exc:  # a reader decoding in pieces: the message still names the file
        return [(shown, dotted, f"not UTF-8 ({exc.reason} at byte {exc.start}); re-save the file as UTF-8")]
    seen: dict[str, int] = {}
    dups: list[str] = []
    for q in questions:
        if q.id is None:
            continue
        if q.id in seen:
            dups.append(f"id {q.id!r} at rows {seen[q.id]} and {q.index}")
        else:
            seen[q.id] = q.index
    if dups:
        more = f" (and {len(dups) - MAX_LISTED} more)" if len(dups) > MAX_LISTED else ""
        return [(shown, f"{dotted} id", f"duplicate question ids: {'; '.join(dups[:MAX_LISTED])}{more}")]
    return []


# ------------------------------------------------------------------------------------------- JSON lines
def _json_lines(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed value, problem) for each non-blank line of a JSONL file (first SCAN_BYTES)."""
    read = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            read += len(raw)
            if read > SCAN_BYTES:
                return
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, None, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                torn = " (a torn line?)" if exc.pos >= len(text.rstrip()) else ""
                yield lineno, None, f"not valid JSON: {exc.msg} at column {exc.colno}{torn}"
                continue
            if not isinstance(value, dict):
                yield lineno, None, f"a JSON {type(value).__name__}, not an object"
                continue
            yield lineno, value, None


def _json_records(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    """(location, record, problem) for a .json list file or a .jsonl file."""
    if path.suffix.lower() == ".json":
        data = path.read_bytes()
        bad = _utf8_problem(path, data)
        if bad:
            yield str(path), None, bad
            return
        if data.lstrip()[:1] != b"[":
            return  # a dataset-info style json file, not records: the loader decides
        try:
            items = json.loads(data)
        except json.JSONDecodeError as exc:
            yield f"{path}:{exc.lineno}", None, f"not valid JSON: {exc.msg} at column {exc.colno}"
            return
        for i, item in enumerate(items):
            where = f"{path}[{i}]"
            yield (where, item, None) if isinstance(item, dict) else (where, None, f"a JSON {type(item).__name__}, not an object")
        return
    for lineno, value, problem in _json_lines(path):
        yield f"{path}:{lineno}", value, problem


def _data_files(ref: str) -> list[Path]:
    """Local JSON/JSONL files of a data reference, as the training loaders pick them (parquet wins in a
    folder; a folder with a README.md is a dataset with configs, read by ``datasets``). Hub ids: none.
    Listed here, not imported from ``astrosage.training``, so validation imports no training library."""
    path = _local_path(ref)
    if path is None:
        return []
    if path.is_file():
        return [path] if path.suffix.lower() in (".json", ".jsonl") else []
    if not path.is_dir() or (path / "README.md").exists() or next(path.rglob("*.parquet"), None) is not None:
        return []
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jsonl", ".json") and p.is_file())


def _listed(problems: list[Problem], extra: int, dotted: str, what: str) -> list[Problem]:
    if extra > 0:
        problems.append((problems[-1][0].rsplit(":", 1)[0], dotted, f"... and {extra} more {what}"))
    return problems


def check_text_data(ref: str, dotted: str, text_field: str) -> list[Problem]:
    """Plain-text documents (CPT data, perplexity sets): JSON objects with a string ``text_field``."""
    problems: list[Problem] = []
    extra = 0
    for f in _data_files(ref):
        for where, row, problem in _json_records(f):
            if problem is None and not isinstance(row.get(text_field), str):
                got = "missing" if text_field not in row else f"of type {type(row[text_field]).__name__}"
                problem = f"field {text_field!r} is {got}, not text (fields: {sorted(row)[:8]})"
            if problem is not None:
                if len(problems) < MAX_LISTED:
                    problems.append((where, dotted, problem))
                else:
                    extra += 1
    return _listed(problems, extra, dotted, "bad lines")


def check_chat_data(ref: str, dotted: str, fmt: str = "auto", columns: dict[str, str] | None = None) -> tuple[list[Problem], list[Problem]]:
    """SFT conversations: (errors, warnings). Non-object lines are errors; rows the stage would drop are warnings,
    unless no row at all is usable."""
    files = _data_files(ref)
    if not files:
        return [], []
    # the stage's own row reader (imports the training package: only when there is a local file to read)
    from .training.sft_data import RowError, to_messages

    errors: list[Problem] = []
    shape: list[Problem] = []
    extra_err = extra_shape = good = 0
    reasons: Counter[str] = Counter()
    for f in files:
        for where, row, problem in _json_records(f):
            if problem is not None:
                if len(errors) < MAX_LISTED:
                    errors.append((where, dotted, problem))
                else:
                    extra_err += 1
                continue
            try:
                to_messages(row, fmt, columns or None)
            except RowError as exc:
                reasons[exc.args[0] if exc.args else "bad_row"] += 1
                if len(shape) < MAX_LISTED:
                    shape.append((where, dotted, f"{exc}"))
                else:
                    extra_shape += 1
                continue
            good += 1
    errors = _listed(errors, extra_err, dotted, "bad lines")
    shape = _listed(shape, extra_shape, dotted, "rows the stage will drop")
    if shape and good == 0 and not errors:
        return shape, []
    return errors, shape


# ------------------------------------------------------------------------------------------- corpus
def check_metadata(local_dir: Path, dotted: str = "corpus.local_dir") -> list[Problem]:
    """The local corpus's metadata.jsonl: every line a JSON object with a non-empty ``id``."""
    meta = Path(local_dir).expanduser() / "metadata.jsonl"
    if not meta.is_file():
        return []  # check_paths / the corpus stage name a missing file
    problems: list[Problem] = []
    extra = 0
    ids: dict[str, int] = {}
    for lineno, rec, problem in _json_lines(meta):
        if problem is None:
            ident = rec.get("id")
            if not isinstance(ident, str) or not ident.strip():
                problem = "record without an 'id' (each paper needs its arXiv id)" if ident is None else f"field 'id' is {ident!r}, not an arXiv id"
            elif ident in ids:
                problem = f"duplicate id {ident!r} (first at line {ids[ident]})"
            else:
                ids[ident] = lineno
        if problem is not None:
            if len(problems) < MAX_LISTED:
                problems.append((f"{meta}:{lineno}", f"{dotted} metadata.jsonl", problem))
            else:
                extra += 1
    return _listed(problems, extra, f"{dotted} metadata.jsonl", "bad records")


# ------------------------------------------------------------------------------------------- recipe
def _benchmarks_needed(recipe: Recipe, stages: set[str]) -> bool:
    return bool(
        ("eval" in stages)
        or ("corpus" in stages)  # decontaminated against them
        or ("synth" in stages)
        or ("merge" in stages and (recipe.merge.sweep or recipe.merge.sweep_density))
    )


def check_inputs(recipe: Recipe, stages: Iterable[str] | None = None) -> InputReport:
    """Check the content of every local input that the given (default: all enabled) stages read."""
    enabled = {s for s in ("corpus", "synth", "cpt", "sft", "merge", "eval", "publish") if getattr(recipe, s).enabled}
    wanted = enabled if stages is None else enabled & set(stages)
    report = InputReport()

    def add(problems: list[Problem], into: list[Problem], what: str) -> None:
        report.checked.append(what)
        into.extend(problems)

    if _benchmarks_needed(recipe, wanted):
        for i, b in enumerate(recipe.eval.benchmarks):
            add(check_benchmark(b.path, f"eval.benchmarks[{i}].path", b.split), report.errors, b.path)
    if "corpus" in wanted:
        for i, p in enumerate(recipe.corpus.decontamination.benchmarks):
            add(check_benchmark(p, f"corpus.decontamination.benchmarks[{i}]"), report.errors, str(p))
        if recipe.corpus.source == "local" and recipe.corpus.local_dir is not None:
            add(check_metadata(recipe.corpus.local_dir), report.errors, f"{recipe.corpus.local_dir}/metadata.jsonl")
    if "cpt" in wanted:
        section = recipe.cpt
        if section.dataset and not recipe.corpus.enabled:
            add(check_text_data(section.dataset, "cpt.dataset", section.text_field), report.errors, section.dataset)
        for i, m in enumerate(section.general_mix):
            add(check_text_data(m.path, f"cpt.general_mix[{i}].path", section.text_field), report.errors, m.path)
    if "eval" in wanted:
        for i, ref in enumerate(getattr(recipe.eval, "perplexity_sets", [])):
            add(check_text_data(ref.path, f"eval.perplexity_sets[{i}].path", ref.text_field), report.errors, ref.path)
    if "sft" in wanted:
        sources = ([("sft.dataset.path", recipe.sft.dataset)] if recipe.sft.dataset else []) + [
            (f"sft.general_mix[{i}].path", m) for i, m in enumerate(recipe.sft.general_mix)
        ]
        for dotted, src in sources:
            errors, warnings = check_chat_data(src.path, dotted, src.format, src.columns)
            add(errors, report.errors, src.path)
            report.warnings.extend(warnings)
    return report


def require_valid_inputs(recipe: Recipe, stages: Iterable[str] | None = None) -> InputReport:
    """:func:`check_inputs`, raising :class:`InputError` if any input is unusable."""
    report = check_inputs(recipe, stages)
    if report.errors:
        raise InputError(report.errors)
    return report


__all__ = ["InputError", "InputReport", "check_inputs", "require_valid_inputs", "check_benchmark", "check_metadata"]
