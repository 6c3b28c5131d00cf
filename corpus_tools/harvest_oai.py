"""Metadata harvest through OAI-PMH (``ListRecords``, ``metadataPrefix=arXiv``), with resumption tokens.

State lives in ``<cache>/oai/``: every page's records are written atomically to
``pages/NNNNN.jsonl`` before ``state.json`` (the next resumption token) is updated, so a killed
harvest resumes with the next page and re-fetching a page only rewrites the same file. An
expired resumption token (``badResumptionToken``; arXiv's expire daily) restarts the list from
the newest datestamp seen; records are merged by id (the latest datestamp wins).
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

from astrosage.core.artifacts import atomic_write_json, atomic_write_text

from .http import HarvestError, PoliteSession
from .records import dumps_jsonl, read_jsonl

log = logging.getLogger("astrosage")

NS = {"oai": "http://www.openarchives.org/OAI/2.0/", "arxiv": "http://arxiv.org/OAI/arXiv/"}


class OaiError(RuntimeError):
    """An OAI-PMH error element (``code`` as in the protocol, e.g. badResumptionToken)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"OAI-PMH error {code}: {message}")
        self.code = code


def _text(node: ET.Element | None, path: str) -> str | None:
    if node is None:
        return None
    found = node.find(path, NS)
    if found is None or found.text is None:
        return None
    return " ".join(found.text.split())


def parse_page(content: bytes) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """(records, deleted ids, resumption token or None) of one ListRecords response."""
    try:
        root = ET.fromstring(content)
    except ET.ParseError as exc:
        raise OaiError("badXML", f"response is not XML ({exc})") from None
    err = root.find("oai:error", NS)
    if err is not None:
        raise OaiError(err.get("code", "unknown"), (err.text or "").strip())
    records, deleted = [], []
    for rec in root.iterfind("oai:ListRecords/oai:record", NS):
        header = rec.find("oai:header", NS)
        if header is not None and header.get("status") == "deleted":
            ident = _text(header, "oai:identifier") or ""
            deleted.append(ident.rsplit(":", 1)[-1])
            continue
        meta = rec.find("oai:metadata/arxiv:arXiv", NS)
        if meta is None:
            continue
        authors = []
        for a in meta.iterfind("arxiv:authors/arxiv:author", NS):
            name = " ".join(p for p in (_text(a, "arxiv:forenames"), _text(a, "arxiv:keyname")) if p)
            authors.append(name)
        cats = (_text(meta, "arxiv:categories") or "").split()
        created = _text(meta, "arxiv:created")
        records.append({
            "id": _text(meta, "arxiv:id"),
            "title": _text(meta, "arxiv:title"),
            "abstract": _text(meta, "arxiv:abstract"),
            "authors": authors,
            "categories": cats,
            "primary_category": cats[0] if cats else None,
            "submitted": f"{created}T00:00:00Z" if created else None,
            "updated": _text(meta, "arxiv:updated"),
            "doi": _text(meta, "arxiv:doi"),
            "journal_ref": _text(meta, "arxiv:journal-ref"),
            "comment": _text(meta, "arxiv:comments"),
            "license": _text(meta, "arxiv:license"),
            "datestamp": _text(header, "oai:datestamp"),
        })
    token_el = root.find("oai:ListRecords/oai:resumptionToken", NS)
    token = token_el.text.strip() if token_el is not None and token_el.text and token_el.text.strip() else None
    return records, deleted, token


def harvest_oai(
    session: PoliteSession,
    cache_dir: Path,
    base_url: str = "https://oaipmh.arxiv.org/oai",
    set_spec: str = "physics:astro-ph",
    date_from: str | None = None,
    date_to: str | None = None,
    on_page: Callable[[int, int], None] | None = None,
    max_pages: int | None = None,
) -> list[dict[str, Any]]:
    """Harvest the set; resumable (see module doc). ``date_from``/``date_to`` are OAI datestamps."""
    key = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{set_spec}_{date_from or 'all'}_{date_to or 'now'}")
    folder = Path(cache_dir) / "oai" / key
    pages = folder / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"page": 0, "token": None, "done": False, "from": date_from}
    fetched = 0
    while not state["done"]:
        if max_pages is not None and fetched >= max_pages:
            break
        if state["token"]:
            params = {"verb": "ListRecords", "resumptionToken": state["token"]}
        else:
            params = {"verb": "ListRecords", "metadataPrefix": "arXiv", "set": set_spec}
            if state.get("from"):
                params["from"] = state["from"]
            if date_to:
                params["until"] = date_to
        reply = session.fetch(base_url, params=params)
        try:
            records, deleted, token = parse_page(reply.content)
        except OaiError as exc:
            if session.cache is not None:
                session.cache.drop(reply.url)
            if exc.code == "noRecordsMatch":
                records, deleted, token = [], [], None
            elif exc.code == "badResumptionToken" and state["token"]:
                newest = max((r.get("datestamp") or "" for r in _all_records(pages)), default="") or state.get("from")
                log.warning("OAI-PMH resumption token expired; restarting the list from %s", newest)
                state = {**state, "token": None, "from": newest}
                atomic_write_json(state_path, state)
                continue
            else:
                raise
        for pid in deleted:
            records.append({"id": pid, "deleted": True})
        page_no = state["page"] + 1
        atomic_write_text(pages / f"{page_no:05d}.jsonl", dumps_jsonl(records))
        state = {**state, "page": page_no, "token": token, "done": token is None}
        atomic_write_json(state_path, state)
        fetched += 1
        if on_page:
            on_page(page_no, len(records))
    merged: dict[str, dict[str, Any]] = {}
    for rec in _all_records(pages):
        if rec.get("deleted"):
            merged.pop(rec["id"], None)
        else:
            merged[rec["id"]] = rec
    return sorted(merged.values(), key=lambda r: (r.get("submitted") or "", r["id"]))


def _all_records(pages: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in sorted(pages.glob("*.jsonl")):
        out.extend(read_jsonl(page))
    return out


__all__ = ["harvest_oai", "parse_page", "OaiError", "HarvestError"]
