"""Recipe sections ``cpt`` and ``sft``: the shared training fields, LoRA, and the data sources they read."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from .base import MAX_TOKENS, _Section


class DataSource(_Section):
    path: str = Field(description="A local file/folder (jsonl/json/parquet), a local dataset folder with named configs, or a Hub dataset id.")
    name: str | None = Field(default=None, description="Dataset config name (e.g. '7M' for BAAI/Infinity-Instruct); Hub datasets and local dataset folders.")
    split: str = Field(default="train", description="Split to read for Hub datasets and local dataset folders.")
    max_samples: int | None = Field(default=None, gt=0, description="Use at most this many examples.")
    format: Literal["auto", "messages", "sharegpt", "prompt_completion", "alpaca"] = Field(
        default="auto",
        description="SFT row format: 'messages' (OpenAI roles), 'sharegpt' (conversations with from/value: human/gpt/system), "
        "'prompt_completion', 'alpaca' (instruction/input/output); 'auto' detects it per row. CPT reads plain text.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Column mapping {our name: dataset column}, e.g. {messages: conversation} or {prompt: question, completion: answer}.",
    )


class DataMix(DataSource):
    weight: float = Field(default=1.0, gt=0, description="Sampling weight relative to the domain data (weight 1.0).")


class LoraSettings(_Section):
    enabled: bool = Field(default=False, description="Train LoRA adapters (peft) instead of all weights.")
    r: int = Field(default=16, gt=0, description="LoRA rank.")
    alpha: int = Field(default=32, gt=0, description="LoRA alpha.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | Literal["all-linear"] = Field(default="all-linear", description="Modules to adapt.")


class TrainingSection(_Section):
    """Fields shared by the two training stages."""

    enabled: bool = Field(default=True, description="Run this stage.")
    learning_rate: float = Field(default=2e-5, gt=0, le=1.0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule."
    )
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1, description="Fraction of steps used for linear warm-up.")
    num_epochs: float = Field(default=1.0, gt=0, le=1_000, description="Passes over the training data.")
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many optimizer steps (overrides num_epochs).")
    max_seq_len: int = Field(default=8_192, gt=0, le=MAX_TOKENS, description="Packed sequence length in tokens.")
    per_device_batch_size: int = Field(default=1, gt=0, le=65_536, description="Sequences per device per micro-step.")
    gradient_accumulation_steps: int = Field(default=1, gt=0, le=65_536, description="Micro-steps per optimizer step.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    gradient_checkpointing: bool = Field(default=True, description="Recompute activations to save memory.")
    deepspeed: Path | None = Field(default=None, description="DeepSpeed JSON config (e.g. recipes/deepspeed/zero3.json); none = plain DDP/single process.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Parameter-efficient fine-tuning.")
    general_mix: list[DataMix] = Field(default_factory=list, description="General-domain data mixed in to limit forgetting.")
    save_steps: int = Field(default=500, gt=0, description="Save a checkpoint every N optimizer steps.")
    save_total_limit: int = Field(default=3, gt=0, description="Keep at most this many checkpoints.")
    num_proc: int = Field(
        default=1,
        gt=0,
        le=1024,
        description="Processes per rank for data preparation. SFT: row conversion and assistant-mask encoding "
        "(datasets.map num_proc, identical result). CPT: a process pool tokenizing num_proc shards at a time (same "
        "cache bytes as one process).",
    )
    keep_checkpoints: bool = Field(
        default=False,
        description="Keep the intermediate checkpoints (with optimizer state: large) in the stage folder after the stage "
        "succeeds; by default only the final model, trainer_state.json and metrics are kept.",
    )
    logging_steps: int | None = Field(
        default=None, gt=0, description="Log loss/lr/grad-norm/tokens-per-s/MFU every N optimizer steps; default: logging.log_every_n_steps."
    )


class CptSection(TrainingSection):
    text_field: str = Field(default="text", description="Field of the corpus documents to train on.")
    dataset: str | None = Field(
        default=None,
        description="Plain-text documents ({text_field: ...}) to train on when the corpus stage is disabled: a local "
        "jsonl/parquet file, a folder of them, or a Hub dataset id. Ignored when the corpus stage is enabled.",
    )
    tokenize_shard_docs: int = Field(
        default=10_000,
        gt=0,
        description="Documents per tokenization shard; shards are cached (under <run>/tokenized.cache/) and written "
        "atomically, so a killed tokenization resumes from the last finished shard.",
    )


class SftSection(TrainingSection):
    dataset: DataSource | None = Field(
        default=None,
        description="Conversational data to use instead of / besides the synth stage's QA: a path or Hub id, or a mapping "
        "{path, name, split, format, columns, max_samples} (formats: messages, ShareGPT, prompt/completion, alpaca).",
    )
    chat_template: str = Field(
        default="model",
        description="Chat template for SFT, saved with the checkpoint: 'model' (the tokenizer's own), 'instruct' "
        "(model.base_instruct's template, special tokens and stop tokens: for base models without a template, e.g. "
        "Llama-3.1-8B), a built-in ('chatml', 'llama3') or a path to a .jinja file.",
    )
    init_untrained_tokens: Literal["mean", "error"] = Field(
        default="mean",
        description="The template's special tokens with untrained embedding rows (Llama-3 base ships <|eot_id|> etc. near "
        "zero): 'mean' sets them to the mean of the trained rows (recorded in the manifest), 'error' refuses.",
    )
    overlong: Literal["truncate", "drop"] = Field(
        default="truncate",
        description="A conversation longer than max_seq_len: 'truncate' cuts it after its last assistant turn that fits "
        "(dropped if the first does not fit), 'drop' drops it. Both are counted in the manifest.",
    )
    assistant_only_loss: bool = Field(
        default=True,
        description="Train only on assistant tokens (content + end-of-turn token). Works with any chat template: "
        "{% generation %} markers, TRL's marked copy of known templates, or spans derived by rendering turn by turn.",
    )

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, value: Any) -> Any:
        """``dataset: path-or-hub-id`` is short for ``dataset: {path: ...}``."""
        return {"path": value} if isinstance(value, str) else value
    packing: bool = Field(
        default=True, description="Pack conversations into sequences (CPT always packs, with per-document attention masking)."
    )
    packing_strategy: Literal["bfd", "wrapped"] = Field(default="bfd", description="TRL packing; 'bfd' is padding-free with per-sample position_ids.")
    reasoning_fraction: float = Field(
        default=0.5, ge=0, le=1, description="Share of examples trained with their <think> reasoning chain (the rest answer directly)."
    )
    thinking_system_prompt: str = Field(
        default="Think step by step inside <think></think> before giving your final answer.",
        description="System-prompt switch for reasoning mode: prepended to examples trained with their <think> chain "
        "(use the same text at inference to get reasoning).",
    )
    direct_system_prompt: str = Field(
        default="Answer directly, without showing your reasoning.",
        description="System-prompt switch for direct mode: prepended to examples trained without reasoning.",
    )
