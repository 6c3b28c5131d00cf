"""Recipe schema: loading, extends, overrides, error messages, bundled recipes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from astrosage.core.recipe import (
    Recipe,
    RecipeError,
    check_paths,
    load_recipe,
    load_recipe_dict,
    parse_override,
    section_hash,
)
from astrosage.core.recipe.doc import iter_fields, schema_json, schema_markdown

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"

MINIMAL = """
run: {name: t, output_dir: runs}
model: {base: tiny:base, base_instruct: tiny:instruct}
corpus: {enabled: false}
synth: {enabled: false}
eval: {enabled: false}
publish: {enabled: false}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(exc: RecipeError) -> dict[str, tuple[str, str]]:
    return {path: (source, msg) for source, path, msg in exc.problems}


@pytest.mark.parametrize("name", ["tiny-cpu.yaml", "astrosage-8b.yaml", "astrosage-70b.yaml"])
def test_bundled_recipes_validate(name, monkeypatch):
    monkeypatch.chdir(REPO)  # recipes use repo-relative paths, like the README's commands
    recipe = load_recipe(RECIPES / name)
    check_paths(recipe, source=name)
    assert isinstance(recipe, Recipe)


def test_published_recipe_facts_are_encoded():
    r8 = load_recipe(RECIPES / "astrosage-8b.yaml")
    assert r8.model.base == "meta-llama/Llama-3.1-8B"
    assert r8.model.base_instruct == "meta-llama/Llama-3.1-8B-Instruct"
    assert (r8.merge.method, r8.merge.weight) == ("linear", 0.75)
    assert r8.corpus.include_gr_qc and r8.corpus.date_from.startswith("2007")
    assert r8.cpt.learning_rate == 2e-5 and r8.cpt.lr_scheduler == "cosine" and r8.cpt.warmup_ratio == 0.03
    r70 = load_recipe(RECIPES / "astrosage-70b.yaml")
    assert r70.model.base == "meta-llama/Llama-3.1-70B"
    assert r70.merge.method == "dare_ties" and r70.merge.density is not None
    assert r70.cpt.max_seq_len == 8192 and r70.cpt.num_epochs == 2.5
    assert r70.sft.reasoning_fraction > 0
    # inherited from the 8B recipe through `extends`
    assert r70.corpus.include_gr_qc and r70.eval.benchmarks[0].name == "astromlab1-public"


