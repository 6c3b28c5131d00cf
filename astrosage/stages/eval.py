"""Stage ``eval``: score the base model and every produced checkpoint on the MCQ benchmarks and
the held-out papers (bits per byte).

The work is done by :func:`eval.runs.evaluate_run` (checkpoint choice, the evaluator, the
perplexity scorer, the comparison report), cached per checkpoint x benchmark in ``eval.cache``.
"""

from __future__ import annotations

from ..core.stage import MODEL_STAGES, StageContext, StageResult, StageSpec
from .sections import benchmark_inputs, enabled


def run(ctx: StageContext) -> StageResult:
    from eval.runs import evaluate_run

    return evaluate_run(ctx)


SPEC = StageSpec(
    name="eval",
    summary="score the base model and every produced checkpoint on the MCQ benchmarks and held-out text (bits per byte)",
    # cpt.max_seq_len is the perplexity window; the corpus stage provides the held-out papers
    sections=("model", "eval", "cpt.max_seq_len"),
    upstream=lambda r: enabled(r, "corpus", *MODEL_STAGES),
    external=lambda r: {"base": r.model.base, **benchmark_inputs(r), **{f"ppl:{s.name}": s.path for s in r.eval.perplexity_sets}},
    run=run,
    outputs={"report": "file"},
)
