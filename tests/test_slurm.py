"""`astrosage slurm`: rendering, quoting, the node launcher, and a real one-node Slurm cluster."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astrosage.cli import EXIT_BAD_INPUT, app
from astrosage.core.recipe import RecipeError, load_recipe, load_recipe_dict
from astrosage.slurm import REQUEUE_EXIT_CODE, render_job, templates_dir
from conftest import all_stages_off_yaml

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def base_recipe(tmp_path: Path, **slurm) -> dict:
    return {
        "run": {"name": "sl", "output_dir": str(tmp_path / "runs")},
        "model": {"base": "tiny:base", "base_instruct": "tiny:instruct"},
        "corpus": {"enabled": False},
        "synth": {"enabled": False},
        "eval": {"enabled": False},
        "publish": {"enabled": False},
        "slurm": slurm,
    }


def sbatch_options(script: str) -> dict[str, str]:
    opts = {}
    for line in script.splitlines():
        m = re.match(r"#SBATCH --([a-z-]+)(?:=(.*))?$", line)
        if m:
            opts[m.group(1)] = m.group(2) or ""
    return opts


def exported(script: str, name: str) -> str:
    m = re.search(rf"^export {name}=(.*)$", script, re.M)
    assert m, name
    return m.group(1)


@pytest.mark.parametrize("nodes,gpus", [(1, 8), (4, 8), (2, 0)])
def test_training_job_counts(tmp_path, nodes, gpus):
    recipe = load_recipe_dict(base_recipe(tmp_path, nodes=nodes, gpus_per_node=gpus, partition="gpu", account="astro", time="2-00:00:00"))
    job = render_job(recipe, "cpt", Path("recipes/r.yaml"), ["cpt.max_steps=5"], workdir=tmp_path)
    opts = sbatch_options(job.script)
    assert opts["nodes"] == str(nodes) and opts["ntasks-per-node"] == "1"
    assert opts.get("gpus-per-node") == (str(gpus) if gpus else None)
    assert opts["partition"] == "gpu" and opts["account"] == "astro" and opts["time"] == "2-00:00:00"
    assert opts["requeue"] == "" and opts["signal"] == "B:USR1@300" and opts["open-mode"] == "append"
    assert exported(job.script, "ASTROSAGE_NNODES") == str(nodes)
    assert exported(job.script, "ASTROSAGE_PROCS_PER_NODE") == str(max(gpus, 1))
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1' in job.script
    assert f"--nodes={nodes}" in job.script and "--kill-on-bad-exit=1" in job.script
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in job.script
    assert f"REQUEUE_EXIT_CODE={REQUEUE_EXIT_CODE}" in job.script
    assert job.path == tmp_path / "runs" / "sl" / "slurm" / "cpt.sbatch"
    subprocess.run(["bash", "-n"], input=job.script, text=True, check=True)


def test_non_training_stages_use_one_process(tmp_path):
    recipe = load_recipe_dict(base_recipe(tmp_path, nodes=4, gpus_per_node=8))
    corpus = render_job(recipe, "corpus", Path("r.yaml"), workdir=tmp_path)
    assert sbatch_options(corpus.script)["nodes"] == "1" and "gpus-per-node" not in sbatch_options(corpus.script)
    evaluation = render_job(recipe, "eval", Path("r.yaml"), workdir=tmp_path)
    assert sbatch_options(evaluation.script)["gpus-per-node"] == "8"
    assert exported(evaluation.script, "ASTROSAGE_PROCS_PER_NODE") == "1"


@pytest.mark.parametrize(
    "field,value",
    [
        ("partition", "gpu; rm -rf /"),
        ("account", "$(touch /tmp/pwned)"),
        ("qos", "a\nb"),
        ("time", "1:00:00\n#SBATCH --uid=0"),
        ("mem", "10G`id`"),
        ("extra_sbatch", ["--constraint=h100 --uid=0"]),
        ("extra_sbatch", ["--comment=$(id)"]),
        ("setup", ["module load x\nrm -rf ~"]),
        ("python", "python; id"),
    ],
)
def test_hostile_slurm_values_are_refused(tmp_path, field, value):
    with pytest.raises(RecipeError) as err:
        load_recipe_dict(base_recipe(tmp_path, **{field: value}))
    assert f"slurm.{field}" in str(err.value)


def test_hostile_arguments_are_quoted(tmp_path):
    marker = tmp_path / "pwned"
    nasty = f"synth.api_base=http://x/$(touch {marker})'\"; touch {marker}"
    weird_dir = tmp_path / "dir with 'quotes' and $(x)"
    weird_dir.mkdir()
    recipe = load_recipe_dict(base_recipe(tmp_path))
    job = render_job(recipe, "cpt", weird_dir / "r.yaml", [nasty], workdir=weird_dir)
    line = next(l for l in job.script.splitlines() if "launch_node.sh" in l)
    words = shlex.split(line.strip().removesuffix("&"))
    assert words[-1] == nasty and words[-2] == str(weird_dir / "r.yaml")
    # the shell itself reads the arguments back literally and runs nothing
    args_part = line.split("launch_node.sh", 1)[1].rstrip(" &")
    out = subprocess.run(["bash", "-c", f"printf '%s\\n' {args_part}"], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["cpt", str(weird_dir / "r.yaml"), nasty]
    assert f"cd {shlex.quote(str(weird_dir))}" in job.script
    assert not marker.exists()


def test_cli_dry_run_and_write(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    result = runner.invoke(app, ["slurm", "recipes/astrosage-8b.yaml", "--stage", "cpt", "--nodes", "4", "--partition", "h100", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "#SBATCH --nodes=4" in result.output and "#SBATCH --partition=h100" in result.output
    assert not (REPO / "runs" / "astrosage-8b" / "slurm" / "cpt.sbatch").exists()
    result = runner.invoke(app, ["slurm", "recipes/astrosage-8b.yaml", "--all", "--dry-run", f"run.output_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert result.output.count("#!/bin/bash") == 7
    bad = runner.invoke(app, ["slurm", "recipes/astrosage-8b.yaml", "--stage", "cpt", "--partition", "x;id", "--dry-run"])
    assert bad.exit_code == EXIT_BAD_INPUT and "slurm.partition" in bad.output
    neither = runner.invoke(app, ["slurm", "recipes/astrosage-8b.yaml"])
    assert neither.exit_code == EXIT_BAD_INPUT


def _launch(tmp_path: Path, procs: int, launcher: str, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SLURM_NODEID": "0",
        "SLURM_JOB_ID": "4242",
        "ASTROSAGE_NNODES": "1",
        "ASTROSAGE_PROCS_PER_NODE": str(procs),
        "ASTROSAGE_LAUNCHER": launcher,
        "ASTROSAGE_PYTHON": sys.executable,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(20000 + os.getpid() % 20000),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(["bash", str(templates_dir() / "launch_node.sh"), *args], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_node_launcher_starts_ranked_processes(tmp_path, launcher):
    """The per-node launcher gives every process its rank and world size from Slurm's variables."""
    probe = tmp_path / "probe.yaml"
    probe.write_text(all_stages_off_yaml("probe", tmp_path / "runs"))
    proc = _launch(tmp_path, 2, launcher, "run", str(probe))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # both ranks ran the pipeline command (each prints the summary table)
    assert proc.stdout.count("astrosage run 'probe'") == 2, proc.stdout


