"""Metadata harvest through the arXiv API with the ``arxiv`` package, sliced by submittedDate.

Every query covers one category set and one date slice (``corpus.api_slice_days``), so no query
comes near the API's 30,000-result window (a slice that still hits it is split in two). The
``arxiv.Client`` gets a :class:`~corpus_tools.http.PoliteSession` as its HTTP session, which adds
what the package lacks: timeouts, backoff honouring Retry-After, one request per interval, and
an on-disk cache of every page. Each finished slice is written atomically to
``<cache>/api/<categories>/<from>_<to>.jsonl``; an interrupted harvest resumes at the first missing
slice (the pages of a half-done slice come back from the cache), so nothing is duplicated or lost.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

import arxiv

from astrosage.core.artifacts import atomic_write_text

from .http import PoliteSession
from .records import dumps_jsonl, read_jsonl, strip_version

log = logging.getLogger("astrosage")

API_WINDOW = 30_000


def date_slices(date_from: str, date_to: str, days: int) -> list[tuple[date, date]]:
    """Consecutive inclusive [start, end] date ranges of at most ``days`` days covering the range."""
    start, end = date.fromisoformat(date_from), date.fromisoformat(date_to)
    if end < start:
        raise ValueError(f"date_to {date_to} is before date_from {date_from}")
    out = []
    while start <= end:
        stop = min(end, start + timedelta(days=days - 1))
        out.append((start, stop))
        start = stop + timedelta(days=1)
    return out


def category_query(categories: Iterable[str]) -> str:
    """``astro-ph`` -> ``cat:astro-ph*`` (all subcategories); a subcategory is matched exactly."""
    terms = [f"cat:{c}*" if "." not in c else f"cat:{c}" for c in categories]
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"


def slice_query(categories: Iterable[str], start: date, end: date) -> str:
    return f"{category_query(categories)} AND submittedDate:[{start:%Y%m%d}0000 TO {end:%Y%m%d}2359]"


def result_to_record(r: arxiv.Result) -> dict[str, Any]:
    """An ``arxiv.Result`` as a metadata record."""
    return {
        "id": strip_version(r.get_short_id()),
        "title": " ".join((r.title or "").split()),
        "abstract": " ".join((r.summary or "").split()),
        "authors": [a.name for a in r.authors],
        "categories": list(r.categories),
        "primary_category": r.primary_category,
        "submitted": r.published.strftime("%Y-%m-%dT%H:%M:%SZ") if r.published else None,
        "updated": r.updated.strftime("%Y-%m-%dT%H:%M:%SZ") if r.updated else None,
        "doi": r.doi,
        "journal_ref": r.journal_ref,
        "comment": r.comment,
        "license": None,
    }


def make_client(session: PoliteSession, api_url: str, page_size: int) -> arxiv.Client:
    """An ``arxiv.Client`` whose HTTP goes through ``session`` (which does the waiting and retrying)."""
    client = arxiv.Client(page_size=page_size, delay_seconds=0.0, num_retries=0)
    client.query_url_format = api_url + "?{}"
    client._session = session  # the package's only hook for transport; it calls .get(url, headers=...)
    return client


def _fetch_slice(client: arxiv.Client, session: PoliteSession, query: str, empty_retries: int = 3) -> list[dict[str, Any]]:
    search = arxiv.Search(query=query, max_results=API_WINDOW, sort_by=arxiv.SortCriterion.SubmittedDate,
                          sort_order=arxiv.SortOrder.Ascending)
    for attempt in range(empty_retries + 1):
        try:
            return [result_to_record(r) for r in client.results(search)]
        except arxiv.UnexpectedEmptyPageError as exc:  # transient on arXiv's side: never keep that page cached
            if session.cache is not None:
                session.cache.drop(exc.url)
            if attempt == empty_retries:
                raise
            log.warning("arXiv API returned an unexpected empty page; retrying the slice")
    return []


def harvest_api(
    session: PoliteSession,
    cache_dir: Path,
    categories: list[str],
    date_from: str,
    date_to: str,
    slice_days: int = 7,
    page_size: int = 500,
    api_url: str = "https://export.arxiv.org/api/query",
    on_slice: Callable[[int, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Harvest metadata of all papers in ``categories`` submitted in [date_from, date_to]; resumable."""
    folder = Path(cache_dir) / "api" / "+".join(sorted(categories)).replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    client = make_client(session, api_url, page_size)
    pending = date_slices(date_from, date_to, slice_days)
    done = 0
    records: dict[str, dict[str, Any]] = {}
    while pending:
        start, end = pending.pop(0)
        path = folder / f"{start:%Y%m%d}_{end:%Y%m%d}.jsonl"
        if path.exists():
            batch = read_jsonl(path)
        else:
            batch = _fetch_slice(client, session, slice_query(categories, start, end))
            if len(batch) >= API_WINDOW and end > start:
                mid = start + (end - start) // 2
                pending[:0] = [(start, mid), (mid + timedelta(days=1), end)]
                continue
            atomic_write_text(path, dumps_jsonl(batch))
        for rec in batch:
            records[rec["id"]] = rec
        done += 1
        if on_slice:
            on_slice(done, done + len(pending), len(records))
    return sorted(records.values(), key=lambda r: (r.get("submitted") or "", r["id"]))
