"""Render and submit sbatch jobs for pipeline stages (`astrosage slurm`).

One job per stage, one srun task per node; each node's task (``launch_node.sh``, package data in
``astrosage/resources/slurm/`` next to the ``job.sbatch.j2`` template) starts
its processes with ``accelerate launch`` or ``torchrun`` using ranks and addresses derived from
Slurm's variables. Preemption and time limits: ``--signal=B:USR1@grace`` + ``--requeue``; the
batch script forwards USR1 to the training processes, which write a complete checkpoint and exit
with :data:`REQUEUE_EXIT_CODE` (or leave ``$ASTROSAGE_REQUEUE_MARKER``); only then is the job
requeued, at most ``slurm.max_requeues`` times. Every value from the recipe or the command line
is validated by the schema and shell-quoted here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .core.recipe import Recipe

from .core.exitcodes import REQUEUE as REQUEUE_EXIT_CODE

#: Stages that run multi-node / multi-process; the others run as one process on one node.
TRAINING_STAGES = ("cpt", "sft")
#: Stages that need no GPU.
CPU_STAGES = ("corpus", "publish")

TEMPLATE_NAME = "job.sbatch.j2"
LAUNCHER_NAME = "launch_node.sh"


class SlurmError(RuntimeError):
    """A job could not be rendered or submitted."""


def templates_dir() -> Path:
    """The folder with the sbatch template and node launcher: ``$ASTROSAGE_SLURM_TEMPLATES`` if set
    (your own copies), else the package's ``astrosage/resources/slurm`` (installed as package data)."""
    from importlib import resources

    env = os.environ.get("ASTROSAGE_SLURM_TEMPLATES")
    # the job script names the launcher by path, so it must be a real file: wheels install unzipped
    folder = Path(env) if env else Path(str(resources.files("astrosage.resources").joinpath("slurm")))
    missing = [name for name in (TEMPLATE_NAME, LAUNCHER_NAME) if not (folder / name).is_file()]
    if missing:
        where = "$ASTROSAGE_SLURM_TEMPLATES" if env else "the installed package (reinstall astrosage)"
        raise SlurmError(f"{', '.join(missing)} not found in {folder} ({where})")
    return folder


@dataclass
class JobSpec:
    """One rendered job."""

    stage: str
    name: str
    script: str
    path: Path


def _procs_per_node(recipe: Recipe, stage: str) -> int:
    if stage not in TRAINING_STAGES:
        return 1
    if recipe.slurm.processes_per_node:
        return recipe.slurm.processes_per_node
    return max(1, recipe.slurm.gpus_per_node)


def render_job(
    recipe: Recipe,
    stage: str,
    recipe_file: Path,
    overrides: list[str] | None = None,
    workdir: Path | None = None,
) -> JobSpec:
    """Render the sbatch script that runs ``astrosage <stage> recipe_file [overrides]``."""
    import jinja2

    from .stages import STAGES

    if stage not in STAGES:
        raise SlurmError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
    s = recipe.slurm
    folder = templates_dir()
    workdir = (workdir or Path.cwd()).resolve()
    run_dir = (workdir / recipe.run.output_dir / recipe.run.name).resolve()
    log_dir = (workdir / s.log_dir).resolve() if s.log_dir else run_dir / "slurm"
    nodes = s.nodes if stage in TRAINING_STAGES else 1
    gpus = 0 if stage in CPU_STAGES else s.gpus_per_node
    procs = _procs_per_node(recipe, stage)
    name = f"{recipe.run.name}-{stage}"
    recipe_path = recipe_file if recipe_file.is_absolute() else (workdir / recipe_file)
    command = ["eval", "run"] if stage == "eval" else [stage]  # `astrosage eval` is a group: eval run RECIPE
    args = [*command, str(recipe_path.resolve()), *(overrides or [])]
    grace = s.signal_grace_s
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = lambda v: shlex.quote("" if v is None else str(v))
    env.filters["e"] = lambda v: re.sub(r"[\r\n]", " ", str(v))
    script = env.get_template(TEMPLATE_NAME).render(
        recipe_file=str(recipe_file),
        stage=stage,
        job_name=name,
        nodes=nodes,
        cpus_per_task=s.cpus_per_task,
        gpus_per_node=gpus,
        time=s.time,
        partition=s.partition,
        account=s.account,
        qos=s.qos,
        mem=s.mem,
        log_pattern=str(log_dir / "%x-%j.out"),
        signal_grace_s=grace,
        extra_sbatch=s.extra_sbatch,
        workdir=str(workdir),
        setup=s.setup,
        procs_per_node=procs,
        launcher=s.launcher,
        python=s.python,
        accelerate_config=str((workdir / s.accelerate_config).resolve()) if s.accelerate_config else "",
        omp_threads=max(1, s.cpus_per_task // procs),
        shutdown_timeout_s=max(10, grace - 30),
        requeue_exit_code=REQUEUE_EXIT_CODE,
        max_requeues=s.max_requeues,
        marker_dir=str(log_dir / "markers"),
        srun_wait_s=max(60, grace),
        launch_script=str(folder / LAUNCHER_NAME),
        command_args=" ".join(shlex.quote(a) for a in args),
    )
    if not re.fullmatch(r"[A-Za-z0-9._/@+=:,-]+", str(log_dir)):
        # `#SBATCH --output=` cannot be shell-quoted: refuse anything but plain path characters
        raise SlurmError(f"the job log folder {str(log_dir)!r} has spaces, quotes or other special characters; set slurm.log_dir to a plain path")
    if s.accelerate_config and not (workdir / s.accelerate_config).exists():
        raise SlurmError(f"slurm.accelerate_config {str(s.accelerate_config)!r} does not exist (resolved to {(workdir / s.accelerate_config).resolve()})")
    return JobSpec(stage=stage, name=name, script=script, path=log_dir / f"{stage}.sbatch")


def write_job(job: JobSpec) -> Path:
    """Write the script (atomically) and make sure the log folder exists."""
    from .core.artifacts import atomic_write_text

    job.path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(job.path, job.script)
    job.path.chmod(0o755)
    return job.path


def submit_job(job: JobSpec, dependency: str | None = None) -> str:
    """``sbatch --parsable [--dependency=afterok:ID] script``; returns the job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SlurmError("sbatch not found on PATH: run `astrosage slurm ... --submit` on a Slurm login node")
    path = write_job(job)
    cmd = [sbatch, "--parsable"]
    if dependency:
        if not re.fullmatch(r"\d+", dependency):
            raise SlurmError(f"bad job id {dependency!r} for a dependency")
        cmd.append(f"--dependency=afterok:{dependency}")
    cmd.append(str(path))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SlurmError(f"sbatch failed for {path} (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed {proc.stdout.strip()!r}, expected a job id")
    return job_id


def enabled_stages(recipe: Recipe) -> list[str]:
    """Stages enabled in the recipe, in pipeline order."""
    from .stages import STAGES

    return [name for name in STAGES if getattr(recipe, name).enabled]
