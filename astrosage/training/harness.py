"""The glue both training stages share, kept thin over transformers / TRL / peft / DeepSpeed.

* :func:`training_kwargs`  recipe section -> TrainingArguments/SFTConfig keyword arguments
* :func:`load_model`       AutoModelForCausalLM with the recipe's dtype and attention kernel
* :func:`lora_config`      peft LoraConfig from the recipe (None when LoRA is off)
* :func:`callbacks`        preemption, complete-checkpoint markers + retention, throughput
* :func:`train`            resume from the newest *complete* checkpoint; exit for requeue if preempted
* :func:`save_final`       the stage's ``model/`` folder: safetensors + tokenizer + chat template

Precision: with DeepSpeed the weights are loaded in ``model.dtype`` and DeepSpeed keeps fp32
master weights. Without DeepSpeed, bf16/fp16 recipes load fp32 weights and train with autocast
(mixed precision, fp32 optimizer state); the final model is saved in ``model.dtype``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from ..core.artifacts import atomic_write_json
from . import checkpoints, loggers
from .metrics import ThroughputCallback, model_flops_per_token, peak_flops_per_device
from .preemption import Preempted, PreemptionCallback, PreemptionHandler

log = logging.getLogger("astrosage")

CHECKPOINTS_DIR = "checkpoints"
MODEL_DIR = "model"


# ------------------------------------------------------------------------------ ranks
def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main rank runs the block first (e.g. fills a dataset cache); the others after it."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


# ------------------------------------------------------------------------------ config
def resolve_model_and_tokenizer(ctx) -> tuple[str, Any]:
    """The stage's starting model (path) and its tokenizer; the main rank builds/downloads first."""
    from transformers import AutoTokenizer

    recipe = ctx.recipe
    with main_first():  # the other ranks then reuse the built/downloaded files
        model_path = ctx.input_model()
        tokenizer_ref = ctx.resolve_model(recipe.model.tokenizer) if recipe.model.tokenizer else model_path
        tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_ref, revision=hub_revision(tokenizer_ref, recipe), trust_remote_code=recipe.model.trust_remote_code
        )
    return model_path, tokenizer


def hub_revision(ref: str, recipe) -> str | None:
    """``model.revision`` applies to the base model's Hub id only (not to local checkpoints)."""
    return recipe.model.revision if ref == recipe.model.base else None


