"""The corpus stage: harvest -> e-prints -> text -> filters -> decontamination -> dedup -> parquet.

:func:`build_corpus` runs these steps in order; each lives in its own module:

1. gather (:mod:`.sources`): metadata + e-prints; network results cached in ``<run dir>/corpus.cache``;
   the input lines for the extraction tasks (:mod:`.inputs`), kept across a resumed run.
2. benchmark n-grams (:mod:`.decontam`): every benchmark item's n-grams, saved for the tasks.
3. extract (:mod:`.executor` running :class:`.process.ExtractStep`) through a datatrove executor
   (local processes, or Slurm with ``corpus.executor: slurm``): one parquet file per task under
   ``<stage>/_work/extract``; datatrove's completion markers let a rerun skip finished tasks.
4. select (:mod:`.selection`): benchmark-overlap drop (or flag), exact + MinHash-LSH near-duplicate
   removal in (submission date, id) order, the held-out split, papers that never reached an outcome.
5. write (:mod:`.writer`): ``docs/`` for training, ``heldout/`` for held-out perplexity only,
   ``rejected.jsonl``; then the counts table (:mod:`.stats`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from astrosage.core.stage import StageContext, StageResult

from .bars import StepBars
from .decontam import NgramIndex, benchmark_refs
from .executor import extract
from .filters import SUPPORTED_LANGUAGES
from .inputs import write_inputs
from .process import ProcessConfig
from .selection import select
from .sources import gather
from .stats import print_table, stage_counts, stage_metrics
from .writer import write_rejected, write_splits

OUTPUTS = {"docs": "docs", "heldout": "heldout", "rejected": "rejected.jsonl"}


def check_languages(filters: Any) -> None:
    """Refuse languages the offline detector cannot tell apart."""
    bad = [lang for lang in filters.languages if lang not in SUPPORTED_LANGUAGES]
    if bad:
        raise ValueError(f"corpus.filters.languages: {bad} not supported by the offline detector (supports {SUPPORTED_LANGUAGES})")


def cache_dir(ctx: StageContext) -> Path:
    """``corpus.cache_dir``, else ``<run dir>/corpus.cache`` (outside the stage folder, so it survives reruns)."""
    cfg = ctx.recipe.corpus
    return Path(cfg.cache_dir).expanduser().resolve() if cfg.cache_dir else ctx.run_dir / "corpus.cache"


def build_corpus(ctx: StageContext) -> StageResult:
    """Build the corpus described by ``ctx.recipe.corpus`` into ``ctx.work_dir``."""
    cfg = ctx.recipe.corpus
    check_languages(cfg.filters)
    work, tmp = ctx.work_dir, ctx.work_dir / "_work"
    tmp.mkdir(parents=True, exist_ok=True)
    refs = benchmark_refs(ctx.recipe)
    console = Console(stderr=True)
    bars = StepBars(console)
    with bars.progress:
        gathered = gather(cfg, cache_dir(ctx), bars)
        n_inputs = write_inputs(tmp / "inputs.jsonl", gathered.inputs)
        index = NgramIndex.from_benchmarks(refs, cfg.decontamination.ngram)
        index.save(tmp / "benchmark_ngrams.npy")
        shards = extract(ProcessConfig.from_settings(cfg, tmp), n_inputs, ctx.recipe, bars)
        chosen = select(shards, gathered, cfg, bars)
        written = write_splits(shards, chosen, gathered.records, work, cfg.shard_docs, bars)
        write_rejected(work / OUTPUTS["rejected"], chosen.rejected)
    counts = stage_counts(len(gathered.records), chosen, written)
    print_table(console, counts)
    shutil.rmtree(tmp)
    return StageResult(counts=counts, metrics=stage_metrics(chosen, written, refs, len(index.hashes)), outputs=dict(OUTPUTS))
