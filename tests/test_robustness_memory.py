"""Issue 12 #11: a gzip bomb never holds more than ~1x the size cap; the datasets cache stays in the run folder."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from corpus_tools.eprint import EprintError, Limits, gunzip, open_eprint

MB = 1 << 20


def _peak(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        try:
            result = fn()
        except EprintError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("cap_mb", [16, 48])
def test_a_gzip_bomb_peaks_near_the_cap_not_twice_it(cap_mb):
    bomb = gzip.compress(b"\0" * (160 * MB), 1)  # ~0.7 MB that inflates to 160 MB
    cap = cap_mb * MB
    result, peak = _peak(lambda: gunzip(bomb, cap))
    assert isinstance(result, EprintError) and result.reason == "archive_too_large"
    assert peak < 1.3 * cap, f"peak {peak / MB:.1f} MB for a {cap_mb} MB cap"


def test_a_large_legitimate_stream_is_not_copied_twice():
    payload = os.urandom(MB) * 40
    packed = gzip.compress(payload, 1)
    del payload
    result, peak = _peak(lambda: gunzip(packed, 64 * MB))
    assert isinstance(result, bytes) and len(result) == 40 * MB
    assert peak < 1.3 * 40 * MB, f"peak {peak / MB:.1f} MB for a 40 MB result"


def test_bounded_steps_still_decompress_exactly():
    parts = [os.urandom(3 * MB + 17), b"\\section{x}" * 200_000, b""]
    stream = b"".join(gzip.compress(p) for p in parts) + b"\0" * 512 + gzip.compress(b"tail")
    assert gunzip(stream, 64 * MB) == b"".join(parts) + b"tail"
    with pytest.raises(EprintError, match="truncated"):
        gunzip(gzip.compress(parts[0])[:-100], 64 * MB)


def test_a_nested_gz_bomb_inside_a_tar_is_stopped_at_the_cap():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("main.tex", b"\\documentclass{article}"), ("big.tex.gz", gzip.compress(b"\0" * (64 * MB), 1))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = gzip.compress(buf.getvalue())
    result, peak = _peak(lambda: open_eprint(data, Limits(max_bytes=16 * MB)))
    assert isinstance(result, EprintError) and result.reason == "archive_too_large"
    assert peak < 1.3 * 16 * MB


@pytest.mark.slow
def test_datasets_cache_is_kept_in_the_run_folder(tmp_path, monkeypatch):
    import datasets.config

    from astrosage.runner import RunManager
    from test_train_stages import tiny_recipe

    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    home_cache = tmp_path / "home-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home_cache)  # where ~/.cache would be
    recipe = tiny_recipe(tmp_path / "runs", cpt={"max_steps": 1}, sft={"enabled": False})
    RunManager(recipe).run(["cpt"])
    run_cache = tmp_path / "runs" / "t" / ".cache" / "datasets"
    assert list(run_cache.rglob("*.arrow")), "the cpt stage's datasets cache should be under the run folder"
    assert not home_cache.exists() or not list(home_cache.rglob("*.arrow"))
    assert datasets.config.HF_DATASETS_CACHE == home_cache and "HF_DATASETS_CACHE" not in os.environ  # restored


def test_a_user_datasets_cache_is_respected(tmp_path, monkeypatch):
    from astrosage.runner import RunManager
    from test_train_stages import tiny_recipe

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "mine"))
    with RunManager(tiny_recipe(tmp_path / "runs")).datasets_cache():
        assert os.environ["HF_DATASETS_CACHE"] == str(tmp_path / "mine")