def test_negative_learning_rate_names_file_path_and_value(tmp_path):
    path = write(tmp_path, "bad.yaml", MINIMAL + "cpt: {learning_rate: -1}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    source, msg = problems_of(err.value)["cpt.learning_rate"]
    assert source.endswith("bad.yaml")
    assert msg == "-1 is not > 0.0"
    assert "cpt.learning_rate: -1 is not > 0" in str(err.value)


def test_unknown_key_is_an_error_with_suggestion(tmp_path):
    path = write(tmp_path, "bad.yaml", MINIMAL + "cpt: {lerning_rate: 0.1}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    _, msg = problems_of(err.value)["cpt.lerning_rate"]
    assert "unknown field" in msg and "did you mean 'learning_rate'" in msg


def test_unknown_section_is_an_error(tmp_path):
    path = write(tmp_path, "bad.yaml", MINIMAL + "trainer: {lr: 1}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "trainer" in problems_of(err.value)


def test_literal_error_lists_allowed_values(tmp_path):
    path = write(tmp_path, "bad.yaml", MINIMAL + "merge: {method: average}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    _, msg = problems_of(err.value)["merge.method"]
    assert '"average" is not one of' in msg and "dare_ties" in msg


def test_nested_list_error_path(tmp_path):
    path = write(tmp_path, "bad.yaml", MINIMAL.replace("eval: {enabled: false}", "eval: {benchmarks: [{name: ok, path: a.json}, {name: 'b', path: b.json, extra: 1}]}"))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "eval.benchmarks[1].extra" in problems_of(err.value)


def test_missing_required_section(tmp_path):
    path = write(tmp_path, "bad.yaml", "run: {name: t}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert problems_of(err.value)["model"][1] == "required field is missing"


def test_extends_merges_and_errors_name_the_defining_file(tmp_path):
    write(tmp_path, "parent.yaml", MINIMAL + "cpt: {learning_rate: 0.5, max_steps: 7}\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nrun: {name: child}\ncpt: {learning_rate: 0.25}\n")
    recipe = load_recipe(child)
    assert recipe.run.name == "child"
    assert recipe.run.output_dir == Path("runs")  # inherited sibling key survives the merge
    assert recipe.cpt.learning_rate == 0.25 and recipe.cpt.max_steps == 7

    bad_parent = write(tmp_path, "bad_parent.yaml", MINIMAL + "sft: {warmup_ratio: 2}\n")
    assert bad_parent.exists()
    child2 = write(tmp_path, "child2.yaml", "extends: bad_parent.yaml\ncpt: {max_steps: 3}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(child2)
    source, msg = problems_of(err.value)["sft.warmup_ratio"]
    assert source.endswith("bad_parent.yaml") and msg == "2 is not < 1.0"


def test_extends_cycle_and_missing_parent(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError, match="circular extends"):
        load_recipe(tmp_path / "a.yaml")
    write(tmp_path, "c.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(RecipeError, match="nowhere.yaml.*does not exist"):
        load_recipe(tmp_path / "c.yaml")


def test_duplicate_keys_are_refused(tmp_path):
    path = write(tmp_path, "dup.yaml", MINIMAL + "cpt: {learning_rate: 0.1}\nsft: {}\ncpt: {max_steps: 3}\n")
    with pytest.raises(RecipeError, match=r"duplicate key 'cpt' \(first on line \d+, again on line \d+\)"):
        load_recipe(path)


def test_bad_yaml_and_non_mapping(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write(tmp_path, "x.yaml", "run: [unclosed\n"))
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        load_recipe(write(tmp_path, "y.yaml", "- a\n- b\n"))
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "text,parts,value",
    [
        ("cpt.learning_rate=1e-4", ["cpt", "learning_rate"], 1e-4),
        ("cpt.max_steps=10", ["cpt", "max_steps"], 10),
        ("cpt.lora.enabled=true", ["cpt", "lora", "enabled"], True),
        ("merge.sweep=[0.5, 0.75]", ["merge", "sweep"], [0.5, 0.75]),
        ("cpt.max_steps=null", ["cpt", "max_steps"], None),
        ("eval.benchmarks[0].path=x.json", ["eval", "benchmarks", 0, "path"], "x.json"),
        ("run.name=a=b", ["run", "name"], "a=b"),
    ],
)
def test_parse_override(text, parts, value):
    assert parse_override(text) == (parts, value)


@pytest.mark.parametrize("text", ["cpt.learning_rate", "cpt..x=1", "=3", "9cpt.x=1"])
def test_parse_override_rejects_malformed(text):
    with pytest.raises(RecipeError):
        parse_override(text)


def test_overrides_apply_and_errors_blame_the_command_line(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL.replace("eval: {enabled: false}", "eval: {benchmarks: [{name: a, path: a.json}]}"))
    recipe = load_recipe(path, ["cpt.learning_rate=3e-4", "run.name=other", "eval.benchmarks[0].path=b.json", "merge.sweep=[0.5]"])
    assert recipe.cpt.learning_rate == pytest.approx(3e-4)
    assert recipe.run.name == "other"
    assert recipe.eval.benchmarks[0].path == "b.json" and recipe.eval.benchmarks[0].name == "a"
    assert recipe.merge.sweep == [0.5]
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["cpt.warmup_ratio=-0.5"])
    assert problems_of(err.value)["cpt.warmup_ratio"] == ("command line", "-0.5 is not >= 0.0")
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["cpt.learning_rate.x=1"])
    source, msg = problems_of(err.value)["cpt.learning_rate"]
    assert source == "command line" and "valid number" in msg
    with pytest.raises(RecipeError, match="no list item 3"):
        load_recipe(path, ["eval.benchmarks[3].path=z.json"])


def test_cross_section_rules(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL.replace("base_instruct: tiny:instruct", "") + "merge: {enabled: true}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "needs model.base_instruct" in problems_of(err.value)["model.base_instruct"][1]
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["merge.enabled=false", "merge.method=ties"])
    assert "needs merge.density" in str(err.value)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["merge.enabled=false", "corpus.enabled=true", "corpus.source=oai_pmh"])
    assert "corpus.contact_email" in problems_of(err.value)


def test_arxiv_rate_limit_cannot_be_configured_below_terms(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["corpus.request_interval_s=1"])
    assert problems_of(err.value)["corpus.request_interval_s"][1] == "1 is not >= 3.0"


def test_check_paths_names_missing_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe_dict(
        {
            "run": {"name": "t"},
            "model": {"base": "./no-such-model", "base_instruct": "tiny:instruct"},
            "corpus": {"local_dir": "nowhere"},
            "eval": {"benchmarks": [{"name": "b", "path": "missing.json"}, {"name": "hub", "path": "AstroMLab/Astrobench_MCQ_v1_Public"}]},
            "publish": {"enabled": False},
        }
    )
    with pytest.raises(RecipeError) as err:
        check_paths(recipe, source="r.yaml")
    found = problems_of(err.value)
    assert set(found) == {"model.base", "corpus.local_dir", "eval.benchmarks[0].path"}  # Hub ids are not files
    assert "missing.json" in found["eval.benchmarks[0].path"][1]


def test_section_hash_is_stable_and_sensitive(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL)
    a = load_recipe(path)
    b = load_recipe(path)
    assert section_hash(a, "cpt", "run.seed") == section_hash(b, "cpt", "run.seed")
    c = load_recipe(path, ["cpt.learning_rate=0.001"])
    assert section_hash(a, "cpt") != section_hash(c, "cpt")
    assert section_hash(a, "sft") == section_hash(c, "sft")


def test_every_field_is_documented():
    rows = iter_fields()
    assert len(rows) > 100
    undocumented = [r.path for r in rows if not r.description.strip()]
    assert undocumented == []
    paths = {r.path for r in rows}
    for expected in ("run.name", "model.attn_implementation", "cpt.learning_rate", "eval.benchmarks[].path", "logging.backend", "slurm.signal_grace_s"):
        assert expected in paths


def test_schema_outputs():
    schema = json.loads(schema_json())
    assert set(schema["properties"]) >= {"run", "model", "corpus", "synth", "cpt", "sft", "merge", "eval", "publish", "slurm", "logging"}
    md = schema_markdown()
    assert "| `cpt.learning_rate` |" in md


def test_schema_docs_are_in_sync():
    doc = REPO / "docs" / "recipe-schema.md"
    assert doc.exists(), "run: astrosage schema --markdown > docs/recipe-schema.md"
    assert doc.read_text() == schema_markdown(), "docs/recipe-schema.md is stale: astrosage schema --markdown > docs/recipe-schema.md"


def test_validation_imports_no_heavy_library():
    code = (
        "import sys; from astrosage.core.recipe import load_recipe, check_paths;"
        f"r = load_recipe({str(RECIPES / 'astrosage-70b.yaml')!r});"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'trl', 'mergekit') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_merge_sweep_needs_a_benchmark(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["merge.sweep=[0.5,0.75]"])
    assert "merge sweep" in problems_of(err.value)["eval.benchmarks"][1]
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["merge.sweep=[0.5]", "eval.benchmarks=[{name: dev, path: d.json}]", "merge.select_benchmark=other"])
    assert "'other' is not one of eval.benchmarks (dev)" in problems_of(err.value)["merge.select_benchmark"][1]


def test_check_paths_covers_synth_docs_and_bulk_tars(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe_dict({
        "run": {"name": "t"}, "model": {"base": "tiny:base", "base_instruct": "tiny:instruct"},
        "corpus": {"enabled": False}, "synth": {"docs": "nowhere/docs"},
        "eval": {"enabled": False}, "publish": {"enabled": False}, "merge": {"enabled": False},
    })
    with pytest.raises(RecipeError) as err:
        check_paths(recipe)
    assert "synth.docs" in problems_of(err.value)
    bulk = load_recipe_dict({
        "run": {"name": "t"}, "model": {"base": "tiny:base", "base_instruct": "tiny:instruct"},
        "corpus": {"source": "s3_bulk", "bulk_tars": ["tars/arXiv_src_*.tar", "s3://arxiv/src/arXiv_src_2401_*.tar"]},
        "synth": {"enabled": False}, "eval": {"enabled": False}, "publish": {"enabled": False}, "merge": {"enabled": False},
    })
    with pytest.raises(RecipeError) as err:
        check_paths(bulk)
    assert set(problems_of(err.value)) == {"corpus.bulk_tars[0]"}  # S3 URLs are not checked locally
