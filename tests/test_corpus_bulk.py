"""The `s3_bulk` source on local copies of arXiv bulk source tars (read through fsspec)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from astrosage.core.recipe import load_recipe_dict
from astrosage.runner import RunManager

from conftest import SAMPLE_CORPUS, SAMPLE_MCQ


def _bulk_tar(path: Path, month: str, ids: list[str]) -> None:
    """An arXiv_src_YYMM_NNN.tar: one member per paper, `YYMM/<id>.gz` (or .pdf for PDF-only papers)."""
    meta = {json.loads(l)["id"]: json.loads(l) for l in (SAMPLE_CORPUS / "metadata.jsonl").read_text().splitlines()}
    with tarfile.open(path, "w") as tar:
        for pid in ids:
            blob = (SAMPLE_CORPUS / "eprints" / pid.replace("/", "_")).read_bytes()
            suffix = ".pdf" if blob.startswith(b"%PDF") else ".gz"
            info = tarfile.TarInfo(f"{month}/{pid}{suffix}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        assert all(pid in meta for pid in ids)


def test_bulk_tars_feed_the_same_pipeline(tmp_path):
    if not SAMPLE_CORPUS.exists():
        pytest.skip("examples/sample_corpus is not present")
    tars = tmp_path / "arxiv-src"
    tars.mkdir()
    _bulk_tar(tars / "arXiv_src_2402_001.tar", "2402", ["2402.05111", "2402.05987", "2402.07789"])
    _bulk_tar(tars / "arXiv_src_2403_001.tar", "2403", ["2403.01234"])
    data = {
        "run": {"name": "bulk", "output_dir": str(tmp_path / "runs")},
        "model": {"base": "tiny:base"},
        "corpus": {
            "source": "s3_bulk",
            "bulk_tars": [str(tars / "arXiv_src_*.tar")],
            "local_dir": str(SAMPLE_CORPUS),  # metadata from the sample's metadata.jsonl
            "date_from": "2024-02-01",
            "date_to": "2024-04-30",
            "filters": {"min_chars": 500},
        },
        "eval": {"enabled": False, "benchmarks": [{"name": "sample-mcq", "path": str(SAMPLE_MCQ)}]},
        **{stage: {"enabled": False} for stage in ("synth", "cpt", "sft", "merge", "publish")},
    }
    outcomes = RunManager(load_recipe_dict(data)).run(["corpus"])
    assert outcomes[0].status == "done"
    stage = tmp_path / "runs" / "bulk" / "corpus"
    docs = {d["id"]: d for d in pq.read_table(stage / "docs").to_pylist()}
    rejected = {json.loads(l)["id"]: json.loads(l)["reason"] for l in (stage / "rejected.jsonl").read_text().splitlines()}
    # the multi-file paper came out of its tar with \input files inlined; one of the duplicate pair kept
    assert "2403.01234" in docs and "\\input" not in docs["2403.01234"]["text"]
    assert ("2402.05111" in docs) != ("2402.05987" in docs)
    assert "pdf" in rejected["2402.07789"].lower()
    # papers of the date window that are in no tar are reported, not silently dropped
    selected = {json.loads(l)["id"] for l in (SAMPLE_CORPUS / "metadata.jsonl").read_text().splitlines()
                if "2024-02-01" <= json.loads(l)["submitted"][:10] <= "2024-04-30"}
    missing = selected - {"2402.05111", "2402.05987", "2402.07789", "2403.01234"}
    for pid in missing:
        assert pid in rejected, (pid, rejected)
