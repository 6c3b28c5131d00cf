"""Stage ``sft``: supervised fine-tuning on conversational QA with <think> reasoning chains.

    chat template (sft.chat_template: the model's, the instruct model's, a built-in or a file)
    -> synth QA and/or sft.dataset (+ weighted general instruct data; messages / ShareGPT /
       prompt-completion / alpaca rows, bad rows counted with file:line) -> reasoning modes
    -> template probe (end-of-turn token trained and a stop token, <think> kept)
    -> token ids + assistant masks for any template (training/chat_masks.py), overlong
       conversations cut at a turn boundary
    -> TRL SFTTrainer (padding-free "bfd" packing; full or LoRA; DDP / DeepSpeed ZeRO)
    -> <stage>/model/ with the chat template and stop tokens saved

Starts from the cpt checkpoint when the cpt stage is enabled (``ctx.input_model()``), else
from ``model.base``. Untrained embedding rows of the template's special tokens are initialised
(training/chat_setup.py). Preemption, resume and checkpoints work as in the cpt stage.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from ..core.stage import StageContext, StageResult, StageSpec
from .sections import enabled, mix_inputs, training_sections

log = logging.getLogger("astrosage")



def _conversation_sources(ctx: StageContext) -> list[Any]:
    """The domain data: the synth stage's QA (when enabled and non-empty) and/or sft.dataset."""
    from ..core.recipe import DataSource

    sources: list[Any] = []
    if "synth" in ctx.upstream:
        qa = ctx.upstream_output("synth", "qa")
        if any(qa.glob("*.jsonl")):
            sources.append(DataSource(path=str(qa), format="messages"))
        else:  # e.g. a teacher whose outputs were all rejected: say so, train on sft.dataset if given
            log.warning("sft: the synth stage kept no QA conversations (%s is empty)", qa)
    if ctx.recipe.sft.dataset:
        sources.append(ctx.recipe.sft.dataset)
    if not sources:
        raise ValueError("sft has no training conversations: enable the synth stage or set sft.dataset (jsonl/parquet file or folder, or a Hub dataset id)")
    return sources


def load_conversations(source, seed: int, cache_dir: str, num_proc: int | None = None) -> tuple[Any, list[dict[str, str]]]:
    """One data source -> (dataset with ``messages`` and ``_where``, rejected rows)."""
    from ..training import sft_data

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
    from ..training.chat import has_reasoning, reasoning_mode

    def convert(example, idx):
        messages = reasoning_mode(
            example["messages"], idx, seed, section.reasoning_fraction, section.thinking_system_prompt, section.direct_system_prompt
        )
        return {"messages": messages, "_thinking": has_reasoning(messages)}

    return [ds.map(convert, with_indices=True) for ds in datasets_]


