"""Training throughput on CPU, as ratios against named baselines run in the same process.

    python bench/train.py [--steps 12] [--shape tiny|llama-100m] [--out /tmp/astrosage-bench]

Model: ``--shape tiny`` (default) is a tiny-but-not-trivial Llama (4 layers, d=256, 4 heads, ffn 688,
the tiny tokenizer's 1024-token vocabulary); ``--shape llama-100m`` is SmolLM-135M's shape (30 layers,
d=576, 49,152-token vocabulary; bench/shapes.py). Random weights, float32, sdpa. Three measurements:

(a) SFT: TRL SFTTrainer with padding-free "bfd" packing (what the sft stage runs) vs TRL
    without packing, padding each batch to its longest conversation. Same conversations, whose
    lengths follow a synth-like long-tailed distribution. Tokens/s counts real (non-padding)
    tokens only. Target: >= 2x.
(b) CPT: the cpt stage itself (run manager -> Trainer + our callbacks + packed collator) vs a
    bare PyTorch loop (AdamW, cosine schedule, grad clipping) over the same packed rows and
    batch size. Target: >= 0.9x (framework overhead <= 10%).
(c) SFT: padding fraction of the batches each configuration feeds the model (CPT's packed rows hold
    document tokens only, by construction: there is no padding to measure, and none is printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ARCH = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=4096, rope_theta=500_000.0, tie_word_embeddings=False)


def build_model(out: Path, shape: str = "tiny") -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from astrosage.core.tiny import build_tiny_model, build_tiny_tokenizer

    if (out / "config.json").exists():
        return out
    if shape != "tiny":
        from bench.shapes import save_model

        return save_model(shape, out)
    build_tiny_model(out, "base", seed=0)  # tokenizer, chat template, generation config
    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **ARCH)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def sft_conversations(n: int, seed: int = 0) -> list[dict]:
    """Synth-like QA: short questions, answers of long-tailed length (lognormal, ~60-900 tokens)."""
    rows = [json.loads(line) for line in open(REPO / "examples/sft_sample/astro_qa_sample.jsonl")]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rows[i % len(rows)]["messages"]
        user = next(m["content"] for m in r if m["role"] == "user")
        answer = r[-1]["content"]
        repeat = max(1, min(12, int(rng.lognormvariate(0.6, 0.8))))
        out.append({"messages": [{"role": "user", "content": user},
                                 {"role": "assistant", "content": " ".join([answer] * repeat)}]})
    return out


def bench_sft(model_dir: Path, steps: int, work: Path, *, max_length: int = 1024, padded_batch: int = 8,
              dtype: str = "float32", attn: str = "sdpa", n_conversations: int = 400) -> dict:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ds = datasets.Dataset.from_list(sft_conversations(n_conversations))
    results = {}
    bf16 = dtype == "bfloat16"
    # same token budget per step: the padded batch's conversations average ~max_length/4 tokens
    from astrosage.training.packing import register_packed_sdpa

    configs = [("trl_padded", False, padded_batch, attn), ("packed_bfd", True, max(1, padded_batch // 4), attn)]
    if attn == "sdpa":  # + attention per document block instead of the [L, L] block-diagonal mask
        configs.append(("packed_bfd_docattn", True, max(1, padded_batch // 4), register_packed_sdpa()))
    for name, packed, batch, impl in configs:
        args = SFTConfig(output_dir=str(work / name), max_length=max_length, packing=packed, packing_strategy="bfd",
                         padding_free=packed, assistant_only_loss=True, per_device_train_batch_size=batch,
                         max_steps=steps, learning_rate=1e-4, report_to=[], use_cpu=not torch.cuda.is_available(), bf16=bf16,
                         activation_checkpointing=False, logging_steps=1000, save_strategy="no",
                         include_num_input_tokens_seen="non_padding", seed=0, disable_tqdm=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=impl)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        counts = {"real": 0, "total": 0}
        loader = trainer.get_train_dataloader()
        for i, b in enumerate(loader):  # padding of the batches this configuration feeds the model
            if i >= steps:
                break
            total = b["input_ids"].numel()
            real = int(b["attention_mask"].sum()) if "attention_mask" in b else int((b["input_ids"] != tok.pad_token_id).sum())
            counts["real"] += real
            counts["total"] += total
        t0 = time.perf_counter()
        out = trainer.train()
        wall = time.perf_counter() - t0
        tokens = trainer.state.num_input_tokens_seen
        results[name] = {"tokens_per_s": tokens / out.metrics["train_runtime"], "tokens": tokens, "wall_s": wall,
                         "padding_fraction": 1 - counts["real"] / counts["total"]}
    return results


def cpt_corpus(path: Path, n_docs: int = 1500, paras_per_doc: tuple[int, int] = (1, 4)) -> Path:
    paras = [json.loads(line)["text"] for line in open(REPO / "examples/cpt_sample/astro_text_sample.jsonl")]
    rng = random.Random(0)
    with path.open("w") as fh:
        for i in range(n_docs):
            k = rng.randint(*paras_per_doc)
            fh.write(json.dumps({"text": " ".join(rng.choice(paras) for _ in range(k))}) + "\n")
    return path


def bench_cpt(model_dir: Path, steps: int, work: Path, seq_len: int = 512, batch: int = 4, *, dtype: str = "float32",
              attn: str = "sdpa", n_docs: int = 1500, paras_per_doc: tuple[int, int] = (1, 4)) -> dict:
    """The cpt stage vs a bare loop on the same packed rows. bfloat16 = autocast with fp32 master weights (as the stage)."""
    from astrosage.core.recipe import load_recipe_dict
    from astrosage.runner import RunManager
    from astrosage.training.packing import PackedCollator, PackedDataset

    work.mkdir(parents=True, exist_ok=True)
    corpus = cpt_corpus(work / "corpus.jsonl", n_docs, paras_per_doc)
    recipe = load_recipe_dict({
        "run": {"name": "bench", "output_dir": str(work / "runs"), "seed": 0},
        "model": {"base": str(model_dir), "dtype": dtype, "attn_implementation": attn},
        "corpus": {"enabled": False}, "synth": {"enabled": False}, "sft": {"enabled": False},
        "merge": {"enabled": False}, "eval": {"enabled": False}, "publish": {"enabled": False},
        "cpt": {"dataset": str(corpus), "max_seq_len": seq_len, "per_device_batch_size": batch, "max_steps": steps,
                "learning_rate": 1e-4, "gradient_checkpointing": False, "save_steps": 10_000, "logging_steps": 1000,
                "warmup_ratio": 0.0},
    })
    RunManager(recipe).run(["cpt"], force=True)
    manifest = json.loads((work / "runs" / "bench" / "cpt" / "manifest.json").read_text())
    stage_tps = manifest["metrics"]["tokens_per_s"]

    # bare loop: same packed rows (from the stage's tokenization cache), same batch size, same optimizer
    from transformers import AutoModelForCausalLM

    cache = next((work / "runs" / "bench" / "tokenized.cache").iterdir())
    shards = sorted(p for p in cache.iterdir() if p.is_dir())
    data = PackedDataset(shards, seq_len)
    collate = PackedCollator(flatten=attn.startswith("flash_attention"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn).to(device)
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    tokens = 0
    t0 = time.perf_counter()
    for step in range(steps):
        idx = [order[(step * batch + j) % len(order)] for j in range(batch)]
        b = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in collate([data[i] for i in idx]).items()}
        with autocast:
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += b["input_ids"].numel()
    sync()
    bare_tps = tokens / (time.perf_counter() - t0)
    return {"stage": {"tokens_per_s": stage_tps}, "bare_loop": {"tokens_per_s": bare_tps}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip-cpt", action="store_true", help="SFT only")
    parser.add_argument("--shape", default="tiny", help="tiny | llama-100m (bench/shapes.py)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "astrosage-bench-train")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    from bench.shapes import describe, machine

    model_dir = build_model(args.out / ("model-4x256" if args.shape == "tiny" else f"model-{args.shape}"), args.shape)
    label = "4 layers x d=256, 1,024-token vocab" if args.shape == "tiny" else describe(args.shape)
    print(f"torch {torch.__version__}; model {label} (float32, sdpa); machine: {machine()}")
    sft = bench_sft(model_dir, args.steps, args.out / "sft")
    print("sft:", json.dumps(sft), flush=True)
    if args.skip_cpt:
        cpt = None
    else:
        cpt = bench_cpt(model_dir, args.steps, args.out / "cpt")
    print("cpt:", json.dumps(cpt), flush=True)
    rows = [
        ("(a) SFT", "TRL unpacked, padded", sft["trl_padded"], "packed (bfd, padding-free), sdpa mask", sft["packed_bfd"], 2.0),
        ("(a') SFT", "TRL unpacked, padded", sft["trl_padded"], "packed + per-document attention", sft["packed_bfd_docattn"], 2.0),
    ]
    if cpt:
        rows.append(("(b) CPT", "bare PyTorch loop", cpt["bare_loop"], "astrosage cpt stage (Trainer)", cpt["stage"], 0.9))
    pad = sft["trl_padded"]["padding_fraction"]
    print(f"padded baseline: {pad:.1%} of its tokens are padding, so packing can at most give {1 / (1 - pad):.2f}x "
          "where compute is proportional to tokens fed (attention over longer packed rows costs more per token)")
    print()
    print(f"{'bench':<8} {'baseline':<24} {'tok/s':>9} {'pad':>6} | {'astrosage':<38} {'tok/s':>9} {'pad':>6} | {'ratio':>6} {'target':>7}")
    for label, bname, base, oname, ours, target in rows:
        ratio = ours["tokens_per_s"] / base["tokens_per_s"]
        ok = "ok" if ratio >= target else "MISS"
        print(f"{label:<8} {bname:<24} {base['tokens_per_s']:>9.0f} {_padding(base):>6} | "
              f"{oname:<38} {ours['tokens_per_s']:>9.0f} {_padding(ours):>6} | {ratio:>5.2f}x {'>=' + str(target) + 'x':>6} {ok}")


def _padding(result: dict) -> str:
    """The measured padding fraction, or "-" where none was measured (CPT's packed rows)."""
    return f"{result['padding_fraction']:.1%}" if "padding_fraction" in result else "-"


if __name__ == "__main__":
    main()
