"""Recipe section ``eval``: MCQ benchmarks, scoring method and perplexity sets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import _NAME_RE, MAX_TOKENS, _Section


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