def run(ctx: StageContext) -> StageResult:
    import datasets
    from trl import SFTConfig, SFTTrainer

    from ..training import chat_masks, chat_setup, data, harness, loggers, sft_data
    from ..training.preemption import PreemptionHandler

    recipe, section = ctx.recipe, ctx.recipe.sft
    seed = recipe.run.seed
    cache_dir = str(ctx.work_dir / "datasets.cache")
    with PreemptionHandler() as handler:
        model_path, tokenizer = harness.resolve_model_and_tokenizer(ctx)

        # ---- the chat template: its source, special tokens and stop tokens (no model loaded yet)
        instruct = lambda: ctx.resolve_model(recipe.model.base_instruct) if recipe.model.base_instruct else None  # noqa: E731
        source = chat_setup.resolve_template(section.chat_template, tokenizer, model_path, instruct)
        added_tokens = chat_setup.apply_template(tokenizer, source)
        stop_ids = chat_setup.stop_token_ids(model_path, tokenizer, source)
        plan = chat_masks.make_plan(tokenizer, source.origin)

        # ---- data: domain conversations (+ general instruct mix), reasoning modes chosen per example
        rejected: list[dict[str, str]] = []
        with harness.main_first():
            domain_parts = []
            for src in _conversation_sources(ctx):
                ds, bad = load_conversations(src, seed, cache_dir, section.num_proc)
                domain_parts.append(ds)
                rejected += bad
            general_parts = []
            for mix in section.general_mix:
                ds, bad = load_conversations(mix, seed, cache_dir, section.num_proc)
                general_parts.append(ds)
                rejected += bad
            domain_parts = prepare_conversations(domain_parts, section, seed)
            general = prepare_conversations(general_parts, section, seed + 7919)
        columns = ["messages", "_thinking", "_where"]
        domain = datasets.concatenate_datasets([d.select_columns(columns) for d in domain_parts]) if len(domain_parts) > 1 else domain_parts[0]
        mixed = data.mix(domain, list(zip(general, [m.weight for m in section.general_mix])), seed, columns)
        n_thinking = int(sum(mixed["_thinking"]))
        log.info("sft data: %d conversations (%d trained with <think> reasoning)", len(mixed), n_thinking)

        # ---- refuse a template / EOS setup that would train a broken model, before any training
        plan, template = chat_masks.check_template(tokenizer, plan, stop_ids, reasoning=n_thinking > 0)
        log.info("sft: %s; assistant masks by %s; turns end with %s", plan.name, plan.method, template["end_of_turn_token"])

        # ---- token ids + assistant masks (any template), overlong conversations cut at turn boundaries
        with harness.main_first():
            train_dataset, length_counts, bad = sft_data.tokenize_conversations(
                mixed.select_columns(["messages", "_where"]), tokenizer, plan, section.max_seq_len, section.overlong,
                section.assistant_only_loss, num_proc=section.num_proc,
            )
        rejected += bad
        if harness.is_main():
            sft_data.write_rejected(ctx.work_dir / "rejected.jsonl", rejected)
        trained_tokens = sum(sum(m) for m in train_dataset["assistant_masks"])
        if len(train_dataset) == 0 or trained_tokens == 0:
            reasons = Counter(r["reason"] for r in rejected)
            raise ValueError(f"sft: no example keeps a trained token ({len(rejected)} rejected: {dict(reasons)}; see {ctx.work_dir / 'rejected.jsonl'})")

        # ---- model: embeddings for the template's tokens, stop tokens in the generation config
        report_to = loggers.configure(recipe.logging, ctx.work_dir, f"{recipe.run.name}-sft")
        args = SFTConfig(
            **harness.training_kwargs(recipe, section, ctx.work_dir, report_to, "sft"),
            max_length=section.max_seq_len,
            packing=section.packing,
            packing_strategy=section.packing_strategy,
            assistant_only_loss=False,  # the assistant_masks column carries the mask (any template)
            dataset_num_proc=section.num_proc if section.num_proc > 1 else None,
        )
        probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        template_ids = chat_setup.template_token_ids(tokenizer, plan.template, chat_masks.fold_system(probe) if plan.fold_system else probe)
        check_ids = template_ids + stop_ids + added_ids(tokenizer, added_tokens)

        def prepare(model) -> tuple[bool, list[str]]:
            """New token rows, untrained rows set to the mean, stop tokens (also redone on LoRA's merge base)."""
            resized = chat_setup.resize_for(model, tokenizer)
            fixed = chat_setup.init_untrained_rows(model, tokenizer, check_ids, section.init_untrained_tokens)
            chat_setup.set_stop_tokens(model, stop_ids)
            return resized, fixed

        model = harness.load_model(model_path, recipe, section)
        resized, initialised = prepare(model)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            peft_config=harness.lora_config(section),
        )
        metrics = harness.train_save_finish(trainer, handler, recipe, section, ctx.work_dir, tokenizer, model_path, prepare_base=prepare)

    metrics.update(template)
    metrics.update({"tokens_added": added_tokens, "embedding_rows_initialised": initialised, "embeddings_resized": resized})
    reasons = Counter(r["reason"] for r in rejected if r["reason"] != "too_long")  # length drops are counted below
    counts = {
        "conversations": len(mixed),
        "conversations_with_reasoning": n_thinking,
        "examples": len(train_dataset),
        "rows_rejected": sum(reasons.values()),
        **{f"rejected_{k}": v for k, v in sorted(reasons.items())},
        **{k: v for k, v in length_counts.items() if not k.startswith("rejected_")},
        "assistant_tokens": int(trained_tokens),
        "packed_sequences": len(trainer.train_dataset),
        "tokens_trained": metrics["tokens_seen"],
        "steps": metrics["steps"],
    }
    return StageResult(outputs={"model": harness.MODEL_DIR, "rejected": "rejected.jsonl"}, counts=counts, metrics=metrics, discard=harness.discarded(section))


def added_ids(tokenizer, tokens: list[str]) -> list[int]:
    return [int(tokenizer.convert_tokens_to_ids(t)) for t in tokens]


SPEC = StageSpec(
    name="sft",
    summary="supervised fine-tuning on synthetic QA (with <think> reasoning)",
    sections=("model", "sft", "run.seed"),
    key_sections=lambda r: training_sections(r, "sft"),
    upstream=lambda r: enabled(r, "cpt", "synth"),
    external=lambda r: {
        "base": r.model.base,
        **({"dataset": r.sft.dataset.path} if r.sft.dataset else {}),
        **({"base_instruct": r.model.base_instruct} if r.sft.chat_template == "instruct" and r.model.base_instruct else {}),
        **mix_inputs(r.sft.general_mix),
    },
    run=run,
    outputs={"model": "dir", "rejected": "file"},
)
