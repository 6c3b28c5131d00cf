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
(training/chat_setup.py). The training run is astrosage.training.sft_run over the lifecycle of
astrosage.training.lifecycle: preemption, resume and checkpoints work as in the cpt stage.
"""

from __future__ import annotations

import logging
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


def run(ctx: StageContext) -> StageResult:
    """Fine-tune on the stage's conversations: the whole lifecycle is astrosage.training.sft_run.SftRun."""
    from ..training.sft_run import SftRun

    return SftRun(ctx, _conversation_sources(ctx)).run()


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
