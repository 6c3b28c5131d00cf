"""Supervised fine-tuning's part of the training lifecycle: conversations and TRL's ``SFTTrainer``.

    chat template (sft.chat_template: the model's, the instruct model's, a built-in or a file)
    -> conversations (+ weighted general instruct data) -> reasoning modes -> template probe
    -> token ids + assistant masks (chat_masks.py), overlong conversations cut at a turn boundary
    -> TRL SFTTrainer (padding-free "bfd" packing; full or LoRA)

The model gets new token rows, initialised untrained embedding rows and stop tokens
(:meth:`SftRun.prepare_base`, redone on the base LoRA adapters merge into). Everything else
(resume, preemption, callbacks, final save, metrics) is :class:`.lifecycle.TrainingRun`.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from ..core import distributed
from ..core.stage import StageContext
from . import chat_masks, chat_setup, data, sft_data
from .lifecycle import TrainingRun

log = logging.getLogger("astrosage")

REJECTED = "rejected.jsonl"


def load_conversations(source, seed: int, cache_dir: str, num_proc: int | None = None) -> tuple[Any, list[dict[str, str]]]:
    """One data source -> (dataset with ``messages`` and ``_where``, rejected rows)."""
    rows = sft_data.load_rows(source.path, source.name, source.split, cache_dir=cache_dir)
    ds, rejected = sft_data.conversations(rows, source.format, source.columns or None, num_proc=num_proc)
    if source.max_samples is not None and len(ds) > source.max_samples:
        ds = ds.shuffle(seed=seed).select(range(source.max_samples))
    if len(ds) == 0:
        reasons = Counter(r["reason"] for r in rejected)
        raise ValueError(f"sft data {source.path!r}: no usable conversation ({len(rejected)} rows rejected: {dict(reasons)}; first: {rejected[:1]})")
    return ds, rejected


def prepare_conversations(datasets_, section, seed: int):
    """Normalize messages and choose each example's reasoning mode."""
    from .chat import has_reasoning, reasoning_mode

    def convert(example, idx):
        messages = reasoning_mode(
            example["messages"], idx, seed, section.reasoning_fraction, section.thinking_system_prompt, section.direct_system_prompt
        )
        return {"messages": messages, "_thinking": has_reasoning(messages)}

    return [ds.map(convert, with_indices=True) for ds in datasets_]


def added_ids(tokenizer, tokens: list[str]) -> list[int]:
    """Token ids of the tokens the template added to the vocabulary."""
    return [int(tokenizer.convert_tokens_to_ids(t)) for t in tokens]


