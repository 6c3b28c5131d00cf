"""Held-out bits per byte through the pipeline: the demo recipe end to end, extra text sets, errors, the card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from astrosage.core.models import tiny_dir
from astrosage.core.recipe import load_recipe, load_recipe_dict
from astrosage.runner import RunManager
from conftest import REPO_ROOT
from test_eval_support import make_rows, write_json


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The whole demo recipe (`make demo`), once, in a temporary output folder."""
    import os

    out = tmp_path_factory.mktemp("demo")
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)  # the recipe's paths (examples/...) are relative to the checkout
    try:
        recipe = load_recipe(REPO_ROOT / "recipes" / "tiny-cpu.yaml", overrides=[f"run.output_dir={out / 'runs'}"])
        outcomes = {o.stage: o for o in RunManager(recipe).run()}
    finally:
        os.chdir(cwd)
    run = out / "runs" / "tiny-cpu"
    return {"outcomes": outcomes, "run": run, "recipe": recipe,
            "comparison": json.loads((run / "eval" / "comparison.json").read_text()),
            "train": {d["id"]: d for d in pq.read_table(run / "corpus" / "docs").to_pylist()},
            "heldout": {d["id"]: d for d in pq.read_table(run / "corpus" / "heldout").to_pylist()}}


@pytest.mark.slow
def test_demo_comparison_shows_bpb_for_every_checkpoint(demo):
    assert all(o.status == "done" for o in demo["outcomes"].values()), demo["outcomes"]
    ppl = demo["comparison"]["perplexity"]
    assert [(r["checkpoint"], r["set"]) for r in ppl] == [(c, "heldout") for c in ("base", "cpt", "sft", "merge")]
    assert demo["comparison"]["perplexity_settings"] == {"window": 256, "stride": 128}  # cpt.max_seq_len, half of it
    base = ppl[0]
    assert base["n_docs"] == len(demo["heldout"]) == 3
    assert base["bytes"] == sum(len(d["text"].encode("utf-8")) for d in demo["heldout"].values())
    for r in ppl[1:]:
        assert r["delta_bpb_vs_base"] == pytest.approx(r["bits_per_byte"] - base["bits_per_byte"])
    md = (demo["run"] / "eval" / "comparison.md").read_text()
    for r in ppl:
        assert f"| {r['checkpoint']} | heldout | 3 | {r['bytes']:,} | {r['bits_per_byte']:.4f} |" in md
    # report.json keeps the per-document values, which add up to the pooled figure
    rep = json.loads((demo["run"] / "eval" / "cpt" / "perplexity" / "heldout" / "report.json").read_text())
    assert {d["id"] for d in rep["documents"]} == set(demo["heldout"])
    assert sum(d["nll"] for d in rep["documents"]) / np.log(2) / rep["bytes"] == pytest.approx(rep["bits_per_byte"])
    manifest = json.loads((demo["run"] / "eval" / "manifest.json").read_text())
    assert manifest["metrics"]["cpt/heldout/bpb"] == ppl[1]["bits_per_byte"]


@pytest.mark.slow
def test_cpt_on_the_tiny_recipe_lowers_heldout_bpb(demo):
    """20 steps of continued pretraining on the 13 training papers must help on the 3 papers it never saw."""
    by = {r["checkpoint"]: r for r in demo["comparison"]["perplexity"]}
    base, cpt = by["base"]["bits_per_byte"], by["cpt"]["bits_per_byte"]
    assert cpt < base, f"cpt did not lower held-out bits per byte: base {base:.4f}, cpt {cpt:.4f}"
    # not one lucky document: the pooled gain is more than a rounding error
    assert base - cpt > 0.05, (base, cpt)


@pytest.mark.slow
def test_cpt_never_read_the_heldout_papers(demo):
    """Identify cpt's training documents by their token ids in its tokenization cache."""
    from transformers import AutoTokenizer

    run = demo["run"]
    assert demo["heldout"] and not set(demo["heldout"]) & set(demo["train"])
    tokenizer = AutoTokenizer.from_pretrained(run / "cpt" / "model")
    cpt_manifest = json.loads((run / "cpt" / "manifest.json").read_text())
    cache = run / "tokenized.cache" / cpt_manifest["metrics"]["tokenized_cache"]
    seen: set[tuple[int, ...]] = set()
    for shard in sorted(cache.glob("shard-*")):
        tokens, lens = np.load(shard / "tokens.npy"), np.load(shard / "lens.npy")
        for doc in np.split(tokens, np.cumsum(lens)[:-1]):
            seen.add(tuple(int(t) for t in doc))

    def ids(text: str) -> tuple[int, ...]:
        out = tokenizer(text, add_special_tokens=True)["input_ids"]
        return tuple(out if out[-1] == tokenizer.eos_token_id else [*out, tokenizer.eos_token_id])

    trained = {pid for pid, d in demo["train"].items() if ids(d["text"]) in seen}
    assert trained == set(demo["train"])  # the check can see a document when cpt read it ...
    assert not {pid for pid, d in demo["heldout"].items() if ids(d["text"]) in seen}  # ... and cpt read no held-out one


