"""The pipeline's stages: what each reads, which recipe sections define it, where its code lives.

A stage implementation is a function ``run(ctx: StageContext) -> StageResult`` named by
``StageSpec.entry`` ("module:function"), imported only when the stage runs. A stage whose
``entry`` is None is not in this version: asking for it is a clear error, never a fake result.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .recipe import ModelSection, Recipe, SynthSection

log = logging.getLogger("astrosage")

MODEL_STAGES = ("cpt", "sft", "merge")


class StageNotAvailable(RuntimeError):
    """The stage is not implemented in this version of astrosage."""


@dataclass
class StageResult:
    """What a stage reports back; stored in its manifest."""

    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: named outputs, relative to the stage folder (e.g. {"model": "model"} for a checkpoint)
    outputs: dict[str, str] = field(default_factory=dict)
    #: folders inside the stage folder needed only to resume it (training checkpoints): the runner
    #: deletes them once the stage is sealed, never before, so a kill before the seal loses nothing
    discard: tuple[str, ...] = ()


@dataclass
class StageContext:
    """Everything a stage may use: the recipe, where to write, and the upstream artifacts."""

    recipe: Recipe
    stage: str
    run_dir: Path
    work_dir: Path
    upstream: dict[str, dict[str, Any]]
    force: bool = False

    @property
    def output_dir(self) -> Path:
        """Root of all runs (``run.output_dir``), absolute."""
        return Path(self.recipe.run.output_dir).resolve()

    def upstream_output(self, stage: str, name: str) -> Path:
        """Absolute path of a named output of an upstream stage (e.g. ``("sft", "model")``)."""
        manifest = self.upstream.get(stage)
        if manifest is None:
            raise KeyError(f"stage {self.stage!r} did not declare {stage!r} as an input")
        rel = manifest.get("outputs", {}).get(name)
        if rel is None:
            raise KeyError(f"stage {stage!r} has no output named {name!r} (has: {sorted(manifest.get('outputs', {}))})")
        return self.run_dir / stage / rel

    def resolve_model(self, ref: str) -> str:
        """Resolve a model reference (Hub id, folder, ``tiny:...``) the way every stage does."""
        from .models import resolve_model

        return resolve_model(ref, self.output_dir, self.recipe.run.seed)

    def input_model(self) -> str:
        """The model this stage starts from: the newest upstream checkpoint, else ``model.base``."""
        for stage in reversed(MODEL_STAGES):
            if stage in self.upstream and "model" in self.upstream[stage].get("outputs", {}):
                return str(self.upstream_output(stage, "model"))
        return self.resolve_model(self.recipe.model.base)


@dataclass(frozen=True)
class StageSpec:
    """Static description of one pipeline stage."""

    name: str
    summary: str
    #: recipe sections (dotted paths allowed) whose values define this stage's result
    sections: tuple[str, ...]
    #: upstream stages whose artifacts this stage reads, given the recipe
    upstream: Callable[[Recipe], list[str]]
    #: external inputs (model refs, data files) to fingerprint: name -> reference
    external: Callable[[Recipe], dict[str, str]]
    #: "module:function" implementing the stage; None = not available in this version
    entry: str | None = None
    #: the issue/feature that will provide it, named in the "not available" error
    planned: str = ""
    #: the sections that define the result *for this recipe* (default: ``sections``); e.g. the merge
    #: stage's eval settings count only when it sweeps
    key_sections: Callable[[Recipe], tuple[str, ...]] | None = None

    @property
    def available(self) -> bool:
        return self.entry is not None

    def sections_for(self, recipe: Recipe) -> tuple[str, ...]:
        """The (dotted) recipe sections hashed into this stage's cache key for ``recipe``."""
        return tuple(self.key_sections(recipe)) if self.key_sections is not None else self.sections

    def load(self) -> Callable[[StageContext], StageResult]:
        """Import and return the stage function (raises StageNotAvailable if there is none)."""
        if self.entry is None:
            raise StageNotAvailable(self.not_available_message())
        module, _, func = self.entry.partition(":")
        return getattr(importlib.import_module(module), func)

    def not_available_message(self) -> str:
        from . import __version__

        hint = f" ({self.planned})" if self.planned else ""
        return (
            f"stage '{self.name}' is not available yet in astrosage {__version__}{hint}; "
            f"disable it with `{self.name}.enabled=false` or leave it out of --stages"
        )