class SftRun(TrainingRun):
    """The sft stage's training run over the domain ``sources`` (DataSource entries) + ``sft.general_mix``."""

    extra_outputs = {"rejected": REJECTED}

    def __init__(self, ctx: StageContext, sources: list[Any]):
        super().__init__(ctx, ctx.recipe.sft)
        self.sources = sources
        self.rejected: list[dict[str, str]] = []
        self.embeddings: tuple[bool, list[str]] | None = None  # (resized, rows initialised) of the trained model

    def build_data(self) -> None:
        """Template + stop tokens, conversations with reasoning modes, template checks, token ids + masks."""
        recipe, section, seed, tokenizer = self.recipe, self.section, self.recipe.run.seed, self.tokenizer
        cache_dir = str(self.work_dir / "datasets.cache")

        # ---- the chat template: its source, special tokens and stop tokens (no model loaded yet)
        instruct = lambda: self.ctx.resolve_model(recipe.model.base_instruct) if recipe.model.base_instruct else None  # noqa: E731
        source = chat_setup.resolve_template(section.chat_template, tokenizer, self.model_path, instruct)
        self.added_tokens = chat_setup.apply_template(tokenizer, source)
        self.stop_ids = chat_setup.stop_token_ids(self.model_path, tokenizer, source)
        plan = chat_masks.make_plan(tokenizer, source.origin)

        # ---- data: domain conversations (+ general instruct mix), reasoning modes chosen per example
        with distributed.main_first():
            domain_parts = [self._load(src, cache_dir) for src in self.sources]
            general_parts = [self._load(mix, cache_dir) for mix in section.general_mix]
            domain_parts = prepare_conversations(domain_parts, section, seed)
            general = prepare_conversations(general_parts, section, seed + 7919)
        columns = ["messages", "_thinking", "_where"]
        if len(domain_parts) > 1:
            import datasets

            domain = datasets.concatenate_datasets([d.select_columns(columns) for d in domain_parts])
        else:
            domain = domain_parts[0]
        self.mixed = data.mix(domain, list(zip(general, [m.weight for m in section.general_mix])), seed, columns)
        self.n_thinking = int(sum(self.mixed["_thinking"]))
        log.info("sft data: %d conversations (%d trained with <think> reasoning)", len(self.mixed), self.n_thinking)

        # ---- refuse a template / EOS setup that would train a broken model, before any training
        plan, self.template = chat_masks.check_template(tokenizer, plan, self.stop_ids, reasoning=self.n_thinking > 0)
        log.info("sft: %s; assistant masks by %s; turns end with %s", plan.name, plan.method, self.template["end_of_turn_token"])

        # ---- token ids + assistant masks (any template), overlong conversations cut at turn boundaries
        with distributed.main_first():
            self.train_dataset, self.length_counts, bad = sft_data.tokenize_conversations(
                self.mixed.select_columns(["messages", "_where"]), tokenizer, plan, section.max_seq_len, section.overlong,
                section.assistant_only_loss, num_proc=section.num_proc,
            )
        self.rejected += bad
        if distributed.is_main():
            sft_data.write_rejected(self.work_dir / REJECTED, self.rejected)
        self.trained_tokens = sum(sum(m) for m in self.train_dataset["assistant_masks"])
        if len(self.train_dataset) == 0 or self.trained_tokens == 0:
            reasons = Counter(r["reason"] for r in self.rejected)
            raise ValueError(f"sft: no example keeps a trained token ({len(self.rejected)} rejected: {dict(reasons)}; see {self.work_dir / REJECTED})")

        # ---- the token rows the model must have trained embeddings for
        probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        template_ids = chat_setup.template_token_ids(tokenizer, plan.template, chat_masks.fold_system(probe) if plan.fold_system else probe)
        self.check_ids = template_ids + self.stop_ids + added_ids(tokenizer, self.added_tokens)

    def _load(self, source, cache_dir: str):
        ds, bad = load_conversations(source, self.recipe.run.seed, cache_dir, self.section.num_proc)
        self.rejected += bad
        return ds

    def training_args(self, kwargs: dict[str, Any]):
        """TRL's SFTConfig: packing as the recipe says; the assistant_masks column carries the loss mask."""
        from trl import SFTConfig

        section = self.section
        return SFTConfig(
            **kwargs,
            max_length=section.max_seq_len,
            packing=section.packing,
            packing_strategy=section.packing_strategy,
            assistant_only_loss=False,  # the assistant_masks column carries the mask (any template)
            dataset_num_proc=section.num_proc if section.num_proc > 1 else None,
        )

    def prepare_base(self, model) -> None:
        """New token rows, untrained rows set to the mean, stop tokens in the generation config."""
        resized = chat_setup.resize_for(model, self.tokenizer)
        fixed = chat_setup.init_untrained_rows(model, self.tokenizer, self.check_ids, self.section.init_untrained_tokens)
        chat_setup.set_stop_tokens(model, self.stop_ids)
        if self.embeddings is None:  # the model being trained (not LoRA's merge base)
            self.embeddings = (resized, fixed)

    def make_trainer(self, model, args, lora):
        """TRL's SFTTrainer (it adds the LoRA adapters itself, training any added token rows)."""
        from trl import SFTTrainer

        return SFTTrainer(model=model, args=args, train_dataset=self.train_dataset, processing_class=self.tokenizer, peft_config=lora)

    def stage_metrics(self) -> dict[str, Any]:
        resized, initialised = self.embeddings
        return {**self.template, "tokens_added": self.added_tokens, "embedding_rows_initialised": initialised, "embeddings_resized": resized}

    def counts(self, metrics: dict[str, Any]) -> dict[str, int]:
        reasons = Counter(r["reason"] for r in self.rejected if r["reason"] != "too_long")  # length drops are counted below
        return {
            "conversations": len(self.mixed),
            "conversations_with_reasoning": self.n_thinking,
            "examples": len(self.train_dataset),
            "rows_rejected": sum(reasons.values()),
            **{f"rejected_{k}": v for k, v in sorted(reasons.items())},
            **{k: v for k, v in self.length_counts.items() if not k.startswith("rejected_")},
            "assistant_tokens": int(self.trained_tokens),
            "packed_sequences": len(self.trainer.train_dataset),
            **super().counts(metrics),
        }
