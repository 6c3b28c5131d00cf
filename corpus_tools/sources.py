"""Where papers come from: a local folder, the arXiv API, OAI-PMH, or the S3 bulk source tars.

Each source yields metadata records plus, per paper, where its e-print bytes are: a file path
(local folder, or the download cache) or a bulk tar that holds it. Network results are cached
under the cache folder (``<run dir>/corpus.cache`` by default), outside the stage folder, so an
interrupted harvest or download resumes where it stopped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .records import in_categories, in_dates, paper_key, read_jsonl

log = logging.getLogger("astrosage")


class SourceError(ValueError):
    """The recipe's corpus source cannot be used as configured (message says what to set)."""


@dataclass
class Gathered:
    """Papers to process: input lines for the extract step, plus papers already rejected."""

    records: list[dict[str, Any]]
    inputs: list[dict[str, Any]]
    rejected: list[dict[str, str]] = field(default_factory=list)


Progress = Callable[[str, int, int | None], None]  # (step, completed, total)


def _select(records: list[dict[str, Any]], cfg: Any) -> list[dict[str, Any]]:
    cats = list(cfg.categories) + (["gr-qc"] if cfg.include_gr_qc else [])
    chosen = [r for r in records if in_categories(r, cats) and in_dates(r, cfg.date_from, cfg.date_to)]
    chosen.sort(key=lambda r: (str(r.get("submitted") or ""), r["id"]))
    return chosen[: cfg.max_papers] if cfg.max_papers else chosen


def _local_records(local_dir: Path) -> list[dict[str, Any]]:
    meta = local_dir / "metadata.jsonl"
    if not meta.exists():
        raise SourceError(f"corpus.local_dir {local_dir} has no metadata.jsonl (one JSON record per paper: id, title, abstract, categories, ...)")
    return read_jsonl(meta)


def gather_local(cfg: Any) -> Gathered:
    """Papers of ``corpus.local_dir``: metadata.jsonl + e-print files (``eprint`` field or eprints/<key>)."""
    if cfg.local_dir is None:
        raise SourceError("corpus.source is 'local' but corpus.local_dir is not set")
    root = Path(cfg.local_dir).expanduser().resolve()
    records = _select(_local_records(root), cfg)
    inputs, rejected = [], []
    for rec in records:
        rel = rec.get("eprint") or f"eprints/{paper_key(rec['id'])}"
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            rejected.append({"id": rec["id"], "reason": "eprint_missing", "detail": f"no file {rel}"})
            continue
        inputs.append({"kind": "paper", "meta": rec, "path": str(path)})
    return Gathered(records, inputs, rejected)


def _session(cfg: Any, cache: Path):
    from .http import PoliteSession, ResponseCache

    if not cfg.contact_email:
        raise SourceError(f"corpus.source '{cfg.source}' needs corpus.contact_email (arXiv asks for a contact in the User-Agent)")
    return PoliteSession(cfg.contact_email, cfg.request_interval_s, cfg.timeout_s, cfg.max_retries,
                         cache=ResponseCache(cache / "http"))


def _harvest(cfg: Any, cache: Path, session: Any, progress: Progress) -> list[dict[str, Any]]:
    cats = list(cfg.categories) + (["gr-qc"] if cfg.include_gr_qc else [])
    if cfg.source == "arxiv_api":
        from .harvest_api import harvest_api

        if not (cfg.date_from and cfg.date_to):
            raise SourceError("corpus.source 'arxiv_api' needs corpus.date_from and corpus.date_to (queries are sliced by submission date)")
        return harvest_api(session, cache, cats, cfg.date_from, cfg.date_to, cfg.api_slice_days, cfg.api_page_size,
                           cfg.api_url, on_slice=lambda done, total, n: progress("harvest", done, total))
    from .harvest_oai import harvest_oai

    sets = [cfg.oai_set] + (["physics:gr-qc"] if cfg.include_gr_qc else [])
    records: list[dict[str, Any]] = []
    for set_spec in sets:
        records += harvest_oai(session, cache, cfg.oai_url, set_spec, cfg.date_from, cfg.date_to,
                               on_page=lambda page, n: progress("harvest", page, None))
    return records


def gather_network(cfg: Any, cache: Path, progress: Progress) -> Gathered:
    """Harvest metadata (API or OAI-PMH), then download e-prints into ``cache/eprints``."""
    from .download import download_eprints

    session = _session(cfg, cache)
    records = _select(_harvest(cfg, cache, session, progress), cfg)
    paths, failed = download_eprints(session, records, cache / "eprints", cfg.eprint_url,
                                     on_paper=lambda i: progress("download", i, len(records)))
    transient = sorted(pid for pid, reason in failed.items() if reason == "download_failed")
    if transient:
        # not a verdict on the papers: keep the stage unfinished so a rerun retries just these
        # (everything downloaded so far stays in the cache)
        shown = ", ".join(transient[:5]) + (" ..." if len(transient) > 5 else "")
        raise SourceError(f"{len(transient)} e-print download(s) failed after retries ({shown}); rerun to retry them")
    inputs = [{"kind": "paper", "meta": r, "path": str(paths[r["id"]])} for r in records if r["id"] in paths]
    rejected = [{"id": pid, "reason": reason, "detail": ""} for pid, reason in sorted(failed.items())]
    return Gathered(records, inputs, rejected)


_TAR_YYMM = re.compile(r"arXiv_src_(\d{4})_\d+\.tar$")


def _yymm(pid: str) -> str:
    tail = pid.split("/")[-1]
    return tail[:4]


def gather_bulk(cfg: Any, cache: Path, progress: Progress) -> Gathered:
    """Papers from arXiv bulk source tars (fsspec paths/globs); metadata from local_dir or OAI-PMH."""
    import fsspec

    if not cfg.bulk_tars:
        raise SourceError("corpus.source 's3_bulk' needs corpus.bulk_tars (e.g. ['s3://arxiv/src/arXiv_src_2401_*.tar'])")
    if cfg.local_dir is not None:
        records = _select(_local_records(Path(cfg.local_dir).expanduser().resolve()), cfg)
    else:
        records = _select(_harvest(cfg, cache, _session(cfg, cache), progress), cfg)
    tars: list[str] = []
    for pattern in cfg.bulk_tars:
        kwargs = {"requester_pays": True} if cfg.s3_requester_pays and pattern.startswith("s3://") else {}
        fs, _, paths = fsspec.get_fs_token_paths(pattern, storage_options=kwargs)
        tars += [fs.unstrip_protocol(p) for p in sorted(paths)]
    by_month: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_month.setdefault(_yymm(rec["id"]), []).append(rec)
    inputs = []
    for tar in tars:
        m = _TAR_YYMM.search(tar)
        papers = by_month.get(m.group(1), []) if m else records
        if papers:
            inputs.append({"kind": "tar", "tar": tar, "papers": papers, "requester_pays": cfg.s3_requester_pays})
    # papers found in no tar are reported as eprint_missing by the stage after extraction
    return Gathered(records, inputs)


def gather(cfg: Any, cache: Path, progress: Progress) -> Gathered:
    """Dispatch on ``corpus.source``."""
    if cfg.source == "local":
        return gather_local(cfg)
    if cfg.source in ("arxiv_api", "oai_pmh"):
        return gather_network(cfg, cache, progress)
    return gather_bulk(cfg, cache, progress)
