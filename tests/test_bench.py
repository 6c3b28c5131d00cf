"""The benches' own code paths (no timings asserted: speed claims live in bench/ output, not in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@pytest.mark.timeout(600)
def test_gpu_check_dry_run(tmp_path):
    """bench/gpu_check.sh --dry-run: the GPU check's code on CPU, tiny shapes, the project venv, nothing downloaded."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "GPU_CHECK_VENV": str(tmp_path / "must-not-exist"), "ASTROSAGE_PYTHON": sys.executable}
    out = tmp_path / "out"
    proc = subprocess.run([str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out), "--steps", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (tmp_path / "must-not-exist").exists(), "the dry run must not make a venv"
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] is True and "llama-micro" in report["shape"]
    sections = report["sections"]
    for key in ("cpt", "sft", "eval"):
        assert "error" not in sections[key], (key, sections[key])
    for run in ("sdpa@256", "sdpa@512"):
        cpt = sections["cpt"][run]
        assert cpt["stage"]["tokens_per_s"] > 0 and cpt["bare_loop"]["tokens_per_s"] > 0
        assert 0 < cpt["stage"]["mfu"] and "6*N" in cpt["formula"]
    sft = sections["sft"]["sdpa"]
    assert sft["packed_bfd"]["padding_fraction"] == 0.0 < sft["trl_padded"]["padding_fraction"]
    ev = sections["eval"]
    assert ev["same"] == ev["n"] == 16, "float32 letter scoring must give lm-eval's predictions"
    assert "MFU" in proc.stdout and "6*N + 6*layers*d_attn*seq" in proc.stdout


def test_teacher_bench_runs_with_rate_limits_and_retries():
    from bench import teacher

    rows = teacher.main(["--latency", "0.05", "--concurrency", "1", "4", "--requests", "3", "--rate-limit-every", "4"])
    assert [r["concurrency"] for r in rows] == [1, 4]
    for r in rows:
        assert r["ok"] == r["requests"]  # every 429 was retried to success
        assert r["rate_limited"] >= 1 and r["retries"] >= r["rate_limited"]
        assert r["ideal"] == pytest.approx(r["concurrency"] / 0.05)


@pytest.mark.parametrize("method", ["letter", "choices"])
def test_eval_bench_agrees_with_lm_eval(method, capsys):
    """bench/eval.py on the tiny model: both scorers run, lm-eval's predictions are ours, the work model counts less work."""
    from bench import eval as eval_bench

    r = eval_bench.main(["--method", method, "--n", "12", "--rounds", "1", "--batch-size", "4", "--benchmark", str(eval_bench.SAMPLE)])
    assert r["method"] == method and r["n"] == 12
    assert r["same"] == 12 and r["max_diff"] < 1e-3
    assert r["same_norm"] == (12 if method == "choices" else None)
    assert r["work_ratio"] > 1 and r["ours_s"] > 0 and r["lm_eval_s"] > 0
    out = capsys.readouterr().out
    assert "identical predictions: yes" in out and "work (FLOPs incl. padding)" in out