def training_kwargs(recipe, section, work_dir: Path, report_to: list[str], stage: str) -> dict[str, Any]:
    """TrainingArguments keyword arguments shared by Trainer (cpt) and SFTConfig (sft)."""
    import torch

    dtype = recipe.model.dtype
    return dict(
        use_cpu=not torch.cuda.is_available(),  # also makes accelerate's CPU multi-process state correct
        output_dir=str(Path(work_dir) / CHECKPOINTS_DIR),
        run_name=f"{recipe.run.name}-{stage}",
        per_device_train_batch_size=section.per_device_batch_size,
        gradient_accumulation_steps=section.gradient_accumulation_steps,
        learning_rate=section.learning_rate,
        lr_scheduler_type=section.lr_scheduler,
        warmup_steps=section.warmup_ratio,  # a float < 1 is a ratio of the total steps
        num_train_epochs=section.num_epochs,
        max_steps=section.max_steps or -1,
        weight_decay=section.weight_decay,
        max_grad_norm=section.max_grad_norm,
        activation_checkpointing=section.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if section.gradient_checkpointing else None,
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        logging_strategy="steps",
        logging_steps=section.logging_steps or recipe.logging.log_every_n_steps,
        logging_first_step=True,  # first_loss is always measured (see also LogLastStepCallback)
        save_strategy="steps",
        save_steps=section.save_steps,
        save_total_limit=None,  # retention counts complete checkpoints only: see checkpoints.py
        seed=recipe.run.seed,
        data_seed=recipe.run.seed,
        report_to=report_to,
        include_num_input_tokens_seen="non_padding",
        deepspeed=str(section.deepspeed) if section.deepspeed else None,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def load_model(model_path: str, recipe, section):
    """Load the causal LM to train (call after building TrainingArguments: ZeRO-3 needs it first)."""
    import torch
    from transformers import AutoModelForCausalLM

    if section.deepspeed is not None and world_size() > 1:
        import deepspeed
        import torch.distributed as dist

        # accelerate skips this on CPU (gloo); ZeRO-3's partitioned init needs DeepSpeed's comm up
        deepspeed.init_distributed(dist_backend=dist.get_backend() if dist.is_initialized() else None, auto_mpi_discovery=False)
    dtype: Any = recipe.model.dtype
    if dtype != "auto":
        dtype = getattr(torch, dtype)
        if section.deepspeed is None and dtype in (torch.bfloat16, torch.float16) and not section.lora.enabled:
            dtype = torch.float32  # autocast mixed precision keeps fp32 master weights
    if recipe.model.attn_implementation == "sdpa_packed":
        from .packing import register_packed_sdpa

        register_packed_sdpa()  # per-document causal sdpa over packed rows
    model = AutoModelForCausalLM.from_pretrained(
        model_path,
        revision=hub_revision(model_path, recipe),
        dtype=dtype,
        attn_implementation=recipe.model.attn_implementation,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    # A KV cache during training would also disable the packed-sequence (per-document) mask.
    model.config.use_cache = False
    return model


def lora_config(section):
    if not section.lora.enabled:
        return None
    from peft import LoraConfig

    lora = section.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


# ------------------------------------------------------------------------------ callbacks / train
def _log_last_step_callback():
    from transformers import TrainerCallback

    class LogLastStepCallback(TrainerCallback):
        """Log the loss at the final optimizer step too, so final_loss exists when max_steps < logging_steps."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_log = True
            return control

    return LogLastStepCallback()


class Harness:
    """Callbacks and bookkeeping of one training stage run."""

    def __init__(self, handler: PreemptionHandler, section, recipe, work_dir: Path):
        self.handler = handler
        self.section = section
        self.recipe = recipe
        self.work_dir = Path(work_dir)
        self.preemption = PreemptionCallback(handler)
        self.checkpoints = checkpoints.CompleteCheckpointCallback(keep=section.save_total_limit)
        self.throughput: ThroughputCallback | None = None

    def attach(self, trainer, seq_len: int) -> None:
        """Add our callbacks; throughput goes first so the loggers see tokens/s and MFU."""
        flops = model_flops_per_token(trainer.model, seq_len)
        self.throughput = ThroughputCallback(flops, peak_flops_per_device(self.recipe.model.dtype), world_size())
        trainer.callback_handler.callbacks.insert(0, self.throughput)
        trainer.add_callback(_log_last_step_callback())
        trainer.add_callback(self.preemption)
        trainer.add_callback(self.checkpoints)
        from .guards import NonFiniteGuard  # a NaN/inf loss or weight fails the stage, naming the step

        trainer.add_callback(NonFiniteGuard(self.work_dir.name.split(".")[0]))

    def train(self, trainer):
        """Resume from the newest complete checkpoint (if any); raise Preempted if signalled."""
        root = self.work_dir / CHECKPOINTS_DIR
        if is_main():
            checkpoints.remove_incomplete(root)
        barrier()
        resume = checkpoints.newest_complete(root)
        if resume is not None:
            log.info("resuming from %s", resume)
        if resume is not None and self._is_final(trainer, resume):
            # transformers trains one step past max_steps when resumed from the final checkpoint
            # (global_step 4 -> 5 with max_steps=4); load it as Trainer.train would, and train nothing
            from transformers.trainer_callback import TrainerState

            log.info("%s is the final step (max_steps=%d): loading it, nothing left to train", resume, trainer.args.max_steps)
            trainer._load_from_checkpoint(str(resume))
            trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
            return None, resume
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        if self.preemption.preempted_at is not None:
            step = self.preemption.preempted_at
            ckpt = root / f"checkpoint-{step}"
            if is_main():
                atomic_write_json(
                    self.work_dir / "preempted.json",
                    {"step": step, "checkpoint": str(ckpt), "complete": checkpoints.is_complete(ckpt), "signal": self.handler.signal_name},
                )
            loggers.close()
            barrier()
            raise Preempted(f"preempted at step {step}; checkpoint {ckpt} is complete; rerun the same command to resume")
        return result, resume

    @staticmethod
    def _is_final(trainer, checkpoint: Path) -> bool:
        """The checkpoint is at max_steps and can be loaded without an engine (no DeepSpeed)."""
        step = int(checkpoint.name.split("-")[-1])
        if trainer.args.max_steps <= 0 or step < trainer.args.max_steps:
            return False
        if trainer.is_deepspeed_enabled:  # ZeRO shards load only into a DeepSpeed engine, made by train()
            log.warning("%s is the final step; under DeepSpeed transformers trains one extra step on resume", checkpoint)
            return False
        return True


def train_save_finish(
    trainer, handler: PreemptionHandler, recipe, section, work_dir: Path, tokenizer, model_path: str, prepare_base=None
) -> dict[str, Any]:
    """Attach the callbacks, train (resuming from the newest complete checkpoint), save, clean up.

    ``prepare_base(model)`` redoes, on the base model LoRA adapters are merged into, what the stage
    did to the model before training (e.g. new token rows, initialised embeddings, stop tokens).
    Returns the stage metrics, with ``resumed_from_step`` (0 for a fresh run).
    """
    run = Harness(handler, section, recipe, work_dir)
    run.attach(trainer, section.max_seq_len)
    _, resumed_from = run.train(trainer)
    save_final(trainer, tokenizer, recipe, section, model_path, work_dir, prepare_base)
    metrics = finish(trainer, run, work_dir)
    metrics["resumed_from_step"] = int(resumed_from.name.split("-")[-1]) if resumed_from else 0
    return metrics


def save_final(trainer, tokenizer, recipe, section, base_model_path: str, work_dir: Path, prepare_base=None) -> Path:
    """Write ``<work_dir>/model`` (atomically): full weights (LoRA merged), tokenizer, chat template."""
    import torch

    work_dir = Path(work_dir)
    final, tmp = work_dir / MODEL_DIR, work_dir / f".{MODEL_DIR}.tmp"
    if is_main():
        shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    if section.lora.enabled:
        adapter = work_dir / "adapter"
        trainer.save_model(str(adapter))  # collective under DeepSpeed
        if is_main():
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            dtype = getattr(torch, recipe.model.dtype) if recipe.model.dtype != "auto" else "auto"
            base = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=dtype)
            if prepare_base is not None:
                prepare_base(base)  # the frozen rows the adapter was trained against
            merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
            merged.save_pretrained(str(tmp))
    else:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        unwrapped.config.use_cache = True  # the saved model generates with a cache
        if section.deepspeed is None and recipe.model.dtype in ("bfloat16", "float16"):
            trainer.model.to(getattr(torch, recipe.model.dtype))  # trained with fp32 masters; save in model.dtype
        trainer.save_model(str(tmp))  # gathers ZeRO-3 shards; writes safetensors + config + generation config
    if is_main():
        with contextlib.suppress(FileNotFoundError):
            (tmp / "training_args.bin").unlink()  # a pickle; the manifest records the recipe instead
        tokenizer.save_pretrained(str(tmp))
        from .chat import verify_saved

        verify_saved(tmp, tokenizer)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    barrier()
    return final


def discarded(section) -> tuple[str, ...]:
    """What the runner deletes once the stage is sealed: the checkpoints, unless kept."""
    return () if section.keep_checkpoints else (CHECKPOINTS_DIR,)


def finish(trainer, harness: Harness, work_dir: Path) -> dict[str, Any]:
    """Metrics for the StageResult; copies trainer_state.json out (checkpoints go after the seal)."""
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    metrics: dict[str, Any] = {
        "final_loss": losses[-1] if losses else None,
        "first_loss": losses[0] if losses else None,
        "steps": state.global_step,
        "tokens_seen": int(state.num_input_tokens_seen),
    }
    if harness.throughput is not None:
        metrics.update(harness.throughput.summary)
    train_losses = [h for h in state.log_history if "train_loss" in h]
    if train_losses:
        metrics["mean_train_loss"] = train_losses[-1]["train_loss"]
    loggers.close()
    if is_main():
        atomic_write_json(Path(work_dir) / "trainer_state.json", json.loads(json.dumps(dataclasses.asdict(state), default=str)))
        with contextlib.suppress(FileNotFoundError):
            (Path(work_dir) / "preempted.json").unlink()
    barrier()
    return metrics
