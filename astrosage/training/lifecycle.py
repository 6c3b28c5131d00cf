"""One owner for a training stage run, readable top to bottom: setup -> train -> save -> cleanup.

:class:`TrainingRun` holds everything the cpt and sft stages share, over transformers / TRL /
peft / DeepSpeed: the preemption handler, the starting model and tokenizer, TrainingArguments
from the recipe, model loading, the callbacks (throughput, complete-checkpoint markers +
retention, preemption, non-finite guard, loggers), resume from the newest *complete*
checkpoint, the atomic final save (LoRA merged, ``model.dtype``, tokenizer, chat template check)
and the stage metrics. The stages differ only in their data and trainer class, supplied by a
subclass through hooks (:mod:`.cpt_run`: packed rows + ``Trainer``; :mod:`.sft_run`:
conversations + TRL ``SFTTrainer``):

* :meth:`~TrainingRun.build_data`     the training dataset (the tokenizer is known by then)
* :meth:`~TrainingRun.training_args`  ``TrainingArguments`` / ``SFTConfig`` from the shared keyword arguments
* :meth:`~TrainingRun.prepare_base`   changes to the loaded model, redone on the base LoRA adapters merge into
* :meth:`~TrainingRun.make_trainer`   the trainer over the model (and the LoRA config, if any)
* :meth:`~TrainingRun.stage_metrics` / :meth:`~TrainingRun.counts`  what the stage adds to its manifest

Precision: with DeepSpeed the weights are loaded in ``model.dtype`` and DeepSpeed keeps fp32
master weights. Without DeepSpeed, bf16/fp16 recipes load fp32 weights and train with autocast
(mixed precision, fp32 optimizer state); the final model is saved in ``model.dtype``.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..core import distributed
from ..core.artifacts import atomic_write_json
from ..core.stage import StageContext, StageResult
from . import checkpoints, loggers
from .guards import NonFiniteGuard
from .metrics import ThroughputCallback, model_flops_per_token, peak_flops_per_device
from .preemption import Preempted, PreemptionCallback, PreemptionHandler

log = logging.getLogger("astrosage")

CHECKPOINTS_DIR = "checkpoints"
MODEL_DIR = "model"


def hub_revision(ref: str, recipe) -> str | None:
    """``model.revision`` applies to the base model's Hub id only (not to local checkpoints)."""
    return recipe.model.revision if ref == recipe.model.base else None


