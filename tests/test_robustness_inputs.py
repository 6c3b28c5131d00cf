"""Issue 12 #3: the content of every local input is checked before the first stage, naming file:line:field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astrosage.cli import EXIT_BAD_INPUT, app
from astrosage.input_checks import check_inputs
from astrosage.core.recipe import load_recipe
from astrosage.runner import BadInputError, RunManager

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny-cpu.yaml"
SAMPLE_MCQ = REPO / "examples" / "mcq" / "astro_mcq_sample.json"
SAMPLE_SFT = REPO / "examples" / "sft_sample" / "astro_qa_sample.jsonl"
SAMPLE_CORPUS = REPO / "examples" / "sample_corpus"


def tiny(tmp_path: Path, *overrides: str):
    return load_recipe(TINY, [f"run.output_dir={tmp_path / 'runs'}", *overrides])


def validate(tmp_path: Path, *overrides: str):
    return CliRunner().invoke(app, ["validate", str(TINY), f"run.output_dir={tmp_path / 'runs'}", *overrides])


def bad_benchmark(tmp_path: Path, edit) -> Path:
    rows = json.loads(SAMPLE_MCQ.read_text())
    edit(rows)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(rows, indent=1))
    return path


def test_the_tiny_recipe_inputs_are_clean(tmp_path):
    report = check_inputs(tiny(tmp_path))
    assert report.errors == [] and report.warnings == []
    assert str(SAMPLE_MCQ.relative_to(REPO)) in report.checked and any("metadata.jsonl" in c for c in report.checked)


def test_answer_E_is_refused_by_validate_and_before_the_first_stage(tmp_path):
    path = bad_benchmark(tmp_path, lambda rows: rows[3].__setitem__("answer", "E"))
    result = validate(tmp_path, f"eval.benchmarks[0].path={path}")
    assert result.exit_code == EXIT_BAD_INPUT
    assert str(path) in result.output and "row 3" in result.output and "'answer'" in result.output and "'E'" in result.output
    # the run refuses before the corpus stage writes anything
    result = CliRunner().invoke(app, ["run", str(TINY), f"run.output_dir={tmp_path / 'runs'}", f"eval.benchmarks[0].path={path}"])
    assert result.exit_code == EXIT_BAD_INPUT and "row 3" in result.output
    assert not (tmp_path / "runs" / "tiny-cpu" / "corpus").exists()
    assert not (tmp_path / "runs" / "tiny-cpu" / "corpus.partial").exists()


def test_the_runner_checks_inputs_itself(tmp_path):
    path = bad_benchmark(tmp_path, lambda rows: rows[0].pop("B"))
    manager = RunManager(tiny(tmp_path, f"eval.benchmarks[0].path={path}"))
    with pytest.raises(BadInputError, match=r"row 0: missing field\(s\) 'B'"):
        manager.run()
    assert not manager.run_dir.exists() or not any(manager.run_dir.iterdir())
    # a stage that does not read the benchmark runs on
    with pytest.raises(BadInputError):
        RunManager(tiny(tmp_path, f"eval.benchmarks[0].path={path}")).check_inputs(["eval"])
    RunManager(tiny(tmp_path, f"eval.benchmarks[0].path={path}")).check_inputs(["cpt", "sft"])


def test_duplicate_question_ids(tmp_path):
    def dup(rows):
        rows[5]["id"] = rows[2]["id"] = "q-2"

    path = bad_benchmark(tmp_path, dup)
    result = validate(tmp_path, f"eval.benchmarks[0].path={path}")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "duplicate question ids" in result.output and "'q-2' at rows 2 and 5" in result.output


def test_benchmark_in_another_encoding_names_file_and_line(tmp_path):
    rows = json.loads(SAMPLE_MCQ.read_text())
    rows[1]["question"] = "Why is the Ångström unit used?"
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps(rows, indent=1, ensure_ascii=False).encode("latin-1"))
    result = validate(tmp_path, f"eval.benchmarks[0].path={path}")
    assert result.exit_code == EXIT_BAD_INPUT
    line = next(i for i, l in enumerate(path.read_bytes().split(b"\n"), 1) if b"\xc5ngstr" in l)
    assert str(path) in result.output and "not UTF-8" in result.output and f"line {line}," in result.output


def test_decontamination_benchmark_is_checked(tmp_path):
    path = bad_benchmark(tmp_path, lambda rows: rows[7].__setitem__("answer", 9))
    result = validate(tmp_path, f"corpus.decontamination.benchmarks=[{path}]")
    assert result.exit_code == EXIT_BAD_INPUT and "corpus.decontamination.benchmarks[0]" in result.output


def test_sft_torn_line_and_non_object_lines(tmp_path):
    lines = SAMPLE_SFT.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # torn
    lines[4] = "[1, 2]"
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = validate(tmp_path, f"sft.dataset={path}")
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"{path}:2: sft.dataset.path: not valid JSON" in result.output
    assert f"{path}:5: sft.dataset.path: a JSON list, not an object" in result.output


def test_sft_rows_the_stage_drops_are_warnings_unless_none_is_usable(tmp_path):
    lines = SAMPLE_SFT.read_text().splitlines()
    lines[2] = json.dumps({"messages": "hello"})
    lines[6] = json.dumps({"text": "no conversation"})
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = check_inputs(tiny(tmp_path, f"sft.dataset={path}"))
    assert report.errors == []
    assert [w[0] for w in report.warnings] == [f"{path}:3", f"{path}:7"]
    all_bad = tmp_path / "all_bad.jsonl"
    all_bad.write_text(json.dumps({"messages": "hello"}) + "\n" + json.dumps({"prompt": "only"}) + "\n")
    result = validate(tmp_path, f"sft.dataset={all_bad}")
    assert result.exit_code == EXIT_BAD_INPUT and f"{all_bad}:1" in result.output and f"{all_bad}:2" in result.output


def test_cpt_dataset_lines_need_the_text_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "x"}) + "\n" + '{"text": "to\n')
    result = validate(tmp_path, "corpus.enabled=false", f"cpt.dataset={path}", "synth.enabled=false", f"sft.dataset={SAMPLE_SFT}")
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"{path}:2: cpt.dataset: field 'text' is missing" in result.output
    assert f"{path}:3: cpt.dataset: not valid JSON" in result.output


def test_corpus_metadata_torn_line_and_missing_id(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE_CORPUS, corpus)
    meta = corpus / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    lines[3] = lines[3][:40]
    rec = json.loads(lines[5])
    del rec["id"]
    lines[5] = json.dumps(rec)
    meta.write_text("\n".join(lines) + "\n")
    result = validate(tmp_path, f"corpus.local_dir={corpus}")
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"{meta}:4: corpus.local_dir metadata.jsonl: not valid JSON" in result.output
    assert f"{meta}:6: corpus.local_dir metadata.jsonl: record without an 'id'" in result.output


def test_a_hub_benchmark_is_left_to_its_stage(tmp_path):
    report = check_inputs(tiny(tmp_path, "eval.benchmarks[0].path=AstroMLab/Astrobench_MCQ_v1_Public"))
    assert report.errors == [] and "AstroMLab/Astrobench_MCQ_v1_Public" in report.checked


@pytest.mark.parametrize(
    "override, expected",
    [
        ("cpt.learning_rate=.inf", "cpt.learning_rate: Infinity is not valid: Input should be a finite number"),
        ("sft.learning_rate=-.inf", "sft.learning_rate: -Infinity is not valid"),
        ("merge.weight=.inf", "merge.weight: Infinity is not valid: Input should be a finite number"),
        ("cpt.learning_rate=.nan", "cpt.learning_rate: NaN"),
        ("corpus.date_from=2024-13-45", "'2024-13-45' is not a calendar date (month must be in 1..12)"),
        ("corpus.date_to=2023-02-29", "'2023-02-29' is not a calendar date"),
        ("cpt.max_steps=true", "cpt.max_steps: true is not valid: Value error, True is a boolean"),
        ("run.seed=false", "run.seed: false is not valid"),
        ("cpt.max_seq_len=512.0", "512.0 is not an integer"),
        ("cpt.max_seq_len=1.0e+30", "cpt.max_seq_len: 1e+30 is not valid"),
        ("sft.max_seq_len=2000000", "sft.max_seq_len: 2000000 is not <= 1048576"),
        ("cpt.per_device_batch_size=1000000", "is not <= 65536"),
        ("cpt.learning_rate=3.0", "cpt.learning_rate: 3.0 is not <= 1.0"),
        ("synth.max_new_tokens=99999999", "synth.max_new_tokens: 99999999 is not <= 1048576"),
    ],
)
def test_impossible_values_are_refused_with_the_field(tmp_path, override, expected):
    result = validate(tmp_path, override)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert expected in " ".join(result.output.split())


@pytest.mark.parametrize("override", ["corpus.date_from=2024-02-29", "cpt.max_steps=3", "cpt.num_epochs=2", "cpt.learning_rate=1",
                                      "cpt.lora.enabled=true", "cpt.max_seq_len=1048576"])
def test_sound_values_still_validate(tmp_path, override):
    result = validate(tmp_path, override)
    assert result.exit_code == 0, result.output


def test_dates_in_a_recipe_file_stay_text(tmp_path):
    text = TINY.read_text().replace("corpus:\n", "corpus:\n  date_from: 2021-03-04\n", 1)
    path = tmp_path / "r.yaml"
    path.write_text(text)
    recipe = load_recipe(path, [f"run.output_dir={tmp_path}"])
    assert recipe.corpus.date_from == "2021-03-04"


def test_perplexity_text_sets_are_scanned(tmp_path):
    path = tmp_path / "general.jsonl"
    path.write_text(json.dumps({"content": "a"}) + "\n" + json.dumps({"content": 3}) + "\n")
    ok = validate(tmp_path, f"eval.perplexity_sets=[{{name: g, path: {path}, text_field: content}}]")
    assert ok.exit_code == EXIT_BAD_INPUT and f"{path}:2: eval.perplexity_sets[0].path: field 'content' is of type int" in ok.output