def test_node_launcher_single_process_passes_exit_code(tmp_path):
    proc = _launch(tmp_path, 1, "accelerate", "--version")
    assert proc.returncode == 0 and "astrosage" in proc.stdout
    proc = _launch(tmp_path, 1, "accelerate", "validate", str(tmp_path / "missing.yaml"))
    assert proc.returncode == EXIT_BAD_INPUT


# ------------------------------------------------------------------ a real Slurm cluster

STUB = textwrap.dedent(
    """\
    #!{python}
    # Stands in for `python -m astrosage.cli ...`: waits for USR1 on the first run, then behaves
    # like the training stage after a preemption (complete checkpoint + requeue exit code).
    import os, signal, sys, time
    from pathlib import Path
    out = Path({out!r})
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    mode = {mode!r}
    (out / f"started-{{restart}}").write_text(" ".join(sys.argv[1:]))
    (out / f"stage-{{sys.argv[3]}}").write_text(repr(time.time()))
    if restart > 0 or mode == "finish":
        (out / "finished").write_text(str(restart))
        sys.exit(0)
    if mode == "crash":
        sys.exit(3)
    got = []
    signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
    (out / "ready").write_text("1")
    for _ in range(1200):
        if got:
            (out / "checkpoint").write_text("complete")
            sys.exit({code})
        time.sleep(0.1)
    sys.exit(9)
    """
)


