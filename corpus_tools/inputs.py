"""The extraction step's inputs: ``inputs.jsonl`` lines -> (metadata, e-print bytes, source).

A line is one paper (``{"kind": "paper", "meta", "path", "source"}``: the e-print is a local
file) or one arXiv bulk source tar with the papers wanted from it (``{"kind": "tar", "tar",
"papers", "requester_pays"}``), streamed through fsspec. Task ``rank`` of ``world_size`` reads
lines ``rank, rank + world_size, ...``; the file is written once, so a resumed run keeps the
original split of work between tasks.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from astrosage.core.artifacts import atomic_write_text

from .records import dumps_jsonl

_BULK_NAME = re.compile(r"^([a-z][a-z\-]*?)(\d{7})$")


def write_inputs(path: Path, inputs: Iterable[dict[str, Any]]) -> int:
    """Write the input lines unless a previous (killed) run did; return how many lines there are."""
    if not path.exists():
        atomic_write_text(path, dumps_jsonl(inputs))
    with path.open(encoding="utf-8") as fh:
        return sum(1 for _ in fh)


def bulk_member_id(member: str) -> str | None:
    """arXiv id of a bulk-tar member (``2401/2401.00001.gz`` -> ``2401.00001``; ``0601/astro-ph0601001.gz``)."""
    base = os.path.basename(member)
    for suffix in (".gz", ".pdf", ".tar"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    m = _BULK_NAME.match(base)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    return base or None


def iter_bulk_tar(path: str, wanted: set[str], requester_pays: bool = True) -> Iterator[tuple[str, bytes]]:
    """Stream one arXiv bulk source tar through fsspec, yielding (id, e-print bytes) for wanted ids."""
    import tarfile

    import fsspec

    kwargs = {"requester_pays": True} if requester_pays and path.startswith("s3://") else {}
    with fsspec.open(path, "rb", **kwargs) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            pid = bulk_member_id(member.name)
            if pid not in wanted:
                continue
            f = tar.extractfile(member)
            if f is not None:
                yield pid, f.read()


def iter_papers(path: Path, rank: int = 0, world_size: int = 1) -> Iterator[tuple[dict[str, Any], bytes | None, str]]:
    """(metadata, e-print bytes or None, source) of every paper of this task's input lines."""
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i % world_size != rank:
                continue
            item = json.loads(line)
            if item["kind"] == "tar":
                # papers of this month that are not in this tar are in another one; the stage
                # reports papers found in no tar at all as eprint_missing
                metas = {m["id"]: m for m in item["papers"]}
                for pid, blob in iter_bulk_tar(item["tar"], set(metas), item.get("requester_pays", True)):
                    yield metas[pid], blob, "arxiv"
                continue
            file = item.get("path")
            blob = Path(file).read_bytes() if file and Path(file).is_file() else None
            yield item["meta"], blob, item.get("source", "arxiv")
