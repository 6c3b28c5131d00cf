"""Stage ``cpt``: continued pretraining of the base model on the astronomy corpus.

    corpus docs (+ weighted general text) -> cached tokenization -> document-masked packed rows
    -> transformers Trainer (full fine-tune or LoRA; DDP / DeepSpeed ZeRO from the launcher)
    -> <stage>/model/ (safetensors + tokenizer + chat template)

Data: the corpus stage's ``docs`` parquet folder when that stage is enabled, else
``cpt.dataset``. Tokenization is cached in ``<run>/tokenized.cache/`` (see
astrosage.training.tokenize) and resumes shard by shard. SIGTERM/SIGUSR1 at any point ->
complete checkpoint (or finished tokenization shards) -> exit code 75 for requeue. The training
run is astrosage.training.cpt_run over the lifecycle of astrosage.training.lifecycle.
"""

from __future__ import annotations

from ..core.stage import StageContext, StageResult, StageSpec
from .sections import enabled, mix_inputs, training_sections


def _documents_ref(ctx: StageContext) -> str:
    """The documents to train on: the corpus stage's ``docs`` folder, else ``cpt.dataset``."""
    if "corpus" in ctx.upstream:
        return str(ctx.upstream_output("corpus", "docs"))
    if ctx.recipe.cpt.dataset:
        return ctx.recipe.cpt.dataset
    raise ValueError("cpt has no training documents: enable the corpus stage or set cpt.dataset (a jsonl/parquet file or folder, or a Hub dataset id)")


def run(ctx: StageContext) -> StageResult:
    """Train on the stage's documents: the whole lifecycle is astrosage.training.cpt_run.CptRun."""
    from ..training.cpt_run import CptRun

    return CptRun(ctx, _documents_ref(ctx)).run()


SPEC = StageSpec(
    name="cpt",
    summary="continued pretraining of the base model on the corpus",
    sections=("model", "cpt", "run.seed"),
    key_sections=lambda r: training_sections(r, "cpt"),
    upstream=lambda r: enabled(r, "corpus"),
    external=lambda r: {
        "base": r.model.base,
        **({"dataset": r.cpt.dataset} if r.cpt.dataset and not r.corpus.enabled else {}),
        **mix_inputs(r.cpt.general_mix),
    },
    run=run,
    outputs={"model": "dir"},
)
