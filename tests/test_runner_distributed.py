"""The run manager under a 2-process launch (torchrun, gloo on CPU): one manifest, all ranks ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from astrosage.core.stage import StageResult, StageSpec
    from astrosage.core.recipe import load_recipe_dict
    from astrosage.runner import RunManager

    def stage_a(ctx):
        from accelerate.state import PartialState

        rank = os.environ["RANK"]
        # the runner set up the shared PartialState before the first stage (cpu=True here: no GPU)
        shared = dict(PartialState._shared_state)
        seen = {"rank": rank, "num_processes": shared.get("num_processes"), "process_index": shared.get("process_index"),
                "device": getattr(shared.get("device"), "type", None)}
        (ctx.work_dir / f"rank{rank}.txt").write_text(json.dumps(seen))
        return StageResult(outputs={"a": "."})

    def stage_b(ctx):
        seen = sorted(p.name for p in ctx.upstream_output("a", "a").glob("rank*.txt"))
        (ctx.work_dir / f"seen{os.environ['RANK']}.json").write_text(json.dumps(seen))
        return StageResult()

    reg = {
        "a": StageSpec("a", "a", ("run.seed",), lambda r: [], lambda r: {}, stage_a),
        "b": StageSpec("b", "b", ("run.seed",), lambda r: ["a"], lambda r: {}, stage_b),
    }
    out = sys.argv[1]
    recipe = load_recipe_dict({"run": {"name": "d", "output_dir": out}, "model": {"base": "tiny:base"},
        "corpus": {"enabled": False}, "synth": {"enabled": False}, "merge": {"enabled": False},
        "eval": {"enabled": False}, "publish": {"enabled": False}})
    outcomes = RunManager(recipe, registry=reg).run()
    print("RANK", os.environ["RANK"], [o.status for o in outcomes], flush=True)
    """
)


@pytest.mark.slow
def test_two_ranks_share_one_stage_folder(tmp_path):
    script = tmp_path / "dist_run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", str(script), str(tmp_path / "runs")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = tmp_path / "runs" / "d"
    assert sorted(p.name for p in run_dir.iterdir()) == [".astrosage.lock", "a", "b"]  # no .partial left behind; one lock (rank 0)
    assert sorted(p.name for p in (run_dir / "a").iterdir()) == ["manifest.json", "rank0.txt", "rank1.txt"]
    import torch

    for rank in (0, 1):  # each rank's stage ran inside the launch's 2-process state, on the CPU without a GPU
        seen = json.loads((run_dir / "a" / f"rank{rank}.txt").read_text())
        device = "cuda" if torch.cuda.is_available() else "cpu"
        assert seen == {"rank": str(rank), "num_processes": 2, "process_index": rank, "device": device}
    # stage b (both ranks) saw the sealed output of a, written by both ranks
    for rank in (0, 1):
        assert json.loads((run_dir / "b" / f"seen{rank}.json").read_text()) == ["rank0.txt", "rank1.txt"]
    assert json.loads((run_dir / "a" / "manifest.json").read_text())["status"] == "complete"
    assert proc.stdout.count("['done', 'done']") == 2
