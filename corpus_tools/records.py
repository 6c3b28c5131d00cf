"""Paper metadata records: one dict per paper with the keys of examples/sample_corpus/metadata.jsonl."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

_VERSION = re.compile(r"v\d+$")

FIELDS = ("id", "title", "abstract", "authors", "categories", "primary_category", "submitted", "updated", "doi",
          "journal_ref", "comment", "license")


def strip_version(arxiv_id: str) -> str:
    """``2403.01234v2`` -> ``2403.01234`` (old ids keep their archive prefix)."""
    return _VERSION.sub("", arxiv_id.strip())


#: new-style (2403.01234, 0704.0001) and old-style (astro-ph/0601001, math.GT/0309136) ids, optional version
ARXIV_ID = re.compile(r"(\d{4}\.\d{4,5}|[a-z]+(-[a-z]+)*(\.[A-Z]{2})?/\d{7})(v\d+)?")


def paper_key(arxiv_id: str) -> str:
    """File-system key of a paper: the id with '/' replaced by '_'.

    Refuses anything that is not an arXiv id, so a bad record can never name a path like ``..``.
    """
    if not ARXIV_ID.fullmatch(arxiv_id):
        raise ValueError(f"{arxiv_id!r} is not an arXiv id (expected e.g. 2403.01234 or astro-ph/0601001)")
    return arxiv_id.replace("/", "_")


def in_categories(meta: dict[str, Any], categories: Iterable[str]) -> bool:
    """True if any of the paper's categories is one of ``categories`` or a subcategory of one."""
    cats = meta.get("categories") or []
    return any(c == want or c.startswith(want + ".") for c in cats for want in categories)


def in_dates(meta: dict[str, Any], date_from: str | None, date_to: str | None) -> bool:
    """Submission date (YYYY-MM-DD prefix of ``submitted``) within [date_from, date_to]."""
    day = str(meta.get("submitted") or "")[:10]
    if date_from and (not day or day < date_from):
        return False
    if date_to and (not day or day > date_to):
        return False
    return True


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (crash while appending) is ignored."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def dumps_jsonl(records: Iterable[dict[str, Any]]) -> str:
    """One JSON object per line (keys sorted, non-ASCII kept)."""
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
