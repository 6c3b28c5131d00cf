"""The GPU check: training and eval throughput on one GPU, as ratios against named baselines. Run it via
``bench/gpu_check.sh`` (which makes the venv); ``--dry-run`` runs the same code on CPU with tiny shapes.

1. dense bf16 matmul peak, measured (and the device's nominal dense bf16 peak where known);
2. CPT: the cpt stage (Trainer + callbacks + packed collator) on a Llama-3.2-1B-shaped random model,
   bf16 autocast, rows of 4,096 and 8,192 tokens, sdpa and flash-attention-2 (when ``flash_attn``
   imports) -> tokens/s/GPU and MFU, against a bare PyTorch loop on the same rows. MFU formula:
   (6*N*tokens + 6*layers*d_attn*seq*tokens) / (seconds * peak): N = non-embedding parameters (the
   LM head counted), the second term the causal attention matmuls (QK^T and AV, forward + backward,
   half of the seq x seq square);
3. SFT: TRL padding-free packing (bfd) vs padded batches, tokens/s of real tokens;
4. eval `letter` questions/s vs lm-eval's ``simple_evaluate`` on the same model, float32 with TF32 off
   (identical predictions checked: in bf16 two correct scorers already differ on near-ties);
5. vLLM generation tokens/s (when ``vllm`` imports).

Writes ``gpu_check.json`` in ``--out`` and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: nominal dense (non-sparse) bf16 tensor-core peaks, FLOP/s
NOMINAL_BF16 = {"H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12,
                "H100": 989e12, "A100": 312e12, "L40S": 362e12}


def nominal_peak(name: str) -> float | None:
    for key in sorted(NOMINAL_BF16, key=len, reverse=True):
        if key in name:
            return NOMINAL_BF16[key]
    return None


def train_flops_per_token(model_dir: Path, seq_len: int) -> tuple[float, str]:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    d, layers, v = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or d // heads
    per_layer = d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * cfg.intermediate_size
    n = layers * per_layer + d * v  # + LM head (a matmul even when tied)
    attn = 6 * layers * heads * hd * seq_len
    return 6.0 * n + attn, f"6*N + 6*layers*d_attn*seq = 6*{n:,} + 6*{layers}*{heads * hd}*{seq_len} FLOPs/token"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, a few steps: checks the code, not the speed")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "astrosage-gpu-check")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--skip", nargs="*", default=[], help="sections to skip: cpt sft eval vllm")
    args = parser.parse_args(argv)

    import torch

    from bench import shapes
    from bench.train import bench_cpt, bench_sft

    dry = args.dry_run
    cuda = torch.cuda.is_available() and not dry
    if not cuda and not dry:
        print("no CUDA device: run with --dry-run on CPU", file=sys.stderr)
        sys.exit(2)
    if dry:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    shape = "llama-micro" if dry else "llama-1b"
    steps = args.steps or (2 if dry else 12)
    seqs = [256, 512] if dry else [4096, 8192]
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name(0) if cuda else "CPU (dry run)"
    report: dict = {"device": name, "shape": shapes.describe(shape), "dry_run": dry, "torch": torch.__version__, "sections": {}}
    print(f"gpu check on {name}; {report['shape']}; torch {torch.__version__}", flush=True)

    # 1. peak
    peak = shapes.matmul_peak("bfloat16", n=256 if dry else 8192, seconds=0.3 if dry else 3.0, device=device)
    nominal = nominal_peak(name) if cuda else None
    ref_peak = nominal or peak
    report["peak"] = {"measured_bf16": peak, "nominal_bf16": nominal, "mfu_against": "nominal" if nominal else "measured"}
    print(f"bf16 dense matmul: measured {peak / 1e12:.1f} TFLOP/s; nominal {nominal / 1e12 if nominal else float('nan'):.0f} TFLOP/s; "
          f"MFU below is against the {'nominal' if nominal else 'measured'} peak", flush=True)

    model_dir = shapes.save_model(shape, out / f"model-{shape}")
    attns = ["sdpa"]
    try:
        import flash_attn  # noqa: F401

        if cuda:
            attns.append("flash_attention_2")
    except ImportError:
        print("flash-attn not installed: sdpa only", flush=True)
    rows = []

    def section(key: str, fn):
        if key in args.skip:
            return
        t0 = time.perf_counter()
        try:
            report["sections"][key] = fn()
        except Exception as exc:  # one failing section must not hide the others
            traceback.print_exc()
            report["sections"][key] = {"error": f"{type(exc).__name__}: {exc}"}
        report["sections"].setdefault(key, {})["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[{key}] {json.dumps(report['sections'][key])}", flush=True)

    # 2. CPT
    def cpt():
        res = {}
        for attn in attns:
            for seq in seqs:
                r = bench_cpt(model_dir, steps, out / f"cpt-{attn}-{seq}", seq_len=seq, batch=1, dtype="bfloat16", attn=attn,
                              n_docs=64 if dry else 400, paras_per_doc=(20, 60) if not dry else (2, 6))
                fpt, formula = train_flops_per_token(model_dir, seq)
                for who in ("stage", "bare_loop"):
                    r[who]["mfu"] = r[who]["tokens_per_s"] * fpt / ref_peak
                r["ratio"] = r["stage"]["tokens_per_s"] / r["bare_loop"]["tokens_per_s"]
                r["flops_per_token"], r["formula"] = fpt, formula
                res[f"{attn}@{seq}"] = r
                rows.append((f"CPT {attn} seq {seq}", "bare torch loop", r["bare_loop"]["tokens_per_s"],
                             r["stage"]["tokens_per_s"], r["ratio"], f"MFU {r['stage']['mfu']:.1%} (bare {r['bare_loop']['mfu']:.1%})"))
        return res

    section("cpt", cpt)

    # 3. SFT
    def sft():
        res = {}
        for attn in attns:
            r = bench_sft(model_dir, steps, out / f"sft-{attn}", max_length=512 if dry else 4096,
                          padded_batch=4 if dry else 16, dtype="bfloat16", attn=attn, n_conversations=64 if dry else 800)
            r["ratio"] = r["packed_bfd"]["tokens_per_s"] / r["trl_padded"]["tokens_per_s"]
            res[attn] = r
            rows.append((f"SFT {attn}", "TRL padded", r["trl_padded"]["tokens_per_s"], r["packed_bfd"]["tokens_per_s"], r["ratio"],
                         f"padding {r['trl_padded']['padding_fraction']:.0%} -> {r['packed_bfd']['padding_fraction']:.0%}"))
        return res

    section("sft", sft)

    # 4. eval letter
    def ev():
        from bench.eval import PUBLIC, SAMPLE, compare
        from eval.modeling import load_model

        # float32 (TF32 off): in bf16 two correct scorers already disagree on the near-ties of a random-weights
        # model (batch shapes change the rounding), so identical predictions are checked where they are defined
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        lm = load_model(str(model_dir), "float32")
        r = compare(lm, str(PUBLIC if PUBLIC.exists() else SAMPLE), 16 if dry else 1000, 8 if dry else 64, 1 if dry else 2,
                    dtype="float32", title=f"{shape} float32")
        rows.append(("eval letter", "lm-eval simple_evaluate", r["lm_eval_q_per_s"], r["ours_q_per_s"], r["ratio"],
                     f"identical {r['same']}/{r['n']} (q/s)"))
        return r

    section("eval", ev)

    # 5. vLLM
    def vllm():
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            return {"skipped": "vllm not installed"}
        llm = LLM(model=str(model_dir), dtype="bfloat16", gpu_memory_utilization=0.5, seed=0)
        prompts = [f"Question {i}: what sets the Eddington luminosity of an accreting black hole?" for i in range(256)]
        params = SamplingParams(max_tokens=256, temperature=0.8, ignore_eos=True, seed=0)
        llm.generate(prompts[:8], params)
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params)
        wall = time.perf_counter() - t0
        toks = sum(len(o.outputs[0].token_ids) for o in outs)
        rows.append(("vLLM generate", "-", float("nan"), toks / wall, float("nan"), f"{len(prompts)} prompts x 256 new tokens"))
        return {"tokens_per_s": toks / wall, "prompts": len(prompts)}

    if not dry:
        section("vllm", vllm)

    print()
    print(f"{'check':<26} {'baseline':<24} {'base/s':>10} {'astrosage/s':>12} {'ratio':>6}  note")
    for label, base, b, o, ratio, note in rows:
        print(f"{label:<26} {base:<24} {b:>10.1f} {o:>12.1f} {ratio:>5.2f}x  {note}")
    ran = [k for k in ("cpt", "sft", "eval", "vllm") if k not in args.skip]
    path = out / ("gpu_check.json" if not args.skip else f"gpu_check-{'-'.join(ran)}.json")
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {path}")
    return report


if __name__ == "__main__":
    main()
