"""Recipe sections ``run`` (name, output folder, seed), ``model`` (base model and how to load it) and
``logging`` (metrics logger)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .base import _NAME_RE, _Section


class RunSection(_Section):
    name: str = Field(
        description="Run name; artifacts go to <output_dir>/<name>/<stage>/. Letters, digits, '.', '_', '-'.",
        pattern=_NAME_RE,
    )
    output_dir: Path = Field(
        default=Path("runs"),
        description="Root folder for all runs (relative paths are resolved against the current directory).",
    )
    seed: int = Field(default=42, ge=0, description="Global random seed (data order, init of new weights, sampling).")


class ModelSection(_Section):
    base: str = Field(
        description=(
            "Base model to adapt: a Hugging Face Hub id (e.g. 'meta-llama/Llama-3.1-8B'), a local folder, "
            "or 'tiny:base' for the offline random-weight tiny Llama built by `astrosage tiny-model`."
        )
    )
    base_instruct: str | None = Field(
        default=None,
        description="Instruct sibling of the base model, merged with the trained model in the merge stage "
        "(Hub id, local folder, or 'tiny:instruct').",
    )
    tokenizer: str | None = Field(default=None, description="Tokenizer to use; defaults to the base model's.")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) of the base model.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="bfloat16", description="Weight/compute dtype for training and evaluation."
    )
    attn_implementation: Literal["sdpa", "sdpa_packed", "eager", "flash_attention_2", "flash_attention_3"] = Field(
        default="sdpa",
        description="Attention kernel passed to transformers (flash_attention_* need a GPU build). 'sdpa_packed': causal "
        "sdpa per document of a packed row instead of one block-diagonal mask over the whole row (faster packed CPU/GPU "
        "training without flash-attention; other forwards fall back to sdpa).",
    )
    trust_remote_code: bool = Field(default=False, description="Allow model code from the Hub (off: safer).")


class LoggingSection(_Section):
    backend: Literal["none", "wandb", "tensorboard"] = Field(default="none", description="Metrics logger.")
    project: str = Field(default="astrosage", description="wandb project / tensorboard sub-folder.")
    entity: str | None = Field(default=None, description="wandb entity (team or user).")
    wandb_mode: Literal["online", "offline", "disabled"] = Field(
        default="online", description="wandb mode; 'offline' writes a local run folder you can `wandb sync` later."
    )
    log_every_n_steps: int = Field(default=10, gt=0, description="Log training metrics every N optimizer steps.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Console log level.")
