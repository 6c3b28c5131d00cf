"""The recipe schema: one typed, documented description of a whole astrosage run.

A recipe is a YAML file whose top-level keys are the sections below (plus an optional
``extends: other.yaml``). Every field has a description, most have defaults, and unknown keys
are errors. Loading never imports torch/transformers, so a bad recipe fails in a fraction of a
second, before any download or GPU allocation.

    recipe = load_recipe("recipes/tiny-cpu.yaml", overrides=["cpt.learning_rate=1e-4"])
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "Recipe",
    "RecipeError",
    "load_recipe",
    "load_recipe_dict",
    "parse_override",
    "section_hash",
    "STAGE_SECTIONS",
]

#: Pipeline stages in execution order; each has a recipe section of the same name.
STAGE_SECTIONS: tuple[str, ...] = ("corpus", "synth", "cpt", "sft", "merge", "eval", "publish")

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Section(BaseModel):
    """Base for every recipe section: unknown keys are errors, assignments are validated, numbers are
    finite (``.inf`` is refused: it trains a model of NaNs), and integer fields take integers only
    (``max_steps: true`` or ``512.0`` is refused, not read as 1 or 512)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=False, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: Any) -> Any:
        if isinstance(value, (bool, float)) and info.field_name in cls.model_fields:
            accepted = _scalar_types(cls.model_fields[info.field_name].annotation)
            if isinstance(value, bool) and bool not in accepted and (int in accepted or float in accepted):
                raise ValueError(f"{value!r} is a boolean; this field takes a number")
            if isinstance(value, float) and int in accepted and float not in accepted:
                raise ValueError(f"{value!r} is not an integer; write it without a decimal point")
        return value

    @field_validator("*")
    @classmethod
    def _env_names(cls, value: Any, info: Any) -> Any:
        """``*_env`` fields name an environment variable; a pasted token would land in cards and manifests."""
        if info.field_name.endswith("_env") and isinstance(value, str):
            from .logs import looks_like_token

            if looks_like_token(value):
                raise ValueError(
                    "this looks like a secret token, not the name of an environment variable; export the token "
                    "(e.g. `export HF_TOKEN=...`) and put the variable's name here"
                )
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", value):
                raise ValueError("not an environment variable name (letters, digits and '_', not starting with a digit)")
        return value


def _scalar_types(annotation: Any) -> set[Any]:
    """The plain types an annotation accepts at its top level (``int | None`` -> {int, NoneType})."""
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_scalar_types(a) for a in typing.get_args(annotation)))
    return {annotation}


#: the longest sequence/generation any field takes (tokens): 1,048,576; beyond is a typo, not a plan
MAX_TOKENS = 1 << 20


# --------------------------------------------------------------------------------------------
# run / model / logging
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# corpus / synth
# --------------------------------------------------------------------------------------------


class FilterSettings(_Section):
    min_chars: int = Field(default=2_000, ge=0, description="Drop documents shorter than this (characters).")
    max_chars: int = Field(default=2_000_000, gt=0, description="Drop documents longer than this (characters).")
    languages: list[Literal["en"]] = Field(
        default_factory=lambda: ["en"],
        description="Keep documents in these languages (offline stop-word heuristic, which recognises 'en' only); "
        "an empty list turns the language filter off.",
    )
    max_non_text_ratio: float = Field(
        default=0.5, ge=0, le=1, description="Drop documents whose share of characters outside prose+math exceeds this."
    )
    min_stopword_ratio: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="Language test: a document is English when at least this share of its prose words (math removed) "
        "are English stop words (English papers: ~0.3-0.45; other languages: < 0.08).",
    )
    max_bad_char_ratio: float = Field(
        default=0.001, ge=0, le=1, description="Drop documents whose share of U+FFFD / mojibake characters exceeds this."
    )
    max_duplicate_line_ratio: float = Field(
        default=0.3, ge=0, le=1, description="Drop documents whose share of repeated paragraphs (math removed) exceeds this."
    )


class DedupSettings(_Section):
    exact: bool = Field(default=True, description="Drop exact duplicates (hash of normalised text).")
    near: bool = Field(default=True, description="Drop near-duplicates with MinHash-LSH.")
    shingle_size: int = Field(default=5, gt=0, description="Word n-gram size of MinHash shingles.")
    num_perm: int = Field(default=112, gt=0, description="Number of MinHash permutations (buckets x hashes).")
    threshold: float = Field(default=0.8, gt=0, lt=1, description="Jaccard similarity above which two docs are duplicates.")
    seed: int = Field(default=1, ge=0, description="Seed of the MinHash permutations (signatures are comparable only with the same seed).")


class DecontaminationSettings(_Section):
    ngram: int = Field(default=13, gt=0, description="Word n-gram length shared with a benchmark item that counts as contamination.")
    action: Literal["drop", "flag"] = Field(default="drop", description="Drop contaminated documents or keep them flagged.")
    benchmarks: list[Path] = Field(
        default_factory=list,
        description="Extra benchmark files (MCQ JSON/JSONL) to decontaminate against; the eval section's benchmarks are always included.",
    )
    drop_doi_prefixes: list[str] = Field(
        default_factory=lambda: ["10.1146/annurev-astro"],
        description="Drop papers whose DOI starts with one of these (benchmark source journals, e.g. ARA&A).",
    )
    drop_journal_refs: list[str] = Field(
        default_factory=lambda: ["Annu. Rev. Astron. Astrophys", "ARA&A"],
        description="Drop papers whose journal_ref contains one of these strings.",
    )


