"""One paper: metadata + e-print bytes -> a document record, or a rejection reason."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .eprint import EprintError, Limits, open_eprint
from .latex import LatexError, assemble
from .render import render

_WITHDRAWN = re.compile(r"\b(this (paper|article|submission|manuscript) (has been|is) withdrawn|withdrawn by the (author|arxiv|admin))", re.I)


@dataclass
class Extracted:
    """Outcome for one paper: ``doc`` when usable, else ``reason`` (+ ``detail``)."""

    id: str
    doc: dict[str, Any] | None = None
    reason: str | None = None
    detail: str = ""
    info: dict[str, str] = field(default_factory=dict)


def is_withdrawn(meta: dict[str, Any], body: str | None = None) -> bool:
    """arXiv marks withdrawals in the comment ("This paper has been withdrawn ...") and the stub text."""
    if _WITHDRAWN.search(meta.get("comment") or ""):
        return True
    return body is not None and len(body) < 2_000 and bool(_WITHDRAWN.search(body))


def _clean_meta_text(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def document_record(meta: dict[str, Any], text: str, source: str) -> dict[str, Any]:
    """The output row (DESIGN.md fields) for a paper."""
    date = meta.get("submitted") or meta.get("published") or meta.get("date") or ""
    return {
        "id": meta["id"],
        "title": _clean_meta_text(meta.get("title")),
        "abstract": _clean_meta_text(meta.get("abstract")),
        "text": text,
        "categories": list(meta.get("categories") or []),
        "date": str(date)[:10],
        "source": source,
        "license": meta.get("license") or "",
        "n_chars": len(text),
    }


def extract_paper(meta: dict[str, Any], data: bytes | None, limits: Limits = Limits(), source: str = "arxiv") -> Extracted:
    """E-print bytes -> clean text with title + abstract (from metadata) prepended."""
    pid = meta["id"]
    if is_withdrawn(meta):
        return Extracted(pid, reason="withdrawn", detail=(meta.get("comment") or "")[:200])
    if data is None:
        return Extracted(pid, reason="eprint_missing")
    try:
        files = open_eprint(data, limits)
        latex, info = assemble(files)
        rendered = render(latex)
    except (EprintError, LatexError) as exc:
        return Extracted(pid, reason=exc.reason, detail=exc.detail[:300])
    except RecursionError:
        return Extracted(pid, reason="unparsable", detail="nesting too deep")
    body = rendered.text
    if is_withdrawn({}, body):
        return Extracted(pid, reason="withdrawn", detail="withdrawal notice in the source")
    title = _clean_meta_text(meta.get("title")) or (rendered.title or "")
    abstract = _clean_meta_text(meta.get("abstract")) or (rendered.abstract or "")
    meta = {**meta, "title": title, "abstract": abstract}
    text = "\n\n".join(p for p in (title, abstract, body) if p)
    return Extracted(pid, doc=document_record(meta, text, source), info=info)
