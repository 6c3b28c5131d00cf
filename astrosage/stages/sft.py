"""Stage ``sft``: supervised fine-tuning on conversational QA with <think> reasoning chains.

    synth QA and/or sft.dataset (+ weighted general instruct data) -> reasoning modes
    -> chat-template / EOS check -> TRL SFTTrainer (assistant_only_loss, padding-free "bfd"
    packing; full or LoRA; DDP / DeepSpeed ZeRO) -> <stage>/model/ with the chat template

Starts from the cpt checkpoint when the cpt stage is enabled (``ctx.input_model()``), else
from ``model.base``. Reasoning modes and the template checks live in astrosage.training.chat.
Preemption, resume and checkpoints work as in the cpt stage.
"""

from __future__ import annotations

import logging

from ..pipeline import StageContext, StageResult
from ..training.distributed import init_state

log = logging.getLogger("astrosage")

init_state()  # before the run manager asks accelerate which rank is main (see training/distributed.py)


def _conversation_refs(ctx: StageContext) -> list[str]:
    refs = []
    if "synth" in ctx.upstream:
        qa = ctx.upstream_output("synth", "qa")
        if any(qa.glob("*.jsonl")):
            refs.append(str(qa))
        else:  # e.g. a teacher whose outputs were all rejected: say so, train on sft.dataset if given
            log.warning("sft: the synth stage kept no QA conversations (%s is empty)", qa)
    if ctx.recipe.sft.dataset:
        refs.append(ctx.recipe.sft.dataset)
    if not refs:
        raise ValueError("sft has no training conversations: enable the synth stage or set sft.dataset (jsonl/parquet file or folder, or a Hub dataset id)")
    return refs


def prepare_conversations(datasets_, section, seed: int):
    """Normalize messages and choose each example's reasoning mode; returns (dataset, n_reasoning)."""
    from ..training.chat import has_reasoning, reasoning_mode

    def convert(example, idx):
        messages = reasoning_mode(
            example["messages"], idx, seed, section.reasoning_fraction, section.thinking_system_prompt, section.direct_system_prompt
        )
        return {"messages": messages, "_thinking": has_reasoning(messages)}

    out = []
    for ds in datasets_:
        if "messages" not in ds.column_names:
            raise ValueError(f"conversational data needs a 'messages' column (has {ds.column_names})")
        out.append(ds.map(convert, with_indices=True, remove_columns=ds.column_names))
    return out


def run(ctx: StageContext) -> StageResult:
    import datasets
    from trl import SFTConfig, SFTTrainer

    from ..training import data, harness, loggers
    from ..training.chat import check_chat_template
    from ..training.preemption import PreemptionHandler

    recipe, section = ctx.recipe, ctx.recipe.sft
    seed = recipe.run.seed
    with PreemptionHandler() as handler:
        model_path, tokenizer = harness.resolve_model_and_tokenizer(ctx)

        # ---- data: domain conversations (+ general instruct mix), reasoning modes chosen per example
        with harness.main_first():
            domain_parts = [data.load_records(ref) for ref in _conversation_refs(ctx)]
            general_raw = [data.load_records(m.path, m.split, m.max_samples, seed) for m in section.general_mix]
            domain_parts = prepare_conversations(domain_parts, section, seed)
            general = prepare_conversations(general_raw, section, seed + 7919)
        domain = datasets.concatenate_datasets(domain_parts) if len(domain_parts) > 1 else domain_parts[0]
        mixed = data.mix(domain, list(zip(general, [m.weight for m in section.general_mix])), seed, ["messages", "_thinking"])
        n_thinking = int(sum(mixed["_thinking"]))
        train_dataset = mixed.select_columns(["messages"])
        log.info("sft data: %d conversations (%d trained with <think> reasoning)", len(train_dataset), n_thinking)

        # ---- refuse a template / EOS setup that would train a broken model, before any training
        template = check_chat_template(tokenizer, model_path, section.assistant_only_loss, reasoning=n_thinking > 0)

        # ---- trainer
        report_to = loggers.configure(recipe.logging, ctx.work_dir, f"{recipe.run.name}-sft")
        args = SFTConfig(
            **harness.training_kwargs(recipe, section, ctx.work_dir, report_to, "sft"),
            max_length=section.max_seq_len,
            packing=section.packing,
            packing_strategy=section.packing_strategy,
            assistant_only_loss=section.assistant_only_loss,
            dataset_num_proc=section.num_proc if section.num_proc > 1 else None,
        )
        model = harness.load_model(model_path, recipe, section)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            peft_config=harness.lora_config(section),
        )
        metrics = harness.train_save_finish(trainer, handler, recipe, section, ctx.work_dir, tokenizer, model_path)

    metrics.update(
        {
            "end_of_turn_token": template["end_of_turn_token"],
        }
    )
    counts = {
        "conversations": len(train_dataset),
        "conversations_with_reasoning": n_thinking,
        "packed_sequences": len(trainer.train_dataset),
        "tokens_trained": metrics["tokens_seen"],
        "steps": metrics["steps"],
    }
    return StageResult(outputs={"model": harness.MODEL_DIR}, counts=counts, metrics=metrics)