class CorpusSection(_Section):
    enabled: bool = Field(default=True, description="Run this stage.")
    source: Literal["local", "arxiv_api", "oai_pmh", "s3_bulk"] = Field(
        default="local", description="Where papers come from: a local folder of e-print files, the arXiv API, OAI-PMH, or the S3 bulk tars."
    )
    local_dir: Path | None = Field(default=None, description="Folder of e-print files + metadata.jsonl (source: local).")
    categories: list[str] = Field(
        default_factory=lambda: ["astro-ph"], description="arXiv categories to harvest (astro-ph includes its subcategories)."
    )
    include_gr_qc: bool = Field(default=False, description="Also harvest gr-qc (as AstroSage-8B did).")
    date_from: str | None = Field(default=None, description="First submission date, YYYY-MM-DD.", pattern=r"^\d{4}-\d{2}-\d{2}$")
    date_to: str | None = Field(default=None, description="Last submission date, YYYY-MM-DD.", pattern=r"^\d{4}-\d{2}-\d{2}$")

    @field_validator("date_from", "date_to")
    @classmethod
    def _real_date(cls, value: str | None) -> str | None:
        if value is not None:
            import datetime

            try:
                datetime.date.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a calendar date ({exc})") from None
        return value
    max_papers: int | None = Field(default=None, gt=0, description="Stop after this many papers (for trials).")
    contact_email: str | None = Field(
        default=None, description="Your e-mail, sent in the User-Agent as arXiv's terms ask (required for network sources)."
    )
    request_interval_s: float = Field(
        default=3.0, ge=3.0, description="Seconds between requests to arXiv (its terms: at most 1 request / 3 s)."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Network timeout per request, seconds.")
    max_retries: int = Field(default=5, ge=0, description="Retries with exponential backoff on 429/503/timeouts.")
    s3_requester_pays: bool = Field(default=True, description="The arXiv S3 bucket is requester-pays; you are billed for transfer.")
    bulk_tars: list[str] = Field(
        default_factory=list,
        description="source: s3_bulk. fsspec paths or globs of arXiv bulk source tars, e.g. "
        "'s3://arxiv/src/arXiv_src_2401_*.tar' (needs s3fs and AWS credentials; requester pays) or local copies. "
        "Metadata comes from an OAI-PMH harvest, or from local_dir/metadata.jsonl when local_dir is set.",
    )
    api_url: str = Field(
        default="https://export.arxiv.org/api/query", description="arXiv API query endpoint (source: arxiv_api)."
    )
    oai_url: str = Field(default="https://oaipmh.arxiv.org/oai", description="arXiv OAI-PMH endpoint (source: oai_pmh / s3_bulk).")
    oai_set: str = Field(default="physics:astro-ph", description="OAI-PMH set to harvest.")
    eprint_url: str = Field(
        default="https://arxiv.org/e-print/{id}", description="Template of the e-print source URL ({id} is the arXiv id)."
    )
    api_page_size: int = Field(default=500, gt=0, le=2000, description="Results per arXiv API page (the API allows at most 2,000).")
    api_slice_days: int = Field(
        default=7,
        gt=0,
        le=366,
        description="Width in days of the submittedDate slices of arXiv API queries (keeps every query under the "
        "30,000-result window; astro-ph gets ~1,400 papers a month).",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Folder for harvested metadata and downloaded e-prints, kept across reruns so an interrupted "
        "harvest resumes (default: <run dir>/corpus.cache).",
    )
    max_uncompressed_mb: int = Field(default=512, gt=0, description="Per-paper cap on extracted size (decompression-bomb guard).")
    max_archive_members: int = Field(default=2_000, gt=0, description="Per-paper cap on archive members.")
    num_workers: int = Field(default=1, gt=0, description="Local worker processes for text extraction and filtering.")
    executor: Literal["local", "slurm"] = Field(default="local", description="Engine that fans out processing steps.")
    filters: FilterSettings = Field(default_factory=FilterSettings, description="Quality filters tuned for papers.")
    dedup: DedupSettings = Field(default_factory=DedupSettings, description="Exact and near-duplicate removal.")
    decontamination: DecontaminationSettings = Field(
        default_factory=DecontaminationSettings, description="Benchmark decontamination (by n-gram and by source)."
    )
    shard_docs: int = Field(default=10_000, gt=0, description="Documents per output parquet shard.")
    heldout_fraction: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="Share of papers set aside in corpus/heldout/ for held-out perplexity (never trained on, never "
        "chunked by synth). Chosen by a hash of the paper id, so adding papers never moves one already placed; "
        "near-duplicates go with their cluster. 0 = no held-out split.",
    )
    heldout_min_papers: int = Field(
        default=3,
        ge=0,
        description="Hold out at least this many papers when heldout_fraction gives fewer (the lowest-hash ones), but "
        "never more than a fifth of the corpus, so a small corpus still trains on most of it.",
    )


