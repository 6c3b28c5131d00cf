"""Loading training data (local jsonl/parquet files or folders, or Hub datasets) and mixing.

Mixing rule (``general_mix``): the domain data has weight 1.0; a mix entry with weight ``w``
contributes ``round(w * len(domain))`` examples, drawn from a seeded shuffle of that source
(after ``max_samples``), cycling through it again if it is smaller. The union is shuffled with
the run seed. Weights are in examples (documents / conversations), not tokens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from ..core.artifacts import file_fingerprint
from ..core.models import is_local_reference

_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataError(ValueError):
    """Training data is missing or malformed."""


def _local_files(path: Path) -> tuple[str, list[Path]]:
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in _LOCAL_SUFFIXES:
            raise DataError(f"{path}: unsupported data file type {suffix!r} (use .jsonl, .json or .parquet)")
        return ("parquet" if suffix == ".parquet" else "json"), [path]
    parquet = sorted(path.rglob("*.parquet"))
    if parquet:
        return "parquet", parquet
    jsonl = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jsonl", ".json"))
    if jsonl:
        return "json", jsonl
    raise DataError(f"{path}: folder has no .parquet, .jsonl or .json files")


def load_records(ref: str | Path, split: str = "train", max_samples: int | None = None, seed: int = 0, name: str | None = None):
    """Load a dataset from a local file/folder or the Hub (config ``name``) as a ``datasets.Dataset``."""
    import datasets

    ref = str(ref)
    if is_local_reference(ref):
        path = Path(ref).expanduser()
        if not path.exists():
            raise DataError(f"data path {ref!r} does not exist (resolved to {path.resolve()})")
        builder, files = _local_files(path)
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    else:
        ds = datasets.load_dataset(ref, name=name, split=split)
    if max_samples is not None and len(ds) > max_samples:
        ds = ds.shuffle(seed=seed).select(range(max_samples))
    return ds


def fingerprint(ref: str | Path, split: str = "train") -> str:
    """Content fingerprint of a data reference (files' hashes; the Hub id + split otherwise)."""
    ref = str(ref)
    h = hashlib.sha256()
    if is_local_reference(ref) and Path(ref).expanduser().exists():
        _, files = _local_files(Path(ref).expanduser())
        for f in files:
            h.update(f.name.encode())
            h.update(file_fingerprint(f).encode())
    else:
        h.update(f"hub:{ref}:{split}".encode())
    return h.hexdigest()


def mix(domain, general: Sequence[tuple[object, float]], seed: int, columns: Sequence[str]):
    """Domain dataset + weighted general datasets -> one shuffled dataset with ``columns`` only."""
    import datasets

    parts = [domain.select_columns(list(columns))]
    n_domain = len(domain)
    for i, (ds, weight) in enumerate(general):
        missing = [c for c in columns if c not in ds.column_names]
        if missing:
            raise DataError(f"general_mix[{i}] has no column(s) {missing} (has {ds.column_names})")
        want = int(round(weight * n_domain))
        if want == 0 or len(ds) == 0:
            continue
        ds = ds.select_columns(list(columns)).shuffle(seed=seed + 1 + i)
        indices = [j % len(ds) for j in range(want)]
        parts.append(ds.select(indices))
    if len(parts) == 1:
        return parts[0].shuffle(seed=seed) if general else parts[0]
    for k in range(1, len(parts)):
        parts[k] = parts[k].cast(parts[0].features)
    return datasets.concatenate_datasets(parts).shuffle(seed=seed)


def mix_fingerprint(domain_fp: str, general: Sequence[tuple[str, float, int | None, str]], seed: int, extra: dict) -> str:
    """Fingerprint of a mixed dataset: sources, weights, sample caps, seed and any extra settings."""
    payload = {"domain": domain_fp, "general": [list(g) for g in general], "seed": seed, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
