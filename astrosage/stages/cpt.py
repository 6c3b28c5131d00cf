"""Stage ``cpt``: continued pretraining of the base model on the astronomy corpus.

    corpus docs (+ weighted general text) -> cached tokenization -> document-masked packed rows
    -> transformers Trainer (full fine-tune or LoRA; DDP / DeepSpeed ZeRO from the launcher)
    -> <stage>/model/ (safetensors + tokenizer + chat template)

Data: the corpus stage's ``docs`` parquet folder when that stage is enabled, else
``cpt.dataset``. Tokenization is cached in ``<run>/tokenized.cache/`` (see
astrosage.training.tokenize) and resumes shard by shard. SIGTERM/SIGUSR1 at any point ->
complete checkpoint (or finished tokenization shards) -> exit code 75 for requeue.
"""

from __future__ import annotations

import logging

from ..core.stage import StageContext, StageResult, StageSpec
from .sections import enabled, mix_inputs, training_sections

log = logging.getLogger("astrosage")



def _documents_ref(ctx: StageContext) -> str:
    if "corpus" in ctx.upstream:
        return str(ctx.upstream_output("corpus", "docs"))
    if ctx.recipe.cpt.dataset:
        return ctx.recipe.cpt.dataset
    raise ValueError("cpt has no training documents: enable the corpus stage or set cpt.dataset (a jsonl/parquet file or folder, or a Hub dataset id)")


def run(ctx: StageContext) -> StageResult:
    from transformers import Trainer, TrainingArguments

    from ..training import data, harness, loggers
    from ..training.packing import PackedCollator, PackedDataset
    from ..training.preemption import Preempted, PreemptionHandler
    from ..training.tokenize import TokenizationInterrupted, cache_key, tokenize_to_cache

    recipe, section = ctx.recipe, ctx.recipe.cpt
    seed = recipe.run.seed
    with PreemptionHandler() as handler:
        model_path, tokenizer = harness.resolve_model_and_tokenizer(ctx)

        # ---- data: domain documents + weighted general text, tokenized once into the cache
        ref = _documents_ref(ctx)
        with harness.main_first():
            domain = data.load_records(ref)
            general = [(data.load_records(m.path, m.split, m.max_samples, seed, name=m.name), m.weight) for m in section.general_mix]
        documents = data.mix(domain, general, seed, [section.text_field])
        mix_fp = data.mix_fingerprint(
            data.fingerprint(ref),
            [(data.fingerprint(m.path, m.split), m.weight, m.max_samples, m.split) for m in section.general_mix],
            seed,
            {"text_field": section.text_field},
        )
        key = cache_key(mix_fp, tokenizer, section.tokenize_shard_docs)
        try:
            corpus = tokenize_to_cache(
                documents, section.text_field, tokenizer, ctx.run_dir / "tokenized.cache" / key,
                section.tokenize_shard_docs, should_stop=handler.agreed, num_proc=section.num_proc,
            )
        except TokenizationInterrupted as exc:
            raise Preempted(f"preempted during tokenization: {exc}") from None
        train_dataset = PackedDataset(corpus.shards, section.max_seq_len)
        if len(train_dataset) == 0:
            raise ValueError(
                f"the training documents hold {corpus.n_tokens} tokens, fewer than one packed row of cpt.max_seq_len="
                f"{section.max_seq_len}; add data or lower cpt.max_seq_len"
            )
        log.info(
            "cpt data: %d documents, %d tokens -> %d packed rows of %d (%d tail tokens dropped; cache %s, %d shards tokenized now)",
            corpus.n_docs, corpus.n_tokens, len(train_dataset), section.max_seq_len, train_dataset.dropped_tokens,
            corpus.root.name, corpus.written,
        )

        # ---- trainer
        report_to = loggers.configure(recipe.logging, ctx.work_dir, f"{recipe.run.name}-cpt")
        args = TrainingArguments(
            **harness.training_kwargs(recipe, section, ctx.work_dir, report_to, "cpt"), remove_unused_columns=False
        )
        model = harness.load_model(model_path, recipe, section)
        lora = harness.lora_config(section)
        if lora is not None:
            from peft import get_peft_model

            model = get_peft_model(model, lora)
        flatten = recipe.model.attn_implementation.startswith("flash_attention")
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=PackedCollator(flatten=flatten),
            processing_class=tokenizer,
        )
        metrics = harness.train_save_finish(trainer, handler, recipe, section, ctx.work_dir, tokenizer, model_path)

    metrics.update(
        {
            "tokenized_cache": corpus.root.name,
        }
    )
    counts = {
        "documents": corpus.n_docs,
        "corpus_tokens": corpus.n_tokens,
        "packed_rows": len(train_dataset),
        "tokens_trained": metrics["tokens_seen"],
        "steps": metrics["steps"],
    }
    return StageResult(outputs={"model": harness.MODEL_DIR}, counts=counts, metrics=metrics, discard=harness.discarded(section))


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
