"""Runs the extraction step (:class:`corpus_tools.process.ExtractStep`) through a datatrove executor.

``corpus.executor: local`` uses datatrove's ``LocalPipelineExecutor`` (worker processes);
``slurm`` submits a ``SlurmPipelineExecutor`` job array with the recipe's ``slurm`` settings and
waits for it. Either way datatrove's completion markers (``<logs>/completions``) let a rerun skip
the tasks a crashed run finished, and drive the ``extract`` progress bar.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .process import ExtractStep, ProcessConfig, extracted_shards
from .sources import Progress


def task_count(n_inputs: int, num_workers: int, shard_docs: int) -> int:
    """Tasks for ``n_inputs`` input lines: at least one per worker, about ``shard_docs`` lines each, never more than lines."""
    return max(1, min(n_inputs, max(num_workers, math.ceil(n_inputs / shard_docs))))


def completed_tasks(logs: Path) -> int:
    """How many tasks left a datatrove completion marker."""
    folder = logs / "completions"
    return len(list(folder.glob("*"))) if folder.exists() else 0


def default_partition() -> str:
    """The cluster's default partition (marked '*' by sinfo); datatrove needs one by name."""
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60).stdout.split()
    for name in out:
        if name.endswith("*"):
            return name[:-1]
    if out:
        return out[0]
    raise RuntimeError("corpus.executor is 'slurm' but no Slurm partition was found; set slurm.partition")


def wait_for_slurm_tasks(job_id: str | None, logs: Path, tasks: int, poll_s: float = 5.0) -> None:
    """Wait until every task left a completion marker, or the job array left the queue (failed tasks)."""
    if not job_id:
        raise RuntimeError("datatrove did not report a Slurm job id for the extraction array; see its logs in " + str(logs))
    while completed_tasks(logs) < tasks:
        queued = subprocess.run(["squeue", "-h", "-j", str(job_id)], capture_output=True, text=True)
        if queued.returncode == 0 and not queued.stdout.strip() and completed_tasks(logs) < tasks:
            time.sleep(poll_s)  # a task may write its marker just as it leaves the queue
            break
        time.sleep(poll_s)


def make_executor(step: ExtractStep, tasks: int, workers: int, logs: Path, executor: str, recipe: Any) -> Any:
    """datatrove's local or Slurm executor for the step (Slurm: the recipe's partition, account, set-up lines)."""
    if executor != "slurm":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline=[step], tasks=tasks, workers=workers, logging_dir=str(logs), skip_completed=True)
    from datatrove.executor import SlurmPipelineExecutor

    s = recipe.slurm
    activate = Path(sys.prefix) / "bin" / "activate"
    return SlurmPipelineExecutor(
        pipeline=[step], tasks=tasks, time=s.time, partition=s.partition or default_partition(),
        job_name=f"{recipe.run.name}-corpus", logging_dir=str(logs), cpus_per_task=1, qos=s.qos or "",
        sbatch_args={
            **({"account": s.account} if s.account else {}),
            # the recipe's extra sbatch options (validated --name[=value] by the schema)
            **{opt[2:].split("=", 1)[0]: (opt.split("=", 1)[1] if "=" in opt else "") for opt in s.extra_sbatch},
        },
        # the array tasks need this Python environment: the recipe's set-up lines, else this venv
        env_command="\n".join(s.setup) or None,
        venv_path=str(activate) if not s.setup and activate.exists() else None,
    )


def run_tasks(ex: Any, slurm: bool, logs: Path, tasks: int, bars: Progress) -> None:
    """Run the executor with the ``extract`` bar following the completion markers; fail if any task failed."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            bars("extract", completed_tasks(logs), tasks)
            stop.wait(0.5)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        ex.run()
        if slurm:  # sbatch returns at once: wait for the array's completion markers
            wait_for_slurm_tasks(getattr(ex, "job_id", None), logs, tasks)
    finally:
        stop.set()
        watcher.join()
    done = completed_tasks(logs)
    bars("extract", done, tasks)
    if done < tasks:
        raise RuntimeError(f"{tasks - done} of {tasks} extraction tasks failed; see the logs in {logs}")


def extract(config: ProcessConfig, n_inputs: int, recipe: Any, bars: Progress) -> list[Path]:
    """Extract every input line under ``config.work_dir`` (tasks sized by the recipe); the finished shards."""
    if not n_inputs:
        return []
    cfg = recipe.corpus
    work = Path(config.work_dir)
    tasks = task_count(n_inputs, cfg.num_workers, cfg.shard_docs)
    logs = work / "logs"
    ex = make_executor(ExtractStep(config), tasks, min(cfg.num_workers, tasks), logs, cfg.executor, recipe)
    run_tasks(ex, cfg.executor == "slurm", logs, tasks, bars)
    return extracted_shards(work)