@pytest.mark.slow
def test_synth_never_chunks_the_heldout_papers(demo):
    from astrosage.core.stage import StageContext
    from astrosage.stages import STAGES
    from corpus_tools.synth.chunking import iter_chunks
    from corpus_tools.synth.build import docs_path

    manager = RunManager(demo["recipe"])
    ctx = StageContext(demo["recipe"], "synth", manager.run_dir, manager.run_dir / "synth.partial",
                       manager.upstream_manifests(STAGES["synth"]))
    section = demo["recipe"].synth
    chunked = {c.paper_id for c in iter_chunks(docs_path(ctx), section.chunk_chars, section.chunk_overlap, None)}
    assert chunked == set(demo["train"]) and not chunked & set(demo["heldout"])
    items = [json.loads(line) for p in (demo["run"] / "synth" / "qa").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert not {i["meta"].get("paper_id") for i in items} & set(demo["heldout"])


@pytest.mark.slow
def test_model_card_lists_heldout_bpb_in_model_index(demo):
    from huggingface_hub import ModelCard

    card = ModelCard.load(demo["run"] / "publish" / "upload" / "README.md")
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    merge = next(r for r in demo["comparison"]["perplexity"] if r["checkpoint"] == "merge")
    assert results[("held-out arXiv astro-ph papers (corpus split)", "bits_per_byte")] == pytest.approx(merge["bits_per_byte"])
    assert ("sample-mcq", "accuracy") in results  # beside the MCQ accuracy
    assert f"| merge | heldout | 3 | {merge['bits_per_byte']:.4f} |" in card.text


# ---------------------------------------------------------------------------- eval-only runs

OFF = {stage: {"enabled": False} for stage in ("corpus", "synth", "cpt", "sft", "merge", "publish")}


def _eval_recipe(tmp_path: Path, tiny_base: Path, **eval_changes):
    bench = write_json(tmp_path / "dev.json", make_rows(4))
    recipe = load_recipe_dict({
        "run": {"name": "ppl", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "model": {"base": "tiny:base", "dtype": "float32"},
        **OFF,
        "cpt": {"enabled": False, "max_seq_len": 64},
        "eval": {"benchmarks": [{"name": "dev", "path": str(bench)}], **eval_changes},
    })
    target = tiny_dir("tiny:base", recipe.run.output_dir, 0)
    if not target.exists():
        shutil.copytree(tiny_base, target)
    return recipe


def test_perplexity_sets_are_scored_like_the_heldout_papers(tmp_path, tiny_base):
    texts = ["Radio pulsars spin down as they radiate. " * 8, "The interstellar medium is turbulent. " * 5, "Comets."]
    (tmp_path / "general.jsonl").write_text("".join(json.dumps({"content": t}) + "\n" for t in texts))
    recipe = _eval_recipe(tmp_path, tiny_base, perplexity_stride=16,
                          perplexity_sets=[{"name": "general", "path": str(tmp_path / "general.jsonl"), "text_field": "content",
                                            "limit": 2}])
    manager = RunManager(recipe)
    assert {o.stage: o.status for o in manager.run(["eval"])}["eval"] == "done"
    comparison = json.loads((manager.run_dir / "eval" / "comparison.json").read_text())
    [row] = comparison["perplexity"]
    assert (row["checkpoint"], row["set"], row["n_docs"]) == ("base", "general", 2)
    assert row["bytes"] == sum(len(t.encode()) for t in texts[:2])
    assert comparison["perplexity_settings"] == {"window": 64, "stride": 16}
    assert row["delta_bpb_vs_base"] is None and row["bits_per_byte"] > 0
    counts = json.loads((manager.run_dir / "eval" / "manifest.json").read_text())["counts"]
    assert counts["perplexity_docs"] == 2 and counts["perplexity_scored_now"] == 2
    RunManager(recipe).run(["eval"], force=True)
    counts = json.loads((manager.run_dir / "eval" / "manifest.json").read_text())["counts"]
    assert counts["perplexity_scored_now"] == 0 and counts["perplexity_from_cache"] == 2  # the eval cache


def test_a_stride_as_long_as_the_window_is_a_clear_error(tmp_path, tiny_base):
    (tmp_path / "g.jsonl").write_text(json.dumps({"text": "Stars."}) + "\n")
    recipe = _eval_recipe(tmp_path, tiny_base, perplexity_stride=64, perplexity_sets=[{"name": "g", "path": str(tmp_path / "g.jsonl")}])
    manager = RunManager(recipe)
    with pytest.raises(ValueError, match="eval.perplexity_stride: 64 must be smaller than the window, cpt.max_seq_len = 64"):
        manager.run(["eval"])
    assert not any((manager.run_dir / "eval.cache").glob("*.jsonl"))  # refused before any MCQ was scored


def test_a_hub_set_that_cannot_be_loaded_names_the_set(monkeypatch):
    from eval.perplexity import load_text_set

    with pytest.raises(RuntimeError, match=r"eval.perplexity_sets\[wiki\] \(nobody-astrosage/no-such-set\): cannot load the Hub dataset"):
        load_text_set("wiki", "nobody-astrosage/no-such-set", config="raw", split="test")


@pytest.mark.slow
def test_heldout_limit_scores_the_first_documents_from_the_cache(demo):
    """Last in this file: it reruns the demo's eval stage (in its temporary folder) with eval.heldout_limit=1."""
    import os

    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        recipe = load_recipe(REPO_ROOT / "recipes" / "tiny-cpu.yaml",
                             overrides=[f"run.output_dir={demo['run'].parent}", "eval.heldout_limit=1"])
        assert {o.stage: o.status for o in RunManager(recipe).run(["eval"])}["eval"] == "done"
    finally:
        os.chdir(cwd)
    comparison = json.loads((demo["run"] / "eval" / "comparison.json").read_text())
    assert [r["n_docs"] for r in comparison["perplexity"]] == [1, 1, 1, 1]
    counts = json.loads((demo["run"] / "eval" / "manifest.json").read_text())["counts"]
    assert counts["perplexity_scored_now"] == 0 and counts["perplexity_from_cache"] == 4  # scored by the full run already