class SynthSection(_Section):
    enabled: bool = Field(default=True, description="Run this stage.")
    backend: Literal["transformers", "vllm", "openai"] = Field(
        default="transformers", description="Teacher backend: local transformers, offline vLLM, or any OpenAI-compatible server."
    )
    teacher_model: str | None = Field(default=None, description="Teacher model; defaults to model.base_instruct.")
    api_base: str | None = Field(default=None, description="Base URL of the OpenAI-compatible server (backend: openai).")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Name of the env variable holding the API key (the key is never logged).")
    tasks: list[Literal["qa", "qa_reasoning", "mcq"]] = Field(
        default_factory=lambda: ["qa", "qa_reasoning", "mcq"], description="What to generate from each chunk."
    )
    chunk_chars: int = Field(default=1_800, gt=0, description="Characters per chunk sent to the teacher.")
    chunk_overlap: int = Field(default=200, ge=0, description="Characters of overlap between consecutive chunks.")
    max_chunks: int | None = Field(default=None, gt=0, description="Stop after this many chunks (for trials).")
    max_new_tokens: int = Field(default=1_024, gt=0, le=MAX_TOKENS, description="Generation budget per request.")
    temperature: float = Field(default=0.7, ge=0, description="Sampling temperature.")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling top-p.")
    batch_size: int = Field(default=8, gt=0, description="Prompts per batch (local backends).")
    concurrency: int = Field(default=8, gt=0, description="Concurrent requests (openai backend).")
    timeout_s: float = Field(default=120.0, gt=0, description="Request timeout, seconds.")
    max_retries: int = Field(default=5, ge=0, description="Retries with backoff on errors and 429s.")
    mcq_dev_size: int = Field(default=200, ge=0, description="Target number of validated MCQs for the labelled dev set.")
    docs: Path | None = Field(
        default=None,
        description="Corpus documents (a parquet file or folder of shards with id, title, abstract, text, date) to use "
        "when the corpus stage is disabled; ignored when it is enabled.",
    )
    qa_per_chunk: int = Field(default=3, gt=0, description="QA pairs asked for per chunk (tasks qa and qa_reasoning).")
    mcq_per_chunk: int = Field(default=1, gt=0, description="MCQs asked for per chunk (task mcq).")
    shard_chunks: int = Field(
        default=32, gt=0, description="Chunks per output shard; a shard is committed atomically, and a killed run resumes after the last committed one."
    )
    prompt_version: str = Field(
        default="v2",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Prompt templates to use: <task>_<version>.j2 (shipped: v1; v2 = v1 asking items to cite the work as "
        "'Smith et al. (2021)' from the corpus's authors and year).",
    )
    prompt_dir: Path | None = Field(
        default=None, description="Folder with your own <task>_<version>.j2 prompt templates (tried before the shipped ones)."
    )
    dedup_threshold: float = Field(
        default=0.7, gt=0, lt=1, description="Questions of the same task with MinHash Jaccard (word 2-grams) above this are near-duplicates; the first is kept."
    )
    max_option_length_ratio: float = Field(
        default=2.5, ge=1, description="Reject MCQs whose longest option is more than this many times longer than the shortest."
    )
    retry_backoff_s: float = Field(default=1.0, gt=0, description="First retry delay (doubled per retry, with jitter) when the server sends no Retry-After.")
    max_backoff_s: float = Field(default=60.0, gt=0, description="Upper bound on any single retry delay, Retry-After included.")
    structured_output: bool = Field(
        default=True,
        description="Constrain the teacher's replies to the task's JSON schema: transformers via llguidance (pip install "
        "'astrosage[synth]'), vLLM via guided decoding, openai via response_format json_schema (a server that refuses it "
        "is asked with a portable schema, then without, logged). false = free text, JSON asked for in the prompt only.",
    )
    rejected_text_chars: int = Field(
        default=2_000, ge=0, description="Characters of the raw teacher reply kept per line of synth/rejected.jsonl (0 = none)."
    )

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> "SynthSection":
        if self.chunk_overlap >= self.chunk_chars:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_chars ({self.chunk_chars})")
        return self


# --------------------------------------------------------------------------------------------
# training: cpt / sft
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# merge / eval / publish / slurm
# --------------------------------------------------------------------------------------------


class MergeSection(_Section):
    enabled: bool = Field(default=True, description="Run this stage.")
    method: Literal["linear", "slerp", "ties", "dare_ties", "task_arithmetic"] = Field(
        default="linear", description="mergekit merge method."
    )
    weight: float = Field(
        default=0.75,
        ge=0,
        le=1,
        description="Share of the trained model; model.base_instruct gets 1 - weight (AstroSage-8B: 0.75). linear: the two "
        "models' weights; ties/dare_ties/task_arithmetic: weights of the two task vectors relative to model.base; slerp: "
        "interpolation from the trained model (t = 1 - weight toward model.base_instruct).",
    )
    density: float | None = Field(default=None, gt=0, le=1, description="Fraction of delta weights kept (ties / dare_ties).")
    sweep: list[float] = Field(
        default_factory=list,
        description="Weights to try; one merge each (outputs 'model@w<weight>'), each scored on the dev benchmark, the best "
        "chosen by select_metric becomes output 'model'. Needs the evaluator (eval.api).",
    )
    sweep_density: list[float] = Field(
        default_factory=list,
        description="Densities to try (ties / dare_ties), crossed with the sweep weights (merge.weight if sweep is empty); "
        "outputs 'model@w<weight>-d<density>'.",
    )
    select_metric: Literal["accuracy", "ece", "brier", "nll"] = Field(
        default="accuracy", description="Eval metric that picks the best merge of a sweep (accuracy: highest; ece/brier/nll: lowest)."
    )
    select_benchmark: str | None = Field(
        default=None, description="Name of the eval.benchmarks entry that scores a sweep (a labelled dev set); default: the first one."
    )
    keep_sweep_models: bool = Field(
        default=True, description="Keep every merged model of a sweep; false deletes all but the selected one after selection."
    )
    tokenizer_source: Literal["base", "union"] | str = Field(
        default="base",
        description="mergekit tokenizer_source. 'base': the tokenizer of mergekit's base_model (the trained model for "
        "linear/slerp, model.base for ties/dare_ties/task_arithmetic); the models' vocabularies and special tokens must then "
        "agree (checked before any weight is read). 'union' or a model reference (Hub id / folder / tiny:...): mergekit "
        "remaps every model's embeddings into that vocabulary, so differing vocabularies are allowed.",
    )
    chat_template: str | None = Field(
        default=None,
        description="Chat template of the merged model. None: the trained and instruct models' templates must agree (else the "
        "merge is refused). 'trained' / 'instruct': that model's template. Else passed to mergekit: 'auto' (most common), a "
        "mergekit built-in name ('llama3', 'chatml', ...) or a Jinja template.",
    )
    mergekit_yaml: Path | None = Field(
        default=None,
        description="Use this raw mergekit YAML instead of building one; '${trained}', '${instruct}' and '${base}' are "
        "replaced by the resolved models (the upstream checkpoint, model.base_instruct, model.base).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(default="bfloat16", description="dtype of the merged weights.")

    @field_validator("sweep")
    @classmethod
    def _sweep_in_range(cls, v: list[float]) -> list[float]:
        for w in v:
            if not 0 <= w <= 1:
                raise ValueError(f"sweep weight {w} is outside [0, 1]")
        return v

    @model_validator(mode="after")
    def _density_for_sparse_methods(self) -> "MergeSection":
        if self.method in ("ties", "dare_ties") and self.density is None and self.mergekit_yaml is None and not self.sweep_density:
            raise ValueError(f"method '{self.method}' needs merge.density (e.g. 0.5)")
        if self.sweep_density and self.method not in ("ties", "dare_ties"):
            raise ValueError(f"merge.sweep_density only applies to ties / dare_ties, not '{self.method}'")
        for d in self.sweep_density:
            if not 0 < d <= 1:
                raise ValueError(f"sweep density {d} is outside (0, 1]")
        if self.mergekit_yaml is not None and (self.sweep or self.sweep_density):
            raise ValueError("merge.sweep / merge.sweep_density need a generated config; they cannot be used with merge.mergekit_yaml")
        return self


class BenchmarkRef(_Section):
    name: str = Field(description="Short name used in reports.", pattern=_NAME_RE)
    path: str = Field(description="MCQ file (json/jsonl/csv/parquet) or a Hub dataset id.")
    split: str | None = Field(default=None, description="Split, for Hub datasets.")


class PerplexitySetRef(_Section):
    name: str = Field(description="Short name used in reports.", pattern=_NAME_RE)
    path: str = Field(
        description="A local text file set (.jsonl/.json/.parquet file, or a folder of them) or a Hub dataset id."
    )
    config: str | None = Field(default=None, description="Hub dataset configuration name, e.g. 'wikitext-2-raw-v1'.")
    split: str = Field(default="train", description="Split to read (a local file set is one 'train' split).")
    text_field: str = Field(default="text", description="Column holding the text of each document.")
    limit: int | None = Field(default=None, gt=0, description="Score only the first N non-empty documents.")


class EvalSection(_Section):
    enabled: bool = Field(default=True, description="Run this stage.")
    benchmarks: list[BenchmarkRef] = Field(default_factory=list, description="MCQ benchmarks to score every checkpoint on.")
    method: Literal["letter", "choices", "generate"] = Field(
        default="letter",
        description="'letter': probability of A/B/C/D after the prompt (AstroMLab token method); 'choices': log-likelihood "
        "of each option (lm-eval style); 'generate': JSON answer with optional reasoning (AstroMLab full-instruct).",
    )
    checkpoints: Literal["all", "final"] | list[str] = Field(
        default="all", description="Which checkpoints to score: 'all' (base and every stage's output), 'final', or stage names."
    )
    batch_size: int = Field(default=8, gt=0, description="Questions per forward batch.")
    limit: int | None = Field(default=None, gt=0, description="Score only the first N questions of each benchmark.")
    max_new_tokens: int = Field(default=512, gt=0, le=MAX_TOKENS, description="Generation budget ('generate' method).")
    thinking: bool = Field(default=False, description="Let the model reason in <think> before answering ('generate').")
    backend: Literal["transformers", "vllm"] = Field(
        default="transformers",
        description="Generation engine for the 'generate' method: transformers, or vLLM on GPU clusters (pip install vllm).",
    )
    perplexity: bool = Field(
        default=True,
        description="Score every checkpoint's perplexity and bits per byte on the corpus's held-out papers "
        "(corpus/heldout/) when the corpus stage made them.",
    )
    perplexity_stride: int | None = Field(
        default=None,
        gt=0,
        description="Sliding-window stride in tokens: each window (cpt.max_seq_len tokens) scores this many new tokens, "
        "each seen with at least window - stride tokens of context; must be below the window. Default: half the window.",
    )
    perplexity_batch_size: int = Field(default=4, gt=0, description="Windows per forward batch for perplexity.")
    heldout_limit: int | None = Field(default=None, gt=0, description="Score only the first N held-out documents (quick runs).")
    perplexity_sets: list[PerplexitySetRef] = Field(
        default_factory=list,
        description="More text sets to score with the same metric (e.g. general-domain text, to see what domain "
        "training cost elsewhere): local jsonl/parquet with a text field, or Hub datasets.",
    )

    @field_validator("perplexity_sets")
    @classmethod
    def _distinct_set_names(cls, v: list[PerplexitySetRef]) -> list[PerplexitySetRef]:
        names = [s.name for s in v]
        if "heldout" in names:
            raise ValueError("the name 'heldout' is the corpus's held-out split; give this set another name")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"set names must be distinct; repeated: {', '.join(dup)}")
        return v


class PublishSection(_Section):
    enabled: bool = Field(default=True, description="Run this stage.")
    repo_id: str | None = Field(default=None, description="Hub repository, 'user/name'.", pattern=r"^[\w.-]+/[\w.-]+$")
    private: bool = Field(
        default=True, description="Create the Hub repository as private (an existing public repository is then refused, not uploaded to)."
    )
    dry_run: bool = Field(default=False, description="Write the exact folder that would be uploaded, upload nothing.")
    license: str | None = Field(
        default=None,
        description="License id for the model card; default: the base model's, read from its model card (a local folder's "
        "README.md, or the Hub card when online), else 'other' with a warning.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
    )
    token_env: str = Field(default="HF_TOKEN", description="Env variable holding the Hub token (never logged); else the cached login.")


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


# --------------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------------


class Recipe(_Section):
    """A whole astrosage run: one section per concern, one per stage."""

    run: RunSection = Field(description="Name, output folder and seed.")
    model: ModelSection = Field(description="Base model, its instruct sibling, dtype and attention kernel.")
    corpus: CorpusSection = Field(default_factory=CorpusSection, description="arXiv corpus stage.")
    synth: SynthSection = Field(default_factory=SynthSection, description="Synthetic QA / MCQ stage.")
    cpt: CptSection = Field(default_factory=CptSection, description="Continued-pretraining stage.")
    sft: SftSection = Field(default_factory=SftSection, description="Supervised fine-tuning stage.")
    merge: MergeSection = Field(default_factory=MergeSection, description="Model-merging stage.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Benchmark evaluation stage.")
    publish: PublishSection = Field(default_factory=PublishSection, description="Hub publishing stage.")
    slurm: SlurmSection = Field(default_factory=SlurmSection, description="Defaults for `astrosage slurm`.")
    logging: LoggingSection = Field(default_factory=LoggingSection, description="Metrics logging.")

    @model_validator(mode="after")
    def _cross_section_rules(self) -> "Recipe":
        problems: list[tuple[str, Any, str]] = []
        if self.merge.enabled and self.model.base_instruct is None and self.merge.mergekit_yaml is None:
            problems.append(("model.base_instruct", None, "the merge stage is enabled and needs model.base_instruct (or set merge.enabled=false)"))
        if self.publish.enabled and not self.publish.dry_run and self.publish.repo_id is None:
            problems.append(("publish.repo_id", None, "publishing is enabled and needs publish.repo_id (or publish.dry_run=true)"))
        if self.merge.enabled and (self.merge.sweep or self.merge.sweep_density):
            names = [b.name for b in self.eval.benchmarks]
            if not names:
                problems.append(("eval.benchmarks", [], "a merge sweep (merge.sweep) is scored on a labelled benchmark; add one to eval.benchmarks"))
            elif self.merge.select_benchmark is not None and self.merge.select_benchmark not in names:
                problems.append(("merge.select_benchmark", self.merge.select_benchmark, f"'{self.merge.select_benchmark}' is not one of eval.benchmarks ({', '.join(names)})"))
        if self.eval.enabled and not self.eval.benchmarks:
            problems.append(("eval.benchmarks", [], "the eval stage is enabled and needs at least one benchmark"))
        if self.corpus.enabled and self.corpus.source == "local" and self.corpus.local_dir is None:
            problems.append(("corpus.local_dir", None, "corpus.source is 'local' and needs corpus.local_dir"))
        if self.corpus.enabled and self.corpus.source in ("arxiv_api", "oai_pmh") and not self.corpus.contact_email:
            problems.append(("corpus.contact_email", None, f"corpus.source '{self.corpus.source}' needs a contact e-mail for arXiv's User-Agent rule"))
        if self.synth.enabled and self.synth.backend == "openai" and not self.synth.api_base:
            problems.append(("synth.api_base", None, "synth.backend 'openai' needs synth.api_base"))
        if self.synth.enabled and self.synth.teacher_model is None and self.model.base_instruct is None:
            problems.append(("synth.teacher_model", None, "the synth stage needs synth.teacher_model or model.base_instruct"))
        if self.sft.enabled and self.sft.chat_template == "instruct" and self.model.base_instruct is None:
            problems.append(("sft.chat_template", "instruct", "'instruct' takes model.base_instruct's chat template; set model.base_instruct"))
        if problems:
            raise _CrossFieldErrors(problems)
        return self


class _CrossFieldErrors(ValueError):
    """Raised by Recipe's cross-section validator; carries dotted paths for clear reporting."""

    def __init__(self, problems: list[tuple[str, Any, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, _, m in problems))


# --------------------------------------------------------------------------------------------
# loading: extends, overrides, provenance, error messages
# --------------------------------------------------------------------------------------------


class RecipeError(ValueError):
    """A recipe could not be loaded or validated. ``problems`` lists (source, dotted path, message)."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"{src}: {path}: {msg}" if path else f"{src}: {msg}" for src, path, msg in problems]
        super().__init__("invalid recipe\n  " + "\n  ".join(lines))


#: The most values a recipe may expand to once YAML aliases are followed. Real recipes have a
#: few hundred; a "billion laughs" file (aliases of aliases) would expand to ~10^9 and hang
#: whatever walks it, so it is refused before construction.
MAX_YAML_VALUES = 100_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain YAML silently keeps the last one) and reads
    ``48:00:00`` as the string it looks like, as YAML 1.2 does (YAML 1.1, PyYAML's default, makes
    it the base-60 integer 172800). Merge keys (``<<: *base``) work as in PyYAML."""


# YAML 1.1 sexagesimal numbers (``1:30`` -> 90) surprise everyone who writes a wall time or a
# clock; YAML 1.2 dropped them. Same int/float patterns as PyYAML's resolver, minus base 60.
# Dates stay text too (``date_from: 2024-13-45`` is then a clear field error, not a traceback from
# the YAML timestamp constructor; the schema's date fields are YYYY-MM-DD strings).
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""", re.X),
    list("-+0123456789"),
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # '<<: *base' - keys written here override the merged ones
            continue
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {repr(key)[:100]} (first on line {seen[key]}, again on line {line})", key_node.start_mark
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (memoised: linear time)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once; PyYAML builds such a cycle lazily
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def _unshare(value: Any) -> Any:
    """Copy mappings/lists so that two places written with the same alias are separate values
    (an override of one must not change the other). Bounded by MAX_YAML_VALUES."""
    if isinstance(value, dict):
        return {k: _unshare(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshare(v) for v in value]
    return value


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RecipeError([(str(path), "", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column {column} "
                            "(save the recipe as UTF-8)")]) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError([(str(path), "", "file not found")]) from None
    except IsADirectoryError:
        raise RecipeError([(str(path), "", "is a folder, not a recipe file")]) from None
    except OSError as exc:
        raise RecipeError([(str(path), "", f"cannot read: {exc.strerror or exc}")]) from None
    text = _decode(path, raw)
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise RecipeError([(str(path), "", f"expands to {size:,} values once its aliases (*name) are followed; "
                                f"at most {MAX_YAML_VALUES:,} are allowed (is this an alias bomb?)")])
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise RecipeError([(str(path), "", f"not valid YAML: {exc}")]) from None
    except RecursionError:
        raise RecipeError([(str(path), "", "nested too deeply (or an alias refers to itself)")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise RecipeError([(str(path), "", f"top level must be a mapping of sections, got {type(data).__name__}")])
    return _unshare(data)


def _merge_into(dst: dict, src: dict, source: str, prov: dict[str, str], prefix: str = "") -> None:
    """Deep-merge ``src`` into ``dst``; mappings merge, everything else replaces. Records provenance."""
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value, source, prov, dotted + ".")
        else:
            dst[key] = value
            for old in [p for p in prov if p == dotted or p.startswith(dotted + ".")]:
                del prov[old]
            _record(value, dotted, source, prov)


def _record(value: Any, dotted: str, source: str, prov: dict[str, str]) -> None:
    prov[dotted] = source
    if isinstance(value, dict):
        for k, v in value.items():
            _record(v, f"{dotted}.{k}", source, prov)


def _load_with_extends(path: Path, prov: dict[str, str], chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError([(str(path), "extends", f"circular extends: {cycle}")])
    data = _read_yaml(path)
    # top-level 'x-...' keys hold YAML anchors for '<<: *name' merges (the docker-compose
    # convention); they are not sections
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    parent = data.pop("extends", None)
    merged: dict[str, Any] = {}
    if parent is not None:
        if not isinstance(parent, str):
            raise RecipeError([(str(path), "extends", f"{_short(parent)} is not a file path")])
        parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
        if not parent_path.exists():
            raise RecipeError([(str(path), "extends", f"{parent!r} does not exist (looked for {parent_path})")])
        merged = _load_with_extends(parent_path, prov, (*chain, path))
    _merge_into(merged, data, _display(path), prov)
    return merged


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _short(value: Any, limit: int = 200) -> str:
    """A value as shown in an error message: JSON for scalars, never longer than ``limit``
    (a huge or alias-expanded value must not turn an error into a hang or a wall of text)."""
    import reprlib

    if isinstance(value, (int, float, str, bool, type(None))):
        try:
            text = json.dumps(value)
        except ValueError:
            text = repr(value)
    else:
        short = reprlib.Repr()
        short.maxlevel, short.maxdict, short.maxlist, short.maxstring, short.maxother = 3, 6, 6, 60, 60
        text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 12] + f"... ({len(text):,} chars)"


def _parse_key(key: str, text: str | None = None) -> list[str | int]:
    """``a.b[0].c`` -> ["a", "b", 0, "c"]; RecipeError if it is not a dotted field path."""
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*", key):
        shown = f"override {_short(text)}: " if text is not None else ""
        raise RecipeError([("command line", key, f"{shown}{_short(key)} is not a dotted field path")])
    return [int(token[1:-1]) if token.startswith("[") else token for token in re.findall(r"[A-Za-z_]\w*|\[\d+\]", key)]


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Parse ``a.b.c=value`` (list items as ``a.b[0].c``) into (["a", "b", 0, "c"], value).

    The value is read as YAML (the recipe loader's YAML: ``48:00:00`` stays a string), so
    numbers, booleans, ``null`` and ``[1, 2]`` lists work. Values that are already typed (CLI
    options) go through ``load_recipe(values=...)`` instead and are never re-parsed.
    """
    if "=" not in text:
        raise RecipeError([("command line", "", f"override {_short(text)} is not of the form section.field=value")])
    key, raw = text.split("=", 1)
    parts = _parse_key(key, text)
    key = key.strip()
    try:
        value = yaml.load(raw, Loader=_StrictLoader) if raw.strip() else ""  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise RecipeError([("command line", key, f"value {_short(raw)} is not valid YAML: {exc}")]) from None
    # YAML 1.1 reads '1e-4' as a string; accept scientific notation as a number.
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        value = float(value)
    return parts, value


def _dotted(parts: list[str | int]) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else p)
    return text


def _apply_override(data: dict[str, Any], parts: list[str | int], value: Any, prov: dict[str, str]) -> None:
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = _dotted(parts[: i + 1])
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise RecipeError([("command line", where, f"no list item {part} here (the list has {size} items)")])
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise RecipeError([("command line", where, f"cannot set {_dotted(parts)}: parent is not a section")])
        child = node.get(part)
        if child is None:
            child = node[part] = [] if isinstance(parts[i + 1], int) else {}
        elif not isinstance(child, (dict, list)):
            raise RecipeError([("command line", where, f"is a value ({_short(child)}), not a section; cannot set {_dotted(parts)}")])
        node = child
    last = parts[-1]
    plain = re.sub(r"\[\d+\]", "", _dotted(parts))
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise RecipeError([("command line", _dotted(parts), "no such list item")])
        node[last] = value
        prov[plain] = "command line"
        return
    if not isinstance(node, dict):
        raise RecipeError([("command line", _dotted(parts), "parent is not a section")])
    parent = plain.rpartition(".")[0]
    _merge_into(node, {last: value}, "command line", prov, parent + "." if parent else "")


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at the parent of ``loc`` (for 'unknown field' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_of(field.annotation)
    return list(getattr(current, "model_fields", {}).keys()) if current is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _describe_error(err: dict[str, Any], allowed: list[str]) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    from .logs import REDACTED, looks_like_token, redact_tokens

    # a token pasted into a field is not echoed back (a bare 40-hex wandb key only in *_env fields:
    # elsewhere it is as likely a git commit)
    secret_env = str((err.get("loc") or [""])[-1]).endswith("_env") and isinstance(value, str) and looks_like_token(value)
    shown = json.dumps(REDACTED) if secret_env else redact_tokens(_short(value))
    if kind == "extra_forbidden":
        name = str(err["loc"][-1])
        hint = difflib.get_close_matches(name, allowed, n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown field{tip}; allowed here: {', '.join(allowed)}" if allowed else "unknown field"
    if kind == "missing":
        return "required field is missing"
    ops = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in ops:
        bound = next(iter(ctx.values()))
        return f"{shown} is not {ops[kind]} {bound}"
    if kind == "literal_error":
        return f"{shown} is not one of {ctx.get('expected', '')}"
    if kind == "string_pattern_mismatch":
        return f"{shown} does not match the pattern {ctx.get('pattern')}"
    msg = err.get("msg", kind)
    return f"{shown} is not valid: {msg}"


def load_recipe_dict(
    data: dict[str, Any], provenance: dict[str, str] | None = None, default_source: str = "<recipe>"
) -> Recipe:
    """Validate an already-merged recipe mapping; errors name the source, dotted path and value."""
    provenance = provenance or {}
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems: list[tuple[str, str, str]] = []
        for err in exc.errors(include_url=False):
            cross = _find_cross(err)
            if cross is not None:
                for path, _, msg in cross.problems:
                    problems.append((_source_for(path, provenance, default_source), path, msg))
                continue
            loc = tuple(err["loc"])
            dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
            # pydantic adds union-branch tags (e.g. 'list[str]', 'literal[...]') to loc; drop those.
            dotted = re.sub(r"\.(list|literal|str|int|float|dict|function-after)\[.*$", "", dotted)
            problems.append((_source_for(dotted, provenance, default_source), dotted, _describe_error(err, _allowed_fields(Recipe, loc))))
        # union errors repeat the same path; keep the first message per path
        seen: set[str] = set()
        unique = [p for p in problems if not (p[1] in seen or seen.add(p[1]))]
        raise RecipeError(unique) from None


def _find_cross(err: dict[str, Any]) -> _CrossFieldErrors | None:
    error = (err.get("ctx") or {}).get("error")
    return error if isinstance(error, _CrossFieldErrors) else None


def _source_for(dotted: str, provenance: dict[str, str], default: str) -> str:
    probe = re.sub(r"\[\d+\]", "", dotted)
    children = [src for key, src in provenance.items() if key.startswith(probe + ".")]
    if probe not in provenance and children:
        return children[0]
    while probe:
        if probe in provenance:
            return provenance[probe]
        probe = probe.rpartition(".")[0]
    return default


def load_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), values: dict[str, Any] | None = None
) -> Recipe:
    """Load a recipe file (following ``extends``), apply ``section.field=value`` overrides, validate.

    ``values`` maps dotted field paths to already-typed values (e.g. ``{"slurm.time": "48:00:00"}``
    from a typed CLI option); they are applied after ``overrides`` exactly as given, never read as YAML.
    Raises :class:`RecipeError` whose message names the file (or "command line"), the dotted
    field path, the bad value and what is allowed.
    """
    path = Path(path)
    prov: dict[str, str] = {}
    data = _load_with_extends(path, prov)
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(data, parts, value, prov)
    for key, value in (values or {}).items():
        _apply_override(data, _parse_key(key), value, prov)
    return load_recipe_dict(data, prov, default_source=_display(path.resolve()))


def section_hash(recipe: Recipe, *sections: str) -> str:
    """Stable sha256 of the named sections (dotted paths allowed, e.g. 'run.seed')."""
    payload = {}
    dumped = recipe.model_dump(mode="json")
    for name in sections:
        node: Any = dumped
        for part in name.split("."):
            node = node[part]
        payload[name] = node
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".yaml", ".yml", ".txt")


