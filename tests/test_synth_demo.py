"""The demo recipe's synth stage feeds its SFT: kept synthetic QA reaches the SFT data next to the sample."""

from __future__ import annotations

import json

import pytest

from astrosage.core.recipe import load_recipe
from astrosage.runner import RunManager
from conftest import REPO_ROOT
from test_synth_local import _one_torch_thread  # noqa: F401  (autouse: tiny matmuls on one thread)
from test_synth_support import read_jsonl_dir


@pytest.mark.slow
def test_demo_synth_items_flow_into_sft(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the recipe's paths (examples/...) are relative to the checkout
    recipe = load_recipe(REPO_ROOT / "recipes" / "tiny-cpu.yaml", overrides=[f"run.output_dir={tmp_path / 'runs'}"])
    outcomes = {o.stage: o for o in RunManager(recipe).run(["corpus", "synth", "cpt", "sft"])}
    assert all(outcomes[s].status == "done" for s in ("corpus", "synth", "cpt", "sft")), outcomes
    run = tmp_path / "runs" / "tiny-cpu"

    synth = json.loads((run / "synth" / "manifest.json").read_text())
    assert synth["metrics"]["structured"] == {"json_schema": synth["counts"]["requests"]}
    assert synth["counts"]["kept"] > 0, "the constrained tiny teacher's items reach content validation and some pass"
    qa = read_jsonl_dir(run / "synth" / "qa")
    assert len(qa) == synth["counts"]["kept_qa"] + synth["counts"]["kept_qa_reasoning"] > 0
    sample = sum(1 for line in (REPO_ROOT / "examples" / "sft_sample" / "astro_qa_sample.jsonl").read_text().splitlines() if line.strip())

    sft = json.loads((run / "sft" / "manifest.json").read_text())
    assert sft["counts"]["conversations"] == sample + len(qa), "sft mixes the kept synth QA with the bundled sample"
    rejected = [json.loads(line) for line in (run / "sft" / "rejected.jsonl").read_text().splitlines() if line.strip()]
    synth_dropped = [r for r in rejected if "/synth/qa/" in r["where"]]
    assert len(synth_dropped) < len(qa), "at least one synthetic conversation is trained on"
