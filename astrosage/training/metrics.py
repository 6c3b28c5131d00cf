"""Throughput metrics in the training logs: tokens/s (global and per device) and MFU.

MFU = achieved model FLOP/s / peak FLOP/s of the devices. Model FLOPs per token follow the
PaLM appendix convention: ``6 * N`` (N = non-embedding parameters; forward + backward) plus
``12 * n_layers * d_model * seq_len`` for attention (an upper bound for packed rows, where each
token attends only within its document). Peak FLOP/s come from a table of known accelerators
(dense bf16/fp16 tensor-core numbers); on unknown devices (e.g. CPUs) MFU is left out unless
``ASTROSAGE_PEAK_TFLOPS`` gives the per-device peak.
"""

from __future__ import annotations

import os
import time

from transformers import TrainerCallback

#: Dense bf16/fp16 peak TFLOP/s per device, matched against torch.cuda.get_device_name().
PEAK_TFLOPS_BF16 = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "A6000": 155.0,
    "V100": 125.0,
    "MI300X": 1307.0,
    "MI250X": 383.0,
}


def peak_flops_per_device(dtype: str = "bfloat16") -> float | None:
    """Peak FLOP/s of one device, or None when unknown (CPU, unlisted GPU, fp32 training)."""
    override = os.environ.get("ASTROSAGE_PEAK_TFLOPS")
    if override:
        return float(override) * 1e12
    import torch

    if dtype not in ("bfloat16", "float16") or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key in sorted(PEAK_TFLOPS_BF16, key=len, reverse=True):  # most specific first
        if key in name:
            return PEAK_TFLOPS_BF16[key] * 1e12
    return None


def model_flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6 * non-embedding params + attention (see module docstring)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    total = 0
    embedding = 0
    for name, param in model.named_parameters():
        n = param.ds_numel if hasattr(param, "ds_numel") else param.numel()  # ZeRO-3 partitions params
        total += n
        if "embed_tokens" in name or name.endswith("wte.weight"):
            embedding += n
    layers = getattr(config, "num_hidden_layers", 0)
    hidden = getattr(config, "hidden_size", 0)
    return 6.0 * (total - embedding) + 12.0 * layers * hidden * seq_len


class ThroughputCallback(TrainerCallback):
    """Adds ``tokens_per_s``, ``tokens_per_s_per_device`` and ``mfu`` to every training log.

    Tokens come from ``state.num_input_tokens_seen`` (the Trainer gathers it over ranks), so the
    numbers are global. Insert it *first* in the callback list so loggers see the values.
    """

    def __init__(self, flops_per_token: float | None, peak_flops: float | None, world_size: int):
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.world_size = max(1, world_size)
        self._t0 = self._t_last = None
        self._tokens0 = self._tokens_last = 0
        self.summary: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._t_last = time.perf_counter()
        self._tokens0 = self._tokens_last = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or self._t_last is None or "loss" not in logs:
            return
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen
        dt = now - self._t_last
        if dt > 0 and tokens > self._tokens_last:
            rate = (tokens - self._tokens_last) / dt
            logs["tokens_per_s"] = round(rate, 2)
            logs["tokens_per_s_per_device"] = round(rate / self.world_size, 2)
            if self.flops_per_token and self.peak_flops:
                logs["mfu"] = round(rate * self.flops_per_token / (self.peak_flops * self.world_size), 5)
        self._t_last, self._tokens_last = now, tokens

    def on_train_end(self, args, state, control, **kwargs):
        if self._t0 is None:
            return
        elapsed = time.perf_counter() - self._t0
        tokens = state.num_input_tokens_seen - self._tokens0
        self.summary = {"train_seconds": round(elapsed, 3), "tokens_this_session": int(tokens)}
        if elapsed > 0:
            rate = tokens / elapsed
            self.summary["tokens_per_s"] = round(rate, 2)
            if self.flops_per_token and self.peak_flops:
                self.summary["mfu"] = round(rate * self.flops_per_token / (self.peak_flops * self.world_size), 5)