def _looks_local(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.lower().endswith(_FILE_SUFFIXES)


def check_paths(recipe: Recipe, source: str = "<recipe>") -> None:
    """Check that every local file/folder the enabled stages read exists; raise RecipeError if not.

    Relative paths are resolved against the current directory, as the stages will do.
    """
    problems: list[tuple[str, str, str]] = []

    def need(dotted: str, value: Any, is_dir: bool = False) -> None:
        path = Path(str(value)).expanduser()
        ok = path.is_dir() if is_dir else path.exists()
        if not ok:
            kind = "folder" if is_dir else "file"
            problems.append((source, dotted, f"{kind} {str(value)!r} does not exist (resolved to {path.resolve()})"))

    # the run folder goes under run.output_dir: a file anywhere on that path makes every stage fail
    existing = Path(str(recipe.run.output_dir)).expanduser() / recipe.run.name
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        problems.append((source, "run.output_dir", f"{_short(str(recipe.run.output_dir))}: {existing} is a file, not a folder"))

    for field_name in ("base", "base_instruct", "tokenizer"):
        ref = getattr(recipe.model, field_name)
        if ref and not ref.startswith("tiny:") and ref.startswith((".", "/", "~")):
            need(f"model.{field_name}", ref, is_dir=True)
    if recipe.corpus.enabled:
        if recipe.corpus.source == "local" and recipe.corpus.local_dir is not None:
            need("corpus.local_dir", recipe.corpus.local_dir, is_dir=True)
        for i, p in enumerate(recipe.corpus.decontamination.benchmarks):
            need(f"corpus.decontamination.benchmarks[{i}]", p)
    for stage in ("cpt", "sft"):
        section = getattr(recipe, stage)
        if section.enabled and section.deepspeed is not None:
            need(f"{stage}.deepspeed", section.deepspeed)
        if section.enabled:
            for i, mix in enumerate(section.general_mix):
                if _looks_local(mix.path):
                    need(f"{stage}.general_mix[{i}].path", mix.path)
    if recipe.synth.enabled and not recipe.corpus.enabled and recipe.synth.docs is not None:
        need("synth.docs", recipe.synth.docs)
    if recipe.synth.enabled and recipe.synth.prompt_dir is not None:
        need("synth.prompt_dir", recipe.synth.prompt_dir, is_dir=True)
    if recipe.corpus.enabled and recipe.corpus.source == "s3_bulk":
        import glob

        for i, pattern in enumerate(recipe.corpus.bulk_tars):
            if "://" not in pattern and not glob.glob(str(Path(pattern).expanduser())):
                problems.append((source, f"corpus.bulk_tars[{i}]", f"{pattern!r} matches no file"))
    if recipe.sft.enabled and recipe.sft.dataset and _looks_local(recipe.sft.dataset.path):
        need("sft.dataset.path", recipe.sft.dataset.path)
    if recipe.sft.enabled and recipe.sft.chat_template not in ("model", "instruct", "chatml", "llama3"):
        need("sft.chat_template", recipe.sft.chat_template)
    if recipe.cpt.enabled and not recipe.corpus.enabled and recipe.cpt.dataset and _looks_local(recipe.cpt.dataset):
        need("cpt.dataset", recipe.cpt.dataset)
    if recipe.merge.enabled and recipe.merge.mergekit_yaml is not None:
        need("merge.mergekit_yaml", recipe.merge.mergekit_yaml)
    if recipe.eval.enabled or recipe.corpus.enabled or recipe.synth.enabled:
        for i, bench in enumerate(recipe.eval.benchmarks):
            if _looks_local(bench.path):
                need(f"eval.benchmarks[{i}].path", bench.path)
    if problems:
        raise RecipeError(problems)