@pytest.fixture(scope="module")
def slurm_cluster():
    sys.path.insert(0, str(Path(__file__).parent))
    from slurm_cluster import SlurmUnavailable, ensure_cluster

    try:
        return ensure_cluster()
    except (SlurmUnavailable, OSError, subprocess.SubprocessError) as exc:
        # not a skip: a skipped Slurm test hides that Slurm support is untested (issue 12 #9)
        pytest.fail(f"no Slurm cluster could be installed or started here: {exc}\n"
                    "(where that is expected, deselect these tests explicitly with -m 'not slurm')", pytrace=False)


def _submit_stub(tmp_path: Path, mode: str, max_requeues: int = 3) -> tuple[str, Path]:
    from astrosage.slurm import submit_job

    out = tmp_path / "out"
    out.mkdir()
    stub = tmp_path / "stub-python"
    stub.write_text(STUB.format(python=sys.executable, out=str(out), mode=mode, code=REQUEUE_EXIT_CODE))
    stub.chmod(0o755)
    recipe = load_recipe_dict(base_recipe(tmp_path, nodes=1, gpus_per_node=0, cpus_per_task=1, time="00:10:00",
                                          signal_grace_s=60, max_requeues=max_requeues, python=str(stub)))
    job = render_job(recipe, "cpt", tmp_path / "r.yaml", workdir=tmp_path)
    return submit_job(job), out


