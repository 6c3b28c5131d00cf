"""Issue 12 kill matrix: SIGKILL the tiny recipe at several points of its stages, rerun, byte-identical results.

One uninterrupted reference run, then one chain of runs in the same folder, each killed (SIGKILL to
its process group: no handler runs) at the next point, until a last run completes. Kill points are
events on disk, not timings: mid corpus stage, while a cpt checkpoint is being written, while cpt
saves its final model, during sft data preparation, mid sft training. The stage folders of both runs
must then hold the same bytes (timings in manifests/trainer_state and caches aside).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "synth.enabled=false", "merge.enabled=false", "eval.enabled=false", "publish.enabled=false",
    "cpt.max_steps=12", "cpt.save_steps=4", "cpt.max_seq_len=128", "cpt.logging_steps=2",
    "sft.max_steps=12", "sft.save_steps=4", "sft.max_seq_len=192", "sft.logging_steps=2",
]
#: files that legitimately differ between two runs (timings, caches), relative to the run folder
VOLATILE = ("manifest.json", "trainer_state.json", ".astrosage-partial.json")
VOLATILE_DIRS = ("logs", "datasets.cache", ".cache", "wandb", "tokenized.cache")


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "astrosage.cli", "run", str(REPO / "recipes" / "tiny-cpu.yaml"), f"run.output_dir={out}", *OVERRIDES]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def _run_to_end(out: Path) -> None:
    done = subprocess.run(_cmd(out), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _run_until(out: Path, event, what: str, timeout: float = 120) -> bool:
    """Start a run, SIGKILL its process group when ``event()`` is true. False if it finished first."""
    proc = subprocess.Popen(_cmd(out), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if event():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.005)
        assert proc.poll() is not None, f"run did not reach the kill point '{what}' in {timeout}s"
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or path.name in VOLATILE or any(part in VOLATILE_DIRS for part in rel.parts):
            continue
        out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.slow
def test_sigkill_at_each_point_then_rerun_gives_the_same_bytes(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "killed"
    _run_to_end(ref)
    rd = run / "tiny-cpu"

    def exists(*parts):
        return lambda: (rd.joinpath(*parts)).exists()

    def any_file(folder: str):
        return lambda: (rd / folder).is_dir() and any(p.is_file() and p.name != ".astrosage-partial.json" for p in (rd / folder).rglob("*"))

    points = [
        ("mid corpus stage", any_file("corpus.partial")),
        ("while cpt writes checkpoint-4", exists("cpt.partial", "checkpoints", "checkpoint-4")),
        ("while cpt writes checkpoint-8", exists("cpt.partial", "checkpoints", "checkpoint-8")),
        ("while cpt saves its final model", exists("cpt.partial", "model")),
        ("sft data preparation", exists("sft.partial")),
        ("while sft writes checkpoint-4", exists("sft.partial", "checkpoints", "checkpoint-4")),
    ]
    killed = [what for what, event in points if _run_until(run, event, what)]
    _run_to_end(run)
    assert len(killed) >= 5, f"only {killed} were reached before their stage finished"
    for stage in ("corpus", "cpt", "sft"):
        assert not (rd / f"{stage}.partial").exists()
        want, got = _tree(ref / "tiny-cpu" / stage), _tree(rd / stage)
        assert want and got == want, (stage, killed, {k for k in want.keys() | got.keys() if want.get(k) != got.get(k)})
    # the resumed sft's metrics cover the whole run, not its last attempt. (cpt is left out: resumed from
    # its final checkpoint-12, the Trainer takes one extra step 13 at lr 0 - see the issue 12 report)
    want, got = (json.loads((root / "tiny-cpu" / "sft" / "manifest.json").read_text())["metrics"] for root in (ref, run))
    assert got["mean_train_loss"] == pytest.approx(want["mean_train_loss"], rel=1e-6)
    assert got["final_loss"] == want["final_loss"] and got["steps"] == want["steps"] == 12
