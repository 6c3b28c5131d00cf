"""Issue 12 #5/#7: one wandb run per stage (no id leaking from cpt into sft), resumed by a requeued stage, argv redacted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from astrosage.core.recipe import LoggingSection
from astrosage.training import loggers

WANDB_VARS = ("WANDB_DIR", "WANDB_PROJECT", "WANDB_MODE", "WANDB_NAME", "WANDB_RESUME", "WANDB_RUN_ID", "WANDB_ENTITY")
FAKE_HF = "hf_argvTOKENforTESTS0123456789abcdefgh"


@pytest.fixture
def clean_wandb_env(monkeypatch):
    for key in WANDB_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # restored after the test


def test_each_stage_gets_its_own_run_and_keeps_it_across_requeues(tmp_path, clean_wandb_env):
    section = LoggingSection(backend="wandb", wandb_mode="offline")
    loggers.configure(section, tmp_path / "cpt.partial", "t-cpt")
    cpt_id, cpt_name = loggers.os.environ["WANDB_RUN_ID"], loggers.os.environ["WANDB_NAME"]
    loggers.configure(section, tmp_path / "sft.partial", "t-sft")  # same process: must not inherit cpt's run
    assert loggers.os.environ["WANDB_RUN_ID"] != cpt_id and loggers.os.environ["WANDB_NAME"] == "t-sft" != cpt_name
    sft_id = loggers.os.environ["WANDB_RUN_ID"]
    # a requeued cpt (same unfinished folder, new process) resumes its own run
    loggers.configure(section, tmp_path / "cpt.partial", "t-cpt")
    assert loggers.os.environ["WANDB_RUN_ID"] == cpt_id and loggers.os.environ["WANDB_RESUME"] == "allow"
    assert (tmp_path / "cpt.partial" / loggers.RUN_ID_FILE).read_text().strip() == cpt_id
    assert (tmp_path / "sft.partial" / loggers.RUN_ID_FILE).read_text().strip() == sft_id


def test_argv_handed_to_wandb_is_redacted(tmp_path, clean_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setattr(sys, "argv", ["astrosage", "run", "r.yaml", f"sft.direct_system_prompt={FAKE_HF}",
                                      "synth.api_base=https://me:s3cretpass@teacher.example/v1",
                                      "logging.entity=0123456789abcdef0123456789abcdef01234567", "model.revision=main"])
    loggers.configure(LoggingSection(backend="wandb", wandb_mode="offline"), tmp_path, "t-cpt")
    text = " ".join(sys.argv)
    assert FAKE_HF not in text and "s3cretpass" not in text and "0123456789abcdef0123456789abcdef01234567" not in text
    assert sys.argv[:3] == ["astrosage", "run", "r.yaml"] and sys.argv[-1] == "model.revision=main"
    assert "sft.direct_system_prompt=***" in text and "https://me:***@teacher.example/v1" in text


@pytest.mark.slow
def test_cpt_then_sft_in_one_process_log_to_two_runs(tmp_path, clean_wandb_env, monkeypatch):
    from astrosage.runner import RunManager
    from test_train_stages import tiny_recipe

    monkeypatch.setattr(sys, "argv", ["astrosage", "run", "r.yaml", f"sft.direct_system_prompt={FAKE_HF}"])
    recipe = tiny_recipe(tmp_path / "runs", cpt={"max_steps": 2}, sft={"max_steps": 2},
                         logging={"backend": "wandb", "wandb_mode": "offline"})
    RunManager(recipe).run(["cpt", "sft"])
    run_dir = tmp_path / "runs" / "t"
    ids = {}
    for stage in ("cpt", "sft"):
        runs = list((run_dir / stage / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, (stage, runs)
        ids[stage] = (run_dir / stage / loggers.RUN_ID_FILE).read_text().strip()
        assert runs[0].name.endswith(ids[stage])
        for f in runs[0].rglob("*"):
            if f.is_file():
                assert FAKE_HF.encode() not in f.read_bytes(), f
        # the run's metadata (in the offline transaction log) records the redacted argv
        assert b"sft.direct_system_prompt=***" in next(runs[0].glob("*.wandb")).read_bytes()
    assert ids["cpt"] != ids["sft"]
