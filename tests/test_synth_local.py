"""Local teacher backends: the tiny model through transformers end to end; vLLM's clear absence error."""

from __future__ import annotations

import importlib.util
import json

import pytest

from astrosage.core.recipe import load_recipe_dict
from astrosage.runner import RunManager
from corpus_tools.synth.backends import BackendError, GenRequest, make_backend
from corpus_tools.synth.backends.transformers_backend import TransformersBackend
from test_synth_support import read_jsonl_dir, recipe_dict, synth_registry, write_docs


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny matmuls are fastest on one thread; two threads spin badly on a busy 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_transformers_backend_generates_per_request_text(tiny_instruct):
    backend = TransformersBackend(str(tiny_instruct), batch_size=2)
    reqs = [GenRequest([{"role": "user", "content": f"Tell me about star {i}."}], seed=i, max_new_tokens=8, temperature=0.7, top_p=0.9)
            for i in range(3)]
    out = backend.generate(reqs)
    assert len(out) == 3 and all(r.ok and isinstance(r.text, str) for r in out)
    assert all(0 < r.completion_tokens <= 8 and r.prompt_tokens > 5 for r in out)
    assert [r.seed for r in out] == [0, 0, 2], "a batch is seeded by its first request"
    again = TransformersBackend(str(tiny_instruct), batch_size=2).generate(reqs)
    assert [r.text for r in again] == [r.text for r in out], "same seeds, same text"


def test_tiny_model_end_to_end_rejects_gibberish_with_reasons(tmp_path, tiny_instruct):
    docs = write_docs(tmp_path / "docs" / "part-0.parquet", n_docs=2, chars=1200)
    data = recipe_dict(tmp_path, docs, backend="transformers", teacher_model=str(tiny_instruct), max_chunks=3,
                       max_new_tokens=24, batch_size=4, chunk_chars=500, chunk_overlap=50, shard_chunks=2,
                       structured_output=False)  # free text: see test_synth_structured for constrained replies
    outcomes = RunManager(load_recipe_dict(data), synth_registry()).run(["synth"])
    assert next(o for o in outcomes if o.stage == "synth").status == "done"
    stage = tmp_path / "runs" / "synth-test" / "synth"
    manifest = json.loads((stage / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["chunks"] == 3 and counts["requests"] == 9 and counts["shards"] == 2
    assert counts["kept"] == 0, "random-weight output must not pass validation"
    reasons = manifest["metrics"]["rejected_by_reason"]
    assert reasons and sum(reasons.values()) >= counts["requests"] - counts["rejected_malformed_json"] and counts["rejected_malformed_json"] > 0
    assert counts["completion_tokens"] > 0 and manifest["metrics"]["backend"] == "transformers"
    assert read_jsonl_dir(stage / "qa") == [] and (stage / "mcq" / "dev.jsonl").read_text() == ""
    assert len((stage / "state" / "ledger.jsonl").read_text().splitlines()) == 2


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_is_a_clear_error(tmp_path):
    section = load_recipe_dict(recipe_dict(tmp_path, tmp_path / "docs", backend="vllm")).synth
    with pytest.raises(BackendError, match=r"not available: pip install vllm"):
        make_backend("vllm", "some/model", section)
