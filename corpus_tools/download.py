"""E-print download (``/e-print/ID``) into the cache folder, rate-limited and resumable."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from astrosage.core.artifacts import atomic_write_bytes

from .http import HarvestError, PoliteSession
from .records import paper_key

log = logging.getLogger("astrosage")


def download_eprints(
    session: PoliteSession,
    records: list[dict[str, Any]],
    folder: Path,
    url_template: str = "https://arxiv.org/e-print/{id}",
    on_paper: Callable[[int], None] | None = None,
    max_consecutive_failures: int = 5,
) -> tuple[dict[str, Path], dict[str, str]]:
    """Fetch each record's e-print to ``folder/<key>`` unless already there.

    Returns (id -> file, id -> failure reason). Files are written atomically, so a killed
    download never leaves a truncated e-print that looks complete. Several failures in a row
    mean the network (or arXiv) is down: raise, so a rerun resumes instead of rejecting papers.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    failed: dict[str, str] = {}
    streak = 0
    for i, rec in enumerate(records, 1):
        pid = rec["id"]
        target = folder / paper_key(pid)
        if target.exists():
            paths[pid] = target
        else:
            try:
                reply = session.fetch(url_template.format(id=pid), use_cache=False, ok_status=(200, 404, 403))
            except HarvestError as exc:
                streak += 1
                failed[pid] = "download_failed"
                log.warning("e-print %s: %s", pid, exc)
                if streak >= max_consecutive_failures:
                    raise HarvestError(exc.url, f"{streak} e-prints failed in a row; stopping (rerun to resume)") from exc
            else:
                streak = 0
                if reply.status == 200 and reply.content:
                    atomic_write_bytes(target, reply.content)
                    paths[pid] = target
                else:
                    failed[pid] = "eprint_not_found" if reply.status == 404 else f"eprint_http_{reply.status}"
        if on_paper:
            on_paper(i)
    return paths, failed