def _enabled(recipe: Recipe, *stages: str) -> list[str]:
    return [s for s in stages if getattr(recipe, s).enabled]


def _last_model_stage(recipe: Recipe, before: str) -> list[str]:
    order = list(MODEL_STAGES)
    candidates = order[: order.index(before)] if before in order else order
    enabled = _enabled(recipe, *candidates)
    return enabled[-1:]


#: synth settings that change how the teacher is reached, not what it generates: a teacher
#: server restarted on another port must not throw away resumable work
_SYNTH_TRANSPORT = {"api_base", "api_key_env", "concurrency", "timeout_s", "max_retries", "retry_backoff_s", "max_backoff_s"}
_SYNTH_SECTIONS = tuple(f"synth.{name}" for name in SynthSection.model_fields if name not in _SYNTH_TRANSPORT)


#: training settings that change how progress is logged, saved or prepared, not the trained weights:
#: editing them resumes the stage's checkpoints instead of discarding them
_TRAINING_TRANSPORT = {"logging_steps", "save_steps", "save_total_limit", "keep_checkpoints", "num_proc"}
#: model settings the training stages do not read (sft reads base_instruct only for its chat template)
_MODEL_TRANSPORT = {"base_instruct"}


def _fields(section: str, model: type, transport: set[str]) -> tuple[str, ...]:
    return tuple(f"{section}.{name}" for name in model.model_fields if name not in transport)


_MODEL_SECTIONS = _fields("model", ModelSection, _MODEL_TRANSPORT)


def _training_sections(recipe: Recipe, stage: str) -> tuple[str, ...]:
    section = getattr(recipe, stage)
    model = _MODEL_SECTIONS
    if stage == "sft" and section.chat_template == "instruct":
        model = tuple(f"model.{name}" for name in ModelSection.model_fields)
    return (*model, *_fields(stage, type(section), _TRAINING_TRANSPORT), "run.seed")


_MERGE_EVAL = ("eval.benchmarks", "eval.method", "eval.limit", "eval.batch_size")


def _merge_sections(recipe: Recipe) -> tuple[str, ...]:
    """Eval settings define a merge only when a sweep scores candidates with the evaluator."""
    sweeping = bool(recipe.merge.sweep or recipe.merge.sweep_density)
    return ("model", "merge", *(_MERGE_EVAL if sweeping else ()))


def _mix(mix: list) -> dict[str, str]:
    return {f"mix[{i}]:{m.path}": m.path for i, m in enumerate(mix)}


