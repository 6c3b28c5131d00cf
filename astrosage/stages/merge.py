"""Stage ``merge``: the trained model + ``model.base_instruct`` (+ ``model.base``) -> a merged HF folder.

The work (compatibility check before any weight is read, the mergekit configuration, mergekit's
Python API, weight sweeps scored on a dev benchmark) is :func:`astrosage.merging.run.merge_run`.
"""

from __future__ import annotations

from ..core.recipe import Recipe
from ..core.stage import StageContext, StageResult, StageSpec
from .sections import MERGE_EVAL, benchmark_inputs, last_model_stage


def run(ctx: StageContext) -> StageResult:
    """Merge the newest upstream checkpoint with the instruct model (see astrosage.merging.run)."""
    from ..merging.run import merge_run

    return merge_run(ctx)


def _key_sections(recipe: Recipe) -> tuple[str, ...]:
    """Eval settings define a merge only when a sweep scores candidates with the evaluator."""
    sweeping = bool(recipe.merge.sweep or recipe.merge.sweep_density)
    return ("model", "merge", *(MERGE_EVAL if sweeping else ()))


SPEC = StageSpec(
    name="merge",
    summary="merge the trained model with the base-instruct model (mergekit)",
    # a sweep scores candidates with the evaluator, so its settings define the result too
    sections=("model", "merge", *MERGE_EVAL),
    key_sections=_key_sections,
    upstream=lambda r: last_model_stage(r, "merge"),
    external=lambda r: {
        "base_instruct": r.model.base_instruct or "",
        # ties / dare_ties / task_arithmetic (and raw configs) merge against the pretrained base
        **({"base": r.model.base} if r.merge.method in ("ties", "dare_ties", "task_arithmetic") or r.merge.mergekit_yaml else {}),
        **({"tokenizer_source": r.merge.tokenizer_source} if r.merge.tokenizer_source not in ("base", "union") else {}),
        **({"mergekit_yaml": str(r.merge.mergekit_yaml)} if r.merge.mergekit_yaml else {}),
        **(benchmark_inputs(r) if r.merge.sweep or r.merge.sweep_density else {}),
    },
    run=run,
    outputs={"model": "dir", "mergekit_config": "file"},
)