def _wait_file(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.slurm
def test_real_slurm_requeues_after_preemption_signal(slurm_cluster, tmp_path):
    from slurm_cluster import job_field, wait_for_job

    job_id, out = _submit_stub(tmp_path, "preempt")
    _wait_file(out / "ready")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    assert wait_for_job(job_id, timeout=240) == "COMPLETED"
    assert (out / "checkpoint").read_text() == "complete"
    assert (out / "finished").read_text() == "1"  # the rerun saw SLURM_RESTART_COUNT=1
    assert job_field(job_id, "Restarts") == "1"
    log = next((tmp_path / "runs" / "sl" / "slurm").glob("sl-cpt-*.out")).read_text(errors="replace")  # two ranks share the log: a multi-byte character can be torn
    assert "USR1: asking the training processes to checkpoint" in log and "requeueing job" in log
    assert "restart 0" in log and "restart 1" in log  # --open-mode=append kept both runs' output


@pytest.mark.slow
@pytest.mark.slurm
def test_real_slurm_does_not_requeue_a_crash(slurm_cluster, tmp_path):
    from slurm_cluster import job_field, wait_for_job

    job_id, out = _submit_stub(tmp_path, "crash")
    assert wait_for_job(job_id, timeout=240) == "FAILED"
    assert job_field(job_id, "Restarts") == "0" and not (out / "finished").exists()


@pytest.mark.slow
@pytest.mark.slurm
def test_real_slurm_stops_after_max_requeues(slurm_cluster, tmp_path):
    from slurm_cluster import job_field, wait_for_job

    job_id, out = _submit_stub(tmp_path, "preempt", max_requeues=0)
    _wait_file(out / "ready")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    assert wait_for_job(job_id, timeout=240) == "FAILED"
    assert job_field(job_id, "Restarts") == "0" and (out / "checkpoint").exists()


@pytest.mark.slow
@pytest.mark.slurm
def test_real_slurm_all_stages_chained_with_afterok(slurm_cluster, tmp_path):
    from slurm_cluster import wait_for_job

    out = tmp_path / "out"
    out.mkdir()
    stub = tmp_path / "stub-python"
    stub.write_text(STUB.format(python=sys.executable, out=str(out), mode="finish", code=REQUEUE_EXIT_CODE))
    stub.chmod(0o755)
    import yaml

    data = base_recipe(tmp_path, nodes=1, gpus_per_node=0, cpus_per_task=1, time="00:10:00", python=str(stub))
    recipe_file = tmp_path / "chain.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["slurm", str(recipe_file), "--all", "--submit"])
    assert result.exit_code == 0, result.output
    ids = re.findall(r"submitted (\w+): job (\d+)", result.output)
    assert [stage for stage, _ in ids] == ["cpt", "sft", "merge"]
    assert wait_for_job(ids[-1][1], timeout=300) == "COMPLETED"
    times = [float((out / f"stage-{stage}").read_text()) for stage, _ in ids]
    assert times == sorted(times)  # each stage started only after the previous one finished


@pytest.mark.slow
@pytest.mark.slurm
def test_real_slurm_corpus_fans_out_through_datatrove(slurm_cluster, tmp_path):
    """corpus.executor=slurm: the extraction step runs as a datatrove Slurm job array on the cluster."""
    from conftest import SAMPLE_CORPUS, SAMPLE_MCQ

    import pyarrow.parquet as pq

    from astrosage.runner import RunManager

    name = f"sc{os.getpid()}x{int(time.time()) % 100000}"
    data = {
        "run": {"name": name, "output_dir": str(tmp_path / "runs")},
        "model": {"base": "tiny:base"},
        "corpus": {"source": "local", "local_dir": str(SAMPLE_CORPUS), "executor": "slurm", "num_workers": 2, "filters": {"min_chars": 500}},
        "eval": {"enabled": False, "benchmarks": [{"name": "mcq", "path": str(SAMPLE_MCQ)}]},
        "slurm": {"time": "00:10:00", "gpus_per_node": 0},
        **{stage: {"enabled": False} for stage in ("synth", "cpt", "sft", "merge", "publish")},
    }
    outcomes = RunManager(load_recipe_dict(data)).run(["corpus"])
    assert outcomes[0].status == "done"
    docs = pq.read_table(tmp_path / "runs" / name / "corpus" / "docs").to_pylist()
    assert len(docs) >= 10
    heldout = pq.read_table(tmp_path / "runs" / name / "corpus" / "heldout").to_pylist()
    manifest = __import__("json").loads((tmp_path / "runs" / name / "corpus" / "manifest.json").read_text())
    # kept papers = the training docs + the held-out papers (corpus.heldout_fraction / heldout_min_papers)
    assert manifest["counts"]["kept"] == len(docs) + len(heldout) and len(heldout) >= 1
    assert not {d["id"] for d in docs} & {d["id"] for d in heldout}
    # the extraction really ran as a Slurm job array of 2 tasks
    jobs = subprocess.run(["scontrol", "show", "job"], capture_output=True, text=True).stdout
    assert jobs.count(f"JobName={name}-corpus") >= 2


def _tiny_cpt_job(tmp_path: Path, max_steps: int) -> tuple[str, Path]:
    """Submit the tiny CPT stage as a 2-process job (accelerate launch, gloo on CPU)."""
    import yaml

    from astrosage.slurm import submit_job

    data = {
        "run": {"name": "slurm-cpt", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "model": {"base": "tiny:base", "base_instruct": "tiny:instruct", "dtype": "float32"},
        "cpt": {"dataset": str(REPO / "examples" / "cpt_sample" / "astro_text_sample.jsonl"), "max_steps": max_steps,
                "max_seq_len": 128, "per_device_batch_size": 2, "learning_rate": 1e-3, "gradient_checkpointing": False,
                "save_steps": 25, "logging_steps": 5},
        "slurm": {"nodes": 1, "gpus_per_node": 0, "processes_per_node": 2, "cpus_per_task": 2, "time": "00:15:00",
                  "signal_grace_s": 120, "python": sys.executable, "max_requeues": 2},
        **{stage: {"enabled": False} for stage in ("corpus", "synth", "sft", "merge", "eval", "publish")},
    }
    recipe_file = tmp_path / "cpt.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    recipe = load_recipe(recipe_file)
    return submit_job(render_job(recipe, "cpt", recipe_file, workdir=tmp_path)), tmp_path / "runs" / "slurm-cpt"


@pytest.mark.slow
@pytest.mark.slurm
def test_real_slurm_tiny_cpt_two_processes(slurm_cluster, tmp_path):
    from slurm_cluster import wait_for_job

    job_id, run_dir = _tiny_cpt_job(tmp_path, max_steps=30)
    state = wait_for_job(job_id, timeout=540)
    log = next((run_dir / "slurm").glob("slurm-cpt-cpt-*.out")).read_text(errors="replace")  # two ranks share the log: a multi-byte character can be torn
    assert state == "COMPLETED", log[-3000:]
    manifest = json.loads((run_dir / "cpt" / "manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 30
    assert (run_dir / "cpt" / "model" / "model.safetensors").exists()
    # both ranks ran: one log file per rank
    assert {p.name.rsplit("-", 1)[-1] for p in (run_dir / "logs").glob("*.log")} == {"rank0.log", "rank1.log"}


@pytest.mark.slow
@pytest.mark.slurm
def test_real_slurm_tiny_cpt_preempted_requeued_and_resumed(slurm_cluster, tmp_path):
    from slurm_cluster import job_field, wait_for_job

    job_id, run_dir = _tiny_cpt_job(tmp_path, max_steps=400)
    partial = run_dir / "cpt.partial"
    deadline = time.monotonic() + 420
    while not list(partial.glob("**/checkpoint-*")):  # training is under way
        assert time.monotonic() < deadline, "no checkpoint appeared"
        assert job_field(job_id, "JobState") in ("PENDING", "RUNNING", "CONFIGURING")
        time.sleep(1)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    state = wait_for_job(job_id, timeout=600)
    log = next((run_dir / "slurm").glob("slurm-cpt-cpt-*.out")).read_text(errors="replace")  # two ranks share the log: a multi-byte character can be torn
    assert state == "COMPLETED", log[-4000:]
    assert job_field(job_id, "Restarts") == "1", log[-4000:]
    assert "requeueing job" in log
    manifest = json.loads((run_dir / "cpt" / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from_step"] > 0  # the rerun continued from the preemption checkpoint
    assert (run_dir / "cpt" / "model" / "model.safetensors").exists()


def test_unquotable_log_folder_and_missing_accelerate_config_are_refused(tmp_path):
    from astrosage.slurm import SlurmError

    recipe = load_recipe_dict(base_recipe(tmp_path, log_dir=str(tmp_path / "my logs")))
    with pytest.raises(SlurmError, match="spaces, quotes"):
        render_job(recipe, "cpt", Path("r.yaml"), workdir=tmp_path)
    recipe = load_recipe_dict(base_recipe(tmp_path, accelerate_config="recipes/accelerate/nope.yaml"))
    with pytest.raises(SlurmError, match="accelerate_config"):
        render_job(recipe, "cpt", Path("r.yaml"), workdir=tmp_path)


@pytest.mark.parametrize("stage", ["corpus", "synth", "cpt", "sft", "merge", "eval", "publish"])
def test_every_job_runs_a_command_the_cli_accepts(tmp_path, stage):
    """The node launcher runs `python -m astrosage.cli <args>`: those args must parse (no stale command forms)."""
    import shlex

    recipe = load_recipe_dict(base_recipe(tmp_path, nodes=1, gpus_per_node=0))
    job = render_job(recipe, stage, Path("r.yaml"), workdir=tmp_path)
    line = next(line for line in job.script.splitlines() if "launch_node.sh" in line and not line.lstrip().startswith("#"))
    args = shlex.split(line.split("launch_node.sh", 1)[1].rstrip(" &"))
    command = args[: args.index(str((tmp_path / "r.yaml").resolve()))]
    assert command == (["eval", "run"] if stage == "eval" else [stage])
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: astrosage " + " ".join(command) in " ".join(result.output.split())
