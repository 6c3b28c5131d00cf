"""Issue 12 #6: a second SIGTERM during the teardown after a preemption still ends with exit code 75
and the requeue marker (before, it killed the process with -15 and Slurm did not requeue)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from astrosage.core.exitcodes import REQUEUE

from conftest import all_stages_off_yaml

# The real CLI; the cpt stage is one that gets SIGTERM inside its PreemptionHandler, "saves a
# checkpoint" and raises Preempted, like the training stages. A second SIGTERM is sent when the
# teardown reaches the requeue-marker write (the latest moment before exit: everything between
# the stage and the marker - runner, summary - has run with the signal already pending once).
DRIVER = textwrap.dedent(
    """
    import dataclasses, os, signal, sys, time
    from astrosage import cli
    from astrosage.stages import STAGES
    from astrosage.training.preemption import Preempted, PreemptionHandler

    def preempted_stage(ctx):
        with PreemptionHandler() as handler:
            os.kill(os.getpid(), signal.SIGTERM)          # the scheduler's first SIGTERM
            deadline = time.monotonic() + 30
            while not handler.requested and time.monotonic() < deadline:
                time.sleep(0.01)
            (ctx.work_dir / "checkpoint-1").mkdir()
            raise Preempted("preempted at step 1; checkpoint complete")

    real_mark = cli._mark_requeue
    def second_sigterm_then_mark():
        os.kill(os.getpid(), signal.SIGTERM)              # the second SIGTERM, during teardown
        time.sleep(0.2)                                    # delivered (or not) before the marker
        real_mark()
    cli._mark_requeue = second_sigterm_then_mark

    STAGES["cpt"] = dataclasses.replace(STAGES["cpt"], run=preempted_stage)
    sys.argv = ["astrosage", *sys.argv[1:]]
    cli.main()
    """
)


@pytest.mark.slow
def test_second_sigterm_during_teardown_still_exits_75_with_marker(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(all_stages_off_yaml("pre", tmp_path / "runs"))
    marker = tmp_path / "markers" / "requeue-1-0"
    env = {**os.environ, "ASTROSAGE_REQUEUE_MARKER": str(marker), "HF_HUB_OFFLINE": "1"}
    env.pop("RANK", None)
    proc = subprocess.run([sys.executable, str(driver), "run", str(recipe), "cpt.enabled=true"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == REQUEUE, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert marker.exists()
    assert (tmp_path / "runs" / "pre" / "cpt.partial" / "checkpoint-1").is_dir()  # the checkpoint is kept for the resume
    assert "preempted" in proc.stdout + proc.stderr


def test_handlers_are_restored_after_a_normal_exit():
    import signal

    from astrosage.training.preemption import PreemptionHandler

    before = signal.getsignal(signal.SIGTERM)
    with PreemptionHandler() as handler:
        assert signal.getsignal(signal.SIGTERM) == handler._handle
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(RuntimeError):
        with PreemptionHandler():
            raise RuntimeError("a crash is not a preemption")
    assert signal.getsignal(signal.SIGTERM) == before