def _benchmarks(recipe: Recipe) -> dict[str, str]:
    return {f"benchmark:{b.name}": b.path for b in recipe.eval.benchmarks}


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            name="corpus",
            summary="arXiv astro-ph papers -> clean text, filtered, deduplicated, decontaminated (parquet)",
            sections=("corpus", "eval.benchmarks"),
            upstream=lambda r: [],
            external=lambda r: {
                **({"local_dir": str(r.corpus.local_dir)} if r.corpus.local_dir else {}),
                **_benchmarks(r),
                **{f"decontam:{p}": str(p) for p in r.corpus.decontamination.benchmarks},
            },
            entry="corpus_tools.stage:run",
            planned="corpus builder",
        ),
        StageSpec(
            name="synth",
            summary="synthetic QA with reasoning chains and an MCQ dev set, from the corpus",
            sections=(*_SYNTH_SECTIONS, "model.base_instruct", "run.seed", "eval.benchmarks", "corpus.decontamination"),
            upstream=lambda r: _enabled(r, "corpus"),
            external=lambda r: {
                "teacher": r.synth.teacher_model or r.model.base_instruct or "",
                **_benchmarks(r),
                **({"docs": str(r.synth.docs)} if r.synth.docs else {}),
                **({"prompt_dir": str(r.synth.prompt_dir)} if r.synth.prompt_dir else {}),
            },
            entry="corpus_tools.synth.stage:run",
            planned="synthetic QA",
        ),
        StageSpec(
            name="cpt",
            summary="continued pretraining of the base model on the corpus",
            sections=("model", "cpt", "run.seed"),
            key_sections=lambda r: _training_sections(r, "cpt"),
            upstream=lambda r: _enabled(r, "corpus"),
            external=lambda r: {
                "base": r.model.base,
                **({"dataset": r.cpt.dataset} if r.cpt.dataset and not r.corpus.enabled else {}),
                **_mix(r.cpt.general_mix),
            },
            entry="astrosage.stages.cpt:run",
            planned="training stages",
        ),
        StageSpec(
            name="sft",
            summary="supervised fine-tuning on synthetic QA (with <think> reasoning)",
            sections=("model", "sft", "run.seed"),
            key_sections=lambda r: _training_sections(r, "sft"),
            upstream=lambda r: _enabled(r, "cpt", "synth"),
            external=lambda r: {
                "base": r.model.base,
                **({"dataset": r.sft.dataset.path} if r.sft.dataset else {}),
                **({"base_instruct": r.model.base_instruct} if r.sft.chat_template == "instruct" and r.model.base_instruct else {}),
                **_mix(r.sft.general_mix),
            },
            entry="astrosage.stages.sft:run",
            planned="training stages",
        ),
        StageSpec(
            name="merge",
            summary="merge the trained model with the base-instruct model (mergekit)",
            # a sweep scores candidates with the evaluator, so its settings define the result too
            sections=("model", "merge", *_MERGE_EVAL),
            key_sections=_merge_sections,
            upstream=lambda r: _last_model_stage(r, "merge"),
            external=lambda r: {
                "base_instruct": r.model.base_instruct or "",
                # ties / dare_ties / task_arithmetic (and raw configs) merge against the pretrained base
                **({"base": r.model.base} if r.merge.method in ("ties", "dare_ties", "task_arithmetic") or r.merge.mergekit_yaml else {}),
                **({"tokenizer_source": r.merge.tokenizer_source} if r.merge.tokenizer_source not in ("base", "union") else {}),
                **({"mergekit_yaml": str(r.merge.mergekit_yaml)} if r.merge.mergekit_yaml else {}),
                **(_benchmarks(r) if r.merge.sweep or r.merge.sweep_density else {}),
            },
            entry="astrosage.stages.merge:run",
            planned="model merging",
        ),
        StageSpec(
            name="eval",
            summary="score the base model and every produced checkpoint on the MCQ benchmarks and held-out text (bits per byte)",
            # cpt.max_seq_len is the perplexity window; the corpus stage provides the held-out papers
            sections=("model", "eval", "cpt.max_seq_len"),
            upstream=lambda r: _enabled(r, "corpus", *MODEL_STAGES),
            external=lambda r: {"base": r.model.base, **_benchmarks(r), **{f"ppl:{s.name}": s.path for s in r.eval.perplexity_sets}},
            entry="eval.stage:run",
            planned="benchmark evaluator",
        ),
        StageSpec(
            name="publish",
            summary="model card + Hugging Face Hub upload (or a --dry-run folder)",
            sections=("model", "publish"),
            upstream=lambda r: _last_model_stage(r, "publish") + _enabled(r, "eval"),
            external=lambda r: {},
            entry="astrosage.stages.publish:run",
            planned="Hub publishing",
        ),
    )
}

STAGE_ORDER: tuple[str, ...] = tuple(STAGES)
