"""Recipe section ``synth``: synthetic QA / reasoning / MCQ generation by a teacher model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import MAX_TOKENS, _Section


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
