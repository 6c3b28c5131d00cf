"""Stage ``synth``: synthetic QA with reasoning chains and an MCQ dev set, from the corpus.

The work is done by :func:`corpus_tools.synth.build.build_synth` (chunking, a teacher backend with
structured outputs, validation, rejected.jsonl, the MCQ dev set).
"""

from __future__ import annotations

from ..core.stage import StageContext, StageResult, StageSpec
from .sections import SYNTH_SECTIONS, benchmark_inputs, enabled


def run(ctx: StageContext) -> StageResult:
    from corpus_tools.synth.build import build_synth

    return build_synth(ctx)


SPEC = StageSpec(
    name="synth",
    summary="synthetic QA with reasoning chains and an MCQ dev set, from the corpus",
    sections=(*SYNTH_SECTIONS, "model.base_instruct", "run.seed", "eval.benchmarks", "corpus.decontamination"),
    upstream=lambda r: enabled(r, "corpus"),
    external=lambda r: {
        "teacher": r.synth.teacher_model or r.model.base_instruct or "",
        **benchmark_inputs(r),
        **({"docs": str(r.synth.docs)} if r.synth.docs else {}),
        **({"prompt_dir": str(r.synth.prompt_dir)} if r.synth.prompt_dir else {}),
    },
    run=run,
    outputs={"qa": "dir", "mcq": "dir", "rejected": "file"},
)
