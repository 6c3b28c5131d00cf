"""Stage ``corpus``: arXiv astro-ph papers -> clean text, filtered, deduplicated, decontaminated.

The work is done by :func:`corpus_tools.build.build_corpus` (harvest or local archives -> datatrove
extraction -> filters -> MinHash dedup -> benchmark decontamination -> held-out split -> parquet).
"""

from __future__ import annotations

from ..core.stage import StageContext, StageResult, StageSpec
from .sections import benchmark_inputs


def run(ctx: StageContext) -> StageResult:
    from corpus_tools.build import build_corpus

    return build_corpus(ctx)


SPEC = StageSpec(
    name="corpus",
    summary="arXiv astro-ph papers -> clean text, filtered, deduplicated, decontaminated (parquet)",
    sections=("corpus", "eval.benchmarks"),
    upstream=lambda r: [],
    external=lambda r: {
        **({"local_dir": str(r.corpus.local_dir)} if r.corpus.local_dir else {}),
        **benchmark_inputs(r),
        **{f"decontam:{p}": str(p) for p in r.corpus.decontamination.benchmarks},
    },
    run=run,
    outputs={"docs": "dir", "heldout": "dir", "rejected": "file"},
)
