"""Recipe section ``slurm``: the defaults of `astrosage slurm` (resources, launcher, job set-up)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from .base import _Section


_SBATCH_VALUE = r"^[A-Za-z0-9._:,+=@/%-]+$"


class SlurmSection(_Section):
    partition: str | None = Field(default=None, description="Partition (-p).", pattern=_SBATCH_VALUE)
    account: str | None = Field(default=None, description="Account to charge (-A).", pattern=_SBATCH_VALUE)
    qos: str | None = Field(default=None, description="Quality of service (--qos).", pattern=_SBATCH_VALUE)
    nodes: int = Field(default=1, gt=0, description="Nodes per training job (cpt, sft); other stages use one node.")
    gpus_per_node: int = Field(default=8, ge=0, description="GPUs per node (0 for CPU-only clusters).")
    processes_per_node: int | None = Field(
        default=None, gt=0, description="Training processes per node; defaults to gpus_per_node (1 when there are no GPUs)."
    )
    cpus_per_task: int = Field(default=32, gt=0, description="CPUs per node task.")
    mem: str | None = Field(default=None, description="Memory per node, e.g. '480G'.", pattern=r"^\d+[KMGT]?$")
    time: str = Field(default="24:00:00", description="Wall-time limit ([D-]HH:MM:SS).", pattern=r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")
    signal_grace_s: int = Field(default=300, gt=0, description="Seconds before the time limit at which USR1 asks training to checkpoint.")
    max_requeues: int = Field(default=10, ge=0, description="Stop requeueing after this many preemptions/time-outs.")
    launcher: Literal["accelerate", "torchrun"] = Field(
        default="accelerate", description="How each node starts its processes: `accelerate launch` or `torchrun` (c10d rendezvous)."
    )
    accelerate_config: Path | None = Field(
        default=None, description="accelerate config file passed to `accelerate launch --config_file` (e.g. recipes/accelerate/...)."
    )
    python: str = Field(default="python", description="Python executable on the compute nodes (after slurm.setup ran).", pattern=_SBATCH_VALUE)
    log_dir: Path | None = Field(default=None, description="Where scripts and job logs go; default <output_dir>/<run name>/slurm.")
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines run at the start of every job (module load, source a venv). Trusted: they run as written.",
    )
    extra_sbatch: list[str] = Field(default_factory=list, description="Extra sbatch options, one per item, e.g. '--constraint=h100'.")

    @field_validator("setup")
    @classmethod
    def _one_line_each(cls, v: list[str]) -> list[str]:
        for line in v:
            if "\n" in line or "\r" in line or "\0" in line:
                raise ValueError(f"setup line {line!r} contains a line break; give one shell line per list item")
        return v

    @field_validator("extra_sbatch")
    @classmethod
    def _safe_sbatch_options(cls, v: list[str]) -> list[str]:
        for option in v:
            if not re.fullmatch(r"--[a-z][a-z-]*(=[A-Za-z0-9._:,+=@/%-]+)?", option):
                raise ValueError(f"extra_sbatch option {option!r} is not of the form --name or --name=value (letters, digits, ._:,+=@/%-)")
        return v
