"""Which recipe fields define a stage's result (its cache key) and which external inputs it reads.

A field that only changes how a stage is reached, logged or checkpointed ("transport") is left out
of the key, so editing it resumes unfinished work instead of discarding it.
"""

from __future__ import annotations

from ..core.recipe import ModelSection, Recipe, SynthSection

#: synth settings that change how the teacher is reached, not what it generates: a teacher
#: server restarted on another port must not throw away resumable work
SYNTH_TRANSPORT = {"api_base", "api_key_env", "concurrency", "timeout_s", "max_retries", "retry_backoff_s", "max_backoff_s"}
#: training settings that change how progress is logged, saved or prepared, not the trained weights
TRAINING_TRANSPORT = {"logging_steps", "save_steps", "save_total_limit", "keep_checkpoints", "num_proc"}
#: model settings the training stages do not read (sft reads base_instruct only for its chat template)
MODEL_TRANSPORT = {"base_instruct"}
#: eval settings that define a merge when a sweep scores candidates with the evaluator
MERGE_EVAL = ("eval.benchmarks", "eval.method", "eval.limit", "eval.batch_size")


def fields_except(section: str, model: type, transport: set[str]) -> tuple[str, ...]:
    """Dotted names of ``model``'s fields under ``section``, transport fields left out."""
    return tuple(f"{section}.{name}" for name in model.model_fields if name not in transport)


SYNTH_SECTIONS = fields_except("synth", SynthSection, SYNTH_TRANSPORT)


def training_sections(recipe: Recipe, stage: str) -> tuple[str, ...]:
    """The key of cpt / sft: model and stage fields that change the weights, and the seed."""
    section = getattr(recipe, stage)
    transport = MODEL_TRANSPORT
    if stage == "sft" and section.chat_template == "instruct":
        transport = set()  # the chat template comes from model.base_instruct
    return (*fields_except("model", ModelSection, transport), *fields_except(stage, type(section), TRAINING_TRANSPORT), "run.seed")


def enabled(recipe: Recipe, *stages: str) -> list[str]:
    """The given stages that are enabled in ``recipe``, in the given order."""
    return [s for s in stages if getattr(recipe, s).enabled]


def last_model_stage(recipe: Recipe, before: str) -> list[str]:
    """The last enabled model-producing stage before ``before`` (empty list if none)."""
    from ..core.stage import MODEL_STAGES

    order = list(MODEL_STAGES)
    candidates = order[: order.index(before)] if before in order else order
    return enabled(recipe, *candidates)[-1:]


def mix_inputs(mix: list) -> dict[str, str]:
    """External inputs of a ``general_mix`` list, one per entry."""
    return {f"mix[{i}]:{m.path}": m.path for i, m in enumerate(mix)}


def benchmark_inputs(recipe: Recipe) -> dict[str, str]:
    """External inputs of ``eval.benchmarks``, one per benchmark."""
    return {f"benchmark:{b.name}": b.path for b in recipe.eval.benchmarks}
