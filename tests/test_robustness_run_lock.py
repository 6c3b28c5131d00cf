"""Issue 12 #1: one run at a time per run folder, tested with real processes.

A second ``astrosage run`` on a folder another run holds fails at once, names the holder (pid,
host, start time, Slurm job id) and touches nothing of the first run; a lock left by a killed
process is taken over.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from astrosage.cli import EXIT_BAD_INPUT
from astrosage.run_lock import HOLDER_NAME, RunLock, RunLockedError

from conftest import all_stages_off_yaml

# Runs the real CLI with the cpt stage replaced by one that waits for a "release" file: the
# holder is then certainly inside its stage while the second process tries the same folder.
DRIVER = textwrap.dedent(
    """
    import dataclasses, os, sys, time
    from pathlib import Path
    from astrosage.core.stage import StageResult
    from astrosage.stages import STAGES

    def waiting_stage(ctx):
        flags = Path(os.environ["LOCK_TEST_FLAGS"])
        (ctx.work_dir / "out.txt").write_text(f"written by {os.getpid()}")
        (flags / f"started-{os.getpid()}").write_text("1")
        while os.environ.get("LOCK_TEST_WAIT") == "1" and not (flags / "release").exists():
            time.sleep(0.05)
        return StageResult(outputs={"out": "out.txt"})

    STAGES["cpt"] = dataclasses.replace(STAGES["cpt"], run=waiting_stage, outputs={})
    from astrosage.cli import main
    sys.argv = ["astrosage", *sys.argv[1:]]
    main()
    """
)


@pytest.fixture()
def setup(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(all_stages_off_yaml("locked", tmp_path / "runs"))
    flags = tmp_path / "flags"
    flags.mkdir()
    return driver, recipe, flags, tmp_path / "runs" / "locked"


def start(driver: Path, recipe: Path, flags: Path, wait: bool, job_id: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "LOCK_TEST_FLAGS": str(flags), "LOCK_TEST_WAIT": "1" if wait else "0", "HF_HUB_OFFLINE": "1"}
    env.pop("SLURM_JOB_ID", None)
    if job_id:
        env["SLURM_JOB_ID"] = job_id
    return subprocess.Popen([sys.executable, str(driver), "run", str(recipe), "cpt.enabled=true"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=recipe.parent)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"holder exited early ({proc.returncode}): {proc.communicate()}")
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_second_run_on_the_same_folder_fails_at_once_naming_the_holder(setup):
    driver, recipe, flags, run_dir = setup
    holder = start(driver, recipe, flags, wait=True, job_id="4242")
    try:
        wait_for(flags / f"started-{holder.pid}", holder)
        second = start(driver, recipe, flags, wait=False)
        out, err = second.communicate(timeout=120)
        assert second.returncode == EXIT_BAD_INPUT, out + err
        message = " ".join((out + err).split())
        assert "is in use by another astrosage run" in message
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "Slurm job 4242" in message and "started 20" in message
        # the second run did nothing in the folder: its stage never started, no log file of its own
        assert not (flags / f"started-{second.pid}").exists()
        assert len(list((run_dir / "logs").glob("*.log"))) == 1
        assert (run_dir / "cpt.partial" / "out.txt").read_text() == f"written by {holder.pid}"
    finally:
        (flags / "release").write_text("1")
        out, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, out + err
    manifest = json.loads((run_dir / "cpt" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert (run_dir / "cpt" / "out.txt").read_text() == f"written by {holder.pid}"
    assert not (run_dir / HOLDER_NAME).exists()  # released: the holder record is gone


@pytest.mark.slow
def test_lock_of_a_killed_run_is_taken_over(setup):
    driver, recipe, flags, run_dir = setup
    dead = start(driver, recipe, flags, wait=True, job_id="77")
    wait_for(flags / f"started-{dead.pid}", dead)
    assert json.loads((run_dir / HOLDER_NAME).read_text())["pid"] == dead.pid
    dead.send_signal(signal.SIGKILL)
    dead.communicate(timeout=60)
    rerun = start(driver, recipe, flags, wait=False)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out + err
    assert f"taking over the lock left by pid {dead.pid}" in " ".join((out + err).split())
    assert json.loads((run_dir / "cpt" / "manifest.json").read_text())["status"] == "complete"


def test_lock_is_reentrant_in_one_process_and_exclusive_across_lock_objects(tmp_path):
    first = RunLock(tmp_path / "run", "r")
    with first.held():
        with first.held():  # RunManager.run inside the CLI's lock
            assert json.loads((tmp_path / "run" / HOLDER_NAME).read_text())["pid"] == os.getpid()
        assert (tmp_path / "run" / HOLDER_NAME).exists()  # still held by the outer level
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path / "run", "r").acquire()
    assert not (tmp_path / "run" / HOLDER_NAME).exists()
    with RunLock(tmp_path / "run", "r").held():  # free again
        pass


def test_non_main_ranks_do_not_take_the_lock(tmp_path, monkeypatch):
    from astrosage.core.recipe import load_recipe_dict
    from astrosage.runner import RunManager

    import yaml

    recipe = load_recipe_dict(yaml.safe_load(all_stages_off_yaml("ranks", tmp_path / "runs")))
    with RunManager(recipe).locked():
        monkeypatch.setenv("RANK", "1")
        with RunManager(recipe).locked():  # rank 1 of the same launch: runs under rank 0's lock
            pass
