"""Continued pretraining's part of the training lifecycle: packed document rows and a plain ``Trainer``.

    documents (+ weighted general text) -> cached tokenization (tokenize.py)
    -> document-masked packed rows (packing.py) -> transformers Trainer (full or LoRA)

Everything else (resume, preemption, callbacks, final save, metrics) is :class:`.lifecycle.TrainingRun`.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core import distributed
from ..core.stage import StageContext
from . import data
from .lifecycle import TrainingRun
from .packing import PackedCollator, PackedDataset
from .preemption import Preempted
from .tokenize import TokenizationInterrupted, cache_key, tokenize_to_cache

log = logging.getLogger("astrosage")


class CptRun(TrainingRun):
    """The cpt stage's training run over ``documents`` (a corpus ``docs`` folder, a file or a Hub id)."""

    def __init__(self, ctx: StageContext, documents: str):
        super().__init__(ctx, ctx.recipe.cpt)
        self.documents = documents
        self.corpus: Any = None
        self.train_dataset: PackedDataset | None = None

    def build_data(self) -> None:
        """Domain documents + weighted general text, tokenized once into the cache, packed into rows."""
        section, seed = self.section, self.recipe.run.seed
        with distributed.main_first():
            domain = data.load_records(self.documents)
            general = [(data.load_records(m.path, m.split, m.max_samples, seed, name=m.name), m.weight) for m in section.general_mix]
        documents = data.mix(domain, general, seed, [section.text_field])
        mix_fp = data.mix_fingerprint(
            data.fingerprint(self.documents),
            [(data.fingerprint(m.path, m.split), m.weight, m.max_samples, m.split) for m in section.general_mix],
            seed,
            {"text_field": section.text_field},
        )
        key = cache_key(mix_fp, self.tokenizer, section.tokenize_shard_docs)
        try:
            corpus = tokenize_to_cache(
                documents, section.text_field, self.tokenizer, self.ctx.run_dir / "tokenized.cache" / key,
                section.tokenize_shard_docs, should_stop=self.handler.agreed, num_proc=section.num_proc,
            )
        except TokenizationInterrupted as exc:
            raise Preempted(f"preempted during tokenization: {exc}") from None
        rows = PackedDataset(corpus.shards, section.max_seq_len)
        if len(rows) == 0:
            raise ValueError(
                f"the training documents hold {corpus.n_tokens} tokens, fewer than one packed row of cpt.max_seq_len="
                f"{section.max_seq_len}; add data or lower cpt.max_seq_len"
            )
        log.info(
            "cpt data: %d documents, %d tokens -> %d packed rows of %d (%d tail tokens dropped; cache %s, %d shards tokenized now)",
            corpus.n_docs, corpus.n_tokens, len(rows), section.max_seq_len, rows.dropped_tokens, corpus.root.name, corpus.written,
        )
        self.corpus, self.train_dataset = corpus, rows

    def training_args(self, kwargs: dict[str, Any]):
        """Plain TrainingArguments; the packed rows' columns (position_ids) reach the model."""
        from transformers import TrainingArguments

        return TrainingArguments(**kwargs, remove_unused_columns=False)

    def make_trainer(self, model, args, lora):
        """A transformers Trainer over the packed rows (LoRA adapters added by peft)."""
        from transformers import Trainer

        if lora is not None:
            from peft import get_peft_model

            model = get_peft_model(model, lora)
        flatten = self.recipe.model.attn_implementation.startswith("flash_attention")  # varlen wants one [1, B*L] row
        return Trainer(
            model=model,
            args=args,
            train_dataset=self.train_dataset,
            data_collator=PackedCollator(flatten=flatten),
            processing_class=self.tokenizer,
        )

    def stage_metrics(self) -> dict[str, Any]:
        return {"tokenized_cache": self.corpus.root.name}

    def counts(self, metrics: dict[str, Any]) -> dict[str, int]:
        return {
            "documents": self.corpus.n_docs,
            "corpus_tokens": self.corpus.n_tokens,
            "packed_rows": len(self.train_dataset),
            **super().counts(metrics),
        }
