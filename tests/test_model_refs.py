"""The one "local path or Hub id" rule (astrosage.core.models) and the code that uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from astrosage.core.models import is_hub_id, is_local_reference, resolve_model

#: (reference, is it local, is it a Hub id): references that do not exist on disk
CASES = [
    ("meta-llama/Llama-3.1-8B", False, True),
    ("AstroMLab/Astrobench_MCQ_v1_Public", False, True),
    ("BAAI/Infinity-Instruct", False, True),
    ("gpt2", False, True),  # a Hub id without an owner
    ("data/train", False, True),  # a missing relative folder named like a Hub id reads as one: write ./data/train
    ("tiny:base", False, False),
    ("tiny:instruct", False, False),
    ("./model", True, False),
    ("../models/cpt", True, False),
    ("/nonexistent/astrosage/model", True, False),
    ("~/astrosage-missing/model", True, False),
    (".hidden", True, False),
    ("train.jsonl", True, False),  # a data-file name is never a Hub repository
    ("org/data.parquet", True, False),
    ("examples/mcq/MISSING.JSON", True, False),
    ("recipes/x.yaml", True, False),
    ("a/b/c", True, False),  # not a valid repository id: a path
    ("my model", True, False),
    ("org/na..me", True, False),
    ("s3://arxiv/src/arXiv_src_2401_001.tar", False, False),
    ("https://huggingface.co/gpt2", False, False),
    ("", False, False),
    (None, False, False),
]


@pytest.mark.parametrize("ref, local, hub", CASES, ids=[repr(c[0]) for c in CASES])
def test_reference_table(ref, local, hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of the table exists here
    assert is_local_reference(ref) is local
    assert is_hub_id(ref) is hub


def test_an_existing_file_or_folder_is_local_whatever_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)  # shadows the Hub id org/name
    (tmp_path / "notes").write_text("x")
    for ref in ("org/name", "notes", "org"):
        assert is_local_reference(ref) and not is_hub_id(ref), ref
    assert is_local_reference(Path("anything")) and not is_hub_id(Path("anything"))


def test_resolve_model_follows_the_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert resolve_model("org/name", tmp_path) == str((tmp_path / "org" / "name").resolve())
    assert resolve_model("meta-llama/Llama-3.1-8B", tmp_path) == "meta-llama/Llama-3.1-8B"
    for missing in ("a/b/c", "./gone", "weights.safetensors"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            resolve_model(missing, tmp_path)


def test_input_checks_read_local_files_only(tmp_path, monkeypatch):
    from astrosage.input_checks import check_benchmark, check_text_data

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.json").write_text('[{"question": "q", "A": "a", "B": "b", "C": "c"}]')
    (tmp_path / "text.jsonl").write_text('{"body": "no text field"}\n')
    assert check_benchmark("bench.json", "eval.benchmarks[0].path")  # local: read, missing D reported
    assert check_text_data("text.jsonl", "cpt.dataset", "text")
    for hub in ("AstroMLab/Astrobench_MCQ_v1_Public", "tiny:base"):  # never read here
        assert check_benchmark(hub, "eval.benchmarks[0].path") == []
        assert check_text_data(hub, "cpt.dataset", "text") == []


def test_the_card_lists_a_missing_local_dataset_as_local(tmp_path):
    """A recipe's local SFT file is never linked as a Hub dataset (the card's old rule did that when the file was absent)."""
    from astrosage.core.recipe import load_recipe_dict
    from astrosage.publishing.card import dataset_sources, hub_datasets

    off = {s: {"enabled": False} for s in ("corpus", "synth", "cpt", "merge", "eval", "publish")}
    recipe = load_recipe_dict({
        "run": {"name": "refs", "output_dir": str(tmp_path)}, "model": {"base": "tiny:base"}, **off,
        "sft": {"enabled": True, "dataset": {"path": "data/sft.jsonl"}, "general_mix": [{"path": "BAAI/Infinity-Instruct", "weight": 0.5}]},
    })
    assert hub_datasets(recipe) == ["BAAI/Infinity-Instruct"]
    names = [s["name"] for s in dataset_sources(recipe, {})]
    assert names == ["[BAAI/Infinity-Instruct](https://huggingface.co/datasets/BAAI/Infinity-Instruct)", "local file sft.jsonl"]