class LogLastStepCallback(TrainerCallback):
    """Log the loss at the final optimizer step too, so final_loss exists when max_steps < logging_steps."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_log = True
        return control


class TrainingRun(abc.ABC):
    """One training stage run: :meth:`run` is the whole lifecycle; subclasses supply data and trainer."""

    #: named outputs beside ``model`` (relative to the stage folder), e.g. sft's rejected rows
    extra_outputs: dict[str, str] = {}

    def __init__(self, ctx: StageContext, section: Any):
        self.ctx = ctx
        self.recipe = ctx.recipe
        self.section = section
        self.stage = ctx.stage
        self.work_dir = Path(ctx.work_dir)
        self.checkpoint_dir = self.work_dir / CHECKPOINTS_DIR
        self.handler: PreemptionHandler | None = None
        self.preemption: PreemptionCallback | None = None
        self.throughput: ThroughputCallback | None = None
        self.model_path = ""
        self.tokenizer: Any = None
        self.trainer: Any = None

    # ------------------------------------------------------------------ hooks (the stage's part)
    @abc.abstractmethod
    def build_data(self) -> None:
        """Build the training dataset (``self.tokenizer`` and ``self.handler`` are set)."""

    @abc.abstractmethod
    def training_args(self, kwargs: dict[str, Any]) -> Any:
        """The trainer's arguments object from the shared keyword arguments."""

    def prepare_base(self, model) -> None:
        """Change the freshly loaded model before training; redone on the LoRA merge base."""

    @abc.abstractmethod
    def make_trainer(self, model, args, lora) -> Any:
        """The trainer over ``model`` (``lora``: a peft config, or None for a full fine-tune)."""

    def stage_metrics(self) -> dict[str, Any]:
        """Metrics the stage adds to the training metrics."""
        return {}

    def counts(self, metrics: dict[str, Any]) -> dict[str, int]:
        """The stage's counts for its manifest."""
        return {"tokens_trained": metrics["tokens_seen"], "steps": metrics["steps"]}

    # ------------------------------------------------------------------ the lifecycle
    def run(self) -> StageResult:
        """Set up, train (resuming), save the final model, clean up; exit 75 if preempted."""
        with PreemptionHandler() as self.handler:
            self.setup()
            resumed_from = self.train()
            self.save()
            metrics = self.cleanup(resumed_from)
        metrics.update(self.stage_metrics())
        return StageResult(
            outputs={"model": MODEL_DIR, **self.extra_outputs},
            counts=self.counts(metrics),
            metrics=metrics,
            discard=self.discarded(),
        )

    def setup(self) -> None:
        """Model + tokenizer, data, arguments, model, trainer, callbacks."""
        self.model_path, self.tokenizer = self.resolve_model_and_tokenizer()
        self.build_data()
        report_to = loggers.configure(self.recipe.logging, self.work_dir, f"{self.recipe.run.name}-{self.stage}")
        args = self.training_args(self.training_kwargs(report_to))
        model = self.load_model()  # after the arguments: ZeRO-3 needs them first
        self.prepare_base(model)
        self.trainer = self.make_trainer(model, args, self.lora_config())
        self.attach_callbacks()

    def resolve_model_and_tokenizer(self) -> tuple[str, Any]:
        """The stage's starting model (path) and its tokenizer; the main rank builds/downloads first."""
        from transformers import AutoTokenizer

        recipe = self.recipe
        with distributed.main_first():  # the other ranks then reuse the built/downloaded files
            model_path = self.ctx.input_model()
            tokenizer_ref = self.ctx.resolve_model(recipe.model.tokenizer) if recipe.model.tokenizer else model_path
            tokenizer = AutoTokenizer.from_pretrained(
                tokenizer_ref, revision=hub_revision(tokenizer_ref, recipe), trust_remote_code=recipe.model.trust_remote_code
            )
        return model_path, tokenizer

    def training_kwargs(self, report_to: list[str]) -> dict[str, Any]:
        """TrainingArguments keyword arguments shared by Trainer (cpt) and SFTConfig (sft)."""
        import torch

        recipe, section = self.recipe, self.section
        dtype = recipe.model.dtype
        return dict(
            use_cpu=not torch.cuda.is_available(),  # also makes accelerate's CPU multi-process state correct
            output_dir=str(self.checkpoint_dir),
            run_name=f"{recipe.run.name}-{self.stage}",
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

    def load_model(self):
        """The causal LM to train, with the recipe's dtype and attention kernel (no KV cache)."""
        import torch
        from transformers import AutoModelForCausalLM

        recipe, section = self.recipe, self.section
        if section.deepspeed is not None and distributed.world_size() > 1:
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
            self.model_path,
            revision=hub_revision(self.model_path, recipe),
            dtype=dtype,
            attn_implementation=recipe.model.attn_implementation,
            trust_remote_code=recipe.model.trust_remote_code,
        )
        # A KV cache during training would also disable the packed-sequence (per-document) mask.
        model.config.use_cache = False
        return model

    def lora_config(self):
        """peft ``LoraConfig`` from the recipe, or None when LoRA is off."""
        lora = self.section.lora
        if not lora.enabled:
            return None
        from peft import LoraConfig

        return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules, task_type="CAUSAL_LM")

    def attach_callbacks(self) -> None:
        """Our callbacks on ``self.trainer``; throughput goes first so the loggers see tokens/s and MFU."""
        trainer = self.trainer
        flops = model_flops_per_token(trainer.model, self.section.max_seq_len)
        self.throughput = ThroughputCallback(flops, peak_flops_per_device(self.recipe.model.dtype), distributed.world_size())
        self.preemption = PreemptionCallback(self.handler)
        trainer.callback_handler.callbacks.insert(0, self.throughput)
        trainer.add_callback(LogLastStepCallback())
        trainer.add_callback(self.preemption)
        trainer.add_callback(checkpoints.CompleteCheckpointCallback(keep=self.section.save_total_limit))
        trainer.add_callback(NonFiniteGuard(self.stage))  # a NaN/inf loss or weight fails the stage, naming the step

    def train(self) -> Path | None:
        """Train, resuming from the newest complete checkpoint (returned, or None); raise Preempted if signalled."""
        trainer, root = self.trainer, self.checkpoint_dir
        if distributed.is_main():
            checkpoints.remove_incomplete(root)
        distributed.barrier()
        resume = checkpoints.newest_complete(root)
        if resume is not None:
            log.info("resuming from %s", resume)
        if resume is not None and self._is_final(resume):
            # transformers trains one step past max_steps when resumed from the final checkpoint
            # (global_step 4 -> 5 with max_steps=4); load it as Trainer.train would, and train nothing
            from transformers.trainer_callback import TrainerState

            log.info("%s is the final step (max_steps=%d): loading it, nothing left to train", resume, trainer.args.max_steps)
            trainer._load_from_checkpoint(str(resume))
            trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
            return resume
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        if self.preemption.preempted_at is not None:
            self._exit_preempted(self.preemption.preempted_at)
        return resume

    def _is_final(self, checkpoint: Path) -> bool:
        """The checkpoint is at max_steps and can be loaded without an engine (no DeepSpeed)."""
        step = int(checkpoint.name.split("-")[-1])
        max_steps = self.trainer.args.max_steps
        if max_steps <= 0 or step < max_steps:
            return False
        if self.trainer.is_deepspeed_enabled:  # ZeRO shards load only into a DeepSpeed engine, made by train()
            log.warning("%s is the final step; under DeepSpeed transformers trains one extra step on resume", checkpoint)
            return False
        return True

    def _exit_preempted(self, step: int) -> None:
        """Record the preemption checkpoint and raise Preempted (exit 75: requeue and rerun)."""
        ckpt = self.checkpoint_dir / f"checkpoint-{step}"
        if distributed.is_main():
            atomic_write_json(
                self.work_dir / "preempted.json",
                {"step": step, "checkpoint": str(ckpt), "complete": checkpoints.is_complete(ckpt), "signal": self.handler.signal_name},
            )
        loggers.close()
        distributed.barrier()
        raise Preempted(f"preempted at step {step}; checkpoint {ckpt} is complete; rerun the same command to resume")

    def save(self) -> Path:
        """Write ``<work_dir>/model`` atomically: full weights (LoRA merged) in ``model.dtype``, tokenizer, chat template."""
        import torch

        trainer, recipe = self.trainer, self.recipe
        final, tmp = self.work_dir / MODEL_DIR, self.work_dir / f".{MODEL_DIR}.tmp"
        if distributed.is_main():
            shutil.rmtree(tmp, ignore_errors=True)
        distributed.barrier()
        if self.section.lora.enabled:
            adapter = self.work_dir / "adapter"
            trainer.save_model(str(adapter))  # collective under DeepSpeed
            if distributed.is_main():
                self._merge_adapter(adapter, tmp)
        else:
            unwrapped = trainer.accelerator.unwrap_model(trainer.model)
            unwrapped.config.use_cache = True  # the saved model generates with a cache
            if self.section.deepspeed is None and recipe.model.dtype in ("bfloat16", "float16"):
                trainer.model.to(getattr(torch, recipe.model.dtype))  # trained with fp32 masters; save in model.dtype
            trainer.save_model(str(tmp))  # gathers ZeRO-3 shards; writes safetensors + config + generation config
        if distributed.is_main():
            with contextlib.suppress(FileNotFoundError):
                (tmp / "training_args.bin").unlink()  # a pickle; the manifest records the recipe instead
            self.tokenizer.save_pretrained(str(tmp))
            from .chat import verify_saved

            verify_saved(tmp, self.tokenizer)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        distributed.barrier()
        return final

    def _merge_adapter(self, adapter: Path, out: Path) -> None:
        """The base model, prepared as before training, with the trained adapter merged in, saved to ``out``."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        dtype = getattr(torch, self.recipe.model.dtype) if self.recipe.model.dtype != "auto" else "auto"
        base = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
        self.prepare_base(base)  # the frozen rows the adapter was trained against
        PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().save_pretrained(str(out))

    def cleanup(self, resumed_from: Path | None) -> dict[str, Any]:
        """Training metrics; close the loggers; copy trainer_state.json out (checkpoints go after the seal)."""
        state = self.trainer.state
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        metrics: dict[str, Any] = {
            "final_loss": losses[-1] if losses else None,
            "first_loss": losses[0] if losses else None,
            "steps": state.global_step,
            "tokens_seen": int(state.num_input_tokens_seen),
        }
        if self.throughput is not None:
            metrics.update(self.throughput.summary)
        train_losses = [h for h in state.log_history if "train_loss" in h]
        if train_losses:
            metrics["mean_train_loss"] = train_losses[-1]["train_loss"]
        metrics["resumed_from_step"] = int(resumed_from.name.split("-")[-1]) if resumed_from else 0
        loggers.close()
        if distributed.is_main():
            atomic_write_json(self.work_dir / "trainer_state.json", json.loads(json.dumps(dataclasses.asdict(state), default=str)))
            with contextlib.suppress(FileNotFoundError):
                (self.work_dir / "preempted.json").unlink()
        distributed.barrier()
        return metrics

    def discarded(self) -> tuple[str, ...]:
        """What the runner deletes once the stage is sealed: the checkpoints, unless kept."""
        return () if self.section.keep_checkpoints else (CHECKPOINTS_DIR,)
