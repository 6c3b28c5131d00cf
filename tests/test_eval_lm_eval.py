"""The exported lm-evaluation-harness tasks, run by lm-eval itself, agree with our scorers."""

from __future__ import annotations

import pytest
import yaml

from eval.api import evaluate_checkpoint
from eval.lm_eval_export import export_lm_eval
from eval.prompts import LETTER_TEMPLATE
from test_eval_support import letter_sensitive_model, make_rows, read_jsonl, write_json

N = 16


@pytest.fixture(scope="module")
def agreement(tiny_instruct, tmp_path_factory):
    """lm-eval's per-sample log-likelihoods and our predictions for both methods, on one model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tmp = tmp_path_factory.mktemp("lm-eval")
    model = letter_sensitive_model(tiny_instruct, tmp / "model")
    bench = write_json(tmp / "bench.json", make_rows(N))
    task_dir = tmp / "tasks"
    letter_yaml = export_lm_eval(str(bench), task_dir, task="astro_letter")
    choices_yaml = export_lm_eval(str(bench), task_dir, task="astro", method="choices")
    lm = HFLM(pretrained=str(model), batch_size=8, device="cpu", dtype="float32")
    results = simple_evaluate(
        model=lm,
        tasks=["astro_letter", "astro_choices"],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )
    ours = {}
    for method in ("letter", "choices"):
        evaluate_checkpoint(str(model), str(bench), tmp / method, method=method, batch_size=4)
        ours[method] = read_jsonl(tmp / method / "predictions.jsonl")
    samples = {task: sorted(results["samples"][task], key=lambda s: s["doc_id"]) for task in ("astro_letter", "astro_choices")}
    return {"samples": samples, "ours": ours, "results": results["results"], "yamls": (letter_yaml, choices_yaml)}


def _argmax(values):
    return max(range(len(values)), key=lambda k: (values[k], -k))


def test_exported_task_yaml(agreement):
    letter_yaml, choices_yaml = agreement["yamls"]
    config = yaml.safe_load(letter_yaml.read_text())
    assert config["output_type"] == "multiple_choice" and config["dataset_path"] == "json"
    assert config["doc_to_choice"] == ["A", "B", "C", "D"] and config["target_delimiter"] == " "
    assert config["doc_to_text"] == LETTER_TEMPLATE and config["doc_to_target"] == "answer_index"
    data_file = config["dataset_kwargs"]["data_files"]["test"]
    assert data_file.endswith("astro_letter.jsonl") and len(read_jsonl(data_file)) == N
    assert yaml.safe_load(choices_yaml.read_text())["doc_to_choice"] == "{{[A, B, C, D]}}"


def test_letter_matches_lm_eval(agreement):
    samples, ours = agreement["samples"]["astro_letter"], agreement["ours"]["letter"]
    assert len(samples) == N
    # lm-eval scored " A".." D" after our exact prompt
    assert [a[1] for a in samples[0]["arguments"]] == [" A", " B", " C", " D"]
    assert samples[0]["arguments"][0][0].endswith("\nAnswer:")
    lm_preds = ["ABCD"[_argmax([r[0] for r in s["filtered_resps"]])] for s in samples]
    assert lm_preds == [r["prediction"] for r in ours]
    assert len(set(lm_preds)) >= 2, "predictions should vary across questions, or agreement proves little"
    for s, row in zip(samples, ours):
        assert [r[0] for r in s["filtered_resps"]] == pytest.approx(row["scores"], abs=1e-4)
    acc = agreement["results"]["astro_letter"]["acc,none"]
    assert acc == pytest.approx(sum(r["correct"] for r in ours) / N)


def test_choices_matches_lm_eval_acc_and_acc_norm(agreement):
    samples, ours = agreement["samples"]["astro_choices"], agreement["ours"]["choices"]
    assert len(samples) == N
    for s, row in zip(samples, ours):
        lls = [r[0] for r in s["filtered_resps"]]
        assert lls == pytest.approx(row["scores"], abs=1e-3)
        assert "ABCD"[_argmax(lls)] == row["prediction"]
        assert s["acc"] == float(row["correct"]) and s["acc_norm"] == float(row["correct_norm"])
    res = agreement["results"]["astro_choices"]
    assert res["acc,none"] == pytest.approx(sum(r["correct"] for r in ours) / N)
    assert res["acc_norm,none"] == pytest.approx(sum(r["correct_norm"] for r in ours) / N)


def test_unlabelled_export_is_refused_unless_asked(tmp_path, astromlab1_public):
    from eval.lm_eval_export import export_lm_eval

    with pytest.raises(ValueError, match="have no answer"):
        export_lm_eval(str(astromlab1_public), tmp_path / "t", limit=5)
    path = export_lm_eval(str(astromlab1_public), tmp_path / "t", limit=5, allow_unlabelled=True)
    assert "UNLABELLED" in path.read_text().splitlines()[1]
