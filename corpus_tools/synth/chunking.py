"""Corpus documents -> overlapping text chunks that carry their paper's metadata.

Chunks are about ``chunk_chars`` long (cosmosage used ~1,800 characters) and overlap by about
``overlap`` characters; cuts prefer a paragraph break, then a sentence end, then whitespace, so
words and (mostly) sentences stay whole. The order is deterministic: parquet files sorted by
name, rows in file order, chunks in text order; resuming relies on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DOC_COLUMNS = ("id", "title", "abstract", "text", "date", "categories", "authors", "year")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?\s")


@dataclass(frozen=True)
class Chunk:
    """One piece of a paper plus the context a teacher needs to write self-contained items."""

    paper_id: str
    chunk_index: int
    text: str
    title: str = ""
    abstract: str = ""
    year: str = ""
    categories: str = ""
    start: int = 0
    end: int = 0
    #: the paper's authors as in its metadata (corpus column ``authors``; empty when unknown)
    authors: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Stable identity of the chunk, e.g. ``2401.00417#3``."""
        return f"{self.paper_id}#{self.chunk_index}"


def _cut_point(text: str, start: int, target: int, min_len: int) -> int:
    """Best place to end a chunk at or before ``target`` (never before ``start + min_len``)."""
    if target >= len(text):
        return len(text)
    lo = start + min_len
    para = text.rfind("\n\n", lo, target)
    if para != -1:
        return para + 2
    best = -1
    for m in _SENTENCE_END.finditer(text, lo, target + 1):
        best = m.end()
    if best != -1:
        return best
    space = text.rfind(" ", lo, target)
    return space + 1 if space != -1 else target


def split_text(text: str, chunk_chars: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) character spans covering ``text``; consecutive spans overlap by ~``overlap``.

    A tail shorter than a quarter chunk is merged into the previous span instead of standing alone.
    """
    if overlap >= chunk_chars:
        raise ValueError(f"overlap ({overlap}) must be smaller than chunk_chars ({chunk_chars})")
    n = len(text)
    if n == 0:
        return []
    spans: list[tuple[int, int]] = []
    start = 0
    min_len = max(1, chunk_chars // 2)
    while start < n:
        end = _cut_point(text, start, start + chunk_chars, min_len)
        if n - end < chunk_chars // 4:
            end = n
        spans.append((start, end))
        if end >= n:
            break
        nxt = end - overlap
        space = text.find(" ", nxt, end)  # start the overlap on a word boundary
        nxt = space + 1 if space != -1 and space + 1 < end else nxt
        start = max(nxt, start + 1)
    return spans


def chunk_document(doc: dict, chunk_chars: int, overlap: int) -> list[Chunk]:
    """Chunks of one corpus row (id, title, abstract, text, date, categories, authors, year)."""
    text = str(doc.get("text") or "")
    date = str(doc.get("date") or "")
    cats = doc.get("categories") or ""
    if isinstance(cats, (list, tuple)):
        cats = " ".join(str(c) for c in cats)
    year = str(doc.get("year") or "") or date[:4]
    authors = doc.get("authors") or ()
    if isinstance(authors, str):  # a hand-made corpus may hold "A. Smith, B. Lee"
        authors = [a for a in authors.split(",") if a.strip()]
    common = dict(
        paper_id=str(doc["id"]),
        title=" ".join(str(doc.get("title") or "").split()),
        abstract=" ".join(str(doc.get("abstract") or "").split()),
        year=year if year.isdigit() else "",
        categories=str(cats),
        authors=tuple(" ".join(str(a).split()) for a in authors if str(a).strip()),
    )
    return [
        Chunk(chunk_index=i, text=text[s:e].strip(), start=s, end=e, **common)
        for i, (s, e) in enumerate(split_text(text, chunk_chars, overlap))
        if text[s:e].strip()
    ]


def doc_files(docs_dir: str | Path) -> list[Path]:
    """The corpus parquet shards in deterministic order; a clear error when there are none."""
    docs_dir = Path(docs_dir)
    files = sorted(docs_dir.glob("*.parquet")) if docs_dir.is_dir() else ([docs_dir] if docs_dir.is_file() else [])
    if not files:
        raise FileNotFoundError(f"no corpus documents (*.parquet) found at {docs_dir}")
    return files


def iter_chunks(
    docs_dir: str | Path, chunk_chars: int, overlap: int, max_chunks: int | None = None
) -> Iterator[Chunk]:
    """Every chunk of every document under ``docs_dir`` (the first ``max_chunks`` if given)."""
    import pyarrow.parquet as pq

    emitted = 0
    for path in doc_files(docs_dir):
        pf = pq.ParquetFile(path)
        missing = {"id", "text"} - set(pf.schema_arrow.names)
        if missing:
            raise ValueError(f"{path}: corpus shard lacks column(s) {sorted(missing)}")
        columns = [c for c in DOC_COLUMNS if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=256, columns=columns):
            for doc in batch.to_pylist():
                for chunk in chunk_document(doc, chunk_chars, overlap):
                    if max_chunks is not None and emitted >= max_chunks:
                        return
                    emitted += 1
                    yield chunk
