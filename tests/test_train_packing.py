"""CPT data path: document-masked packing (loss and attention), cached resumable tokenization, mixing.

What the loss test compares, exactly: for packed rows built from whole and split documents,
the model's loss on the packed batch (mean over every token that has a label) equals the
token-weighted mean of the per-segment losses computed one segment at a time, unpacked:
    sum_i (n_i - 1) * loss_i / sum_i (n_i - 1)
where segment i has n_i tokens and loss_i is the mean next-token loss over its n_i - 1 targets.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from astrosage.training.packing import IGNORE_INDEX, PackedCollator, PackedDataset, pack_documents
from astrosage.training.tokenize import TokenizationInterrupted, cache_key, tokenize_to_cache

SAMPLE = "examples/cpt_sample/astro_text_sample.jsonl"


def _docs(tokenizer, n: int) -> list[list[int]]:
    rows = [json.loads(line)["text"] for line in open(SAMPLE)][:n]
    return [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in rows]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    models = {
        impl: AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32, attn_implementation=impl).eval()
        for impl in ("sdpa", "eager")
    }
    for m in models.values():
        m.config.use_cache = False  # as the training loader sets it: a KV cache disables the per-document mask
    return models, tok


def _segments(position_ids: np.ndarray) -> list[tuple[int, int]]:
    starts = list(np.flatnonzero(position_ids == 0)) + [len(position_ids)]
    return [(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_packed_loss_is_token_weighted_mean_of_per_document_losses(model_and_tokenizer, impl):
    models, tok = model_and_tokenizer
    model = models[impl]
    ids, pos = pack_documents(_docs(tok, 6), seq_len=96)  # documents are split across rows too
    assert ids.shape[0] >= 3
    batch = PackedCollator()([{"input_ids": i, "position_ids": p} for i, p in zip(ids, pos)])
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed_loss = model(**batch).loss.item()
        total, count = 0.0, 0
        for row_ids, row_pos in zip(ids, pos):
            for a, b in _segments(row_pos):
                if b - a < 2:
                    continue
                seg = torch.as_tensor(row_ids[a:b]).unsqueeze(0)
                loss = model(input_ids=seg, labels=seg).loss.item()
                total += loss * (b - a - 1)
                count += b - a - 1
    # every labelled token of the packed batch is a predicted token of one segment (row starts have no target)
    assert int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) == count
    assert abs(packed_loss - total / count) < 1e-5, (packed_loss, total / count)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_no_attention_across_documents(model_and_tokenizer, impl):
    models, tok = model_and_tokenizer
    model = models[impl]
    docs = _docs(tok, 3)
    docs = [d[:30] for d in docs]  # three whole documents in one row of 90 tokens
    ids, pos = pack_documents(docs, seq_len=90)
    assert ids.shape == (1, 90)
    perturbed = ids.copy()
    perturbed[0, 1:30] = (perturbed[0, 1:30] + 17) % len(tok)  # change document 0 only
    with torch.no_grad():
        a = model(input_ids=torch.as_tensor(ids), position_ids=torch.as_tensor(pos)).logits
        b = model(input_ids=torch.as_tensor(perturbed), position_ids=torch.as_tensor(pos)).logits
        leaky = model(input_ids=torch.as_tensor(perturbed), position_ids=torch.as_tensor(pos), use_cache=True).logits
    assert not torch.allclose(a[0, :30], b[0, :30])  # the perturbed document did change
    torch.testing.assert_close(a[0, 30:], b[0, 30:], rtol=0, atol=1e-6)  # the others did not
    # why the loader sets use_cache=False: with a KV cache transformers drops the per-document mask
    assert not torch.allclose(leaky[0, 30:], b[0, 30:])


def test_labels_mask_each_document_start_and_rows_have_no_padding(model_and_tokenizer):
    _, tok = model_and_tokenizer
    ids, pos = pack_documents(_docs(tok, 8), seq_len=64)
    batch = PackedCollator()([{"input_ids": i, "position_ids": p} for i, p in zip(ids, pos)])
    assert batch["input_ids"].shape == (ids.shape[0], 64)
    assert not (batch["input_ids"] == tok.pad_token_id).any()  # zero padding tokens
    starts = batch["position_ids"] == 0
    assert (batch["labels"][starts] == IGNORE_INDEX).all()
    assert (batch["labels"][~starts] == batch["input_ids"][~starts]).all()
    flat = PackedCollator(flatten=True)([{"input_ids": i, "position_ids": p} for i, p in zip(ids, pos)])
    assert flat["input_ids"].shape == (1, ids.size)


def test_tokenization_is_cached_and_resumes_after_interruption(model_and_tokenizer, tmp_path):
    import datasets

    _, tok = model_and_tokenizer
    ds = datasets.load_dataset("json", data_files=SAMPLE, split="train")
    root = tmp_path / "tokenized.cache" / cache_key("fp", tok, 8)
    polls = iter([False, False, True])
    with pytest.raises(TokenizationInterrupted):
        tokenize_to_cache(ds, "text", tok, root, shard_docs=8, should_stop=lambda: next(polls))
    assert sorted(p.name for p in root.iterdir()) == ["shard-00000", "shard-00001"]  # finished shards kept, no meta
    resumed = tokenize_to_cache(ds, "text", tok, root, shard_docs=8)
    assert resumed.written == 3 and len(resumed.shards) == 5  # only the missing shards were tokenized
    again = tokenize_to_cache(ds, "text", tok, root, shard_docs=8)
    assert again.written == 0 and again.n_tokens == resumed.n_tokens and again.n_docs == 40
    # the memory-mapped dataset gives exactly the in-memory packing of the same documents
    packed = PackedDataset(again.shards, 128)
    ids, pos = pack_documents(_docs(tok, 40), 128)
    assert len(packed) == ids.shape[0]
    for r in (0, len(packed) // 2, len(packed) - 1):
        assert (packed[r]["input_ids"] == ids[r]).all() and (packed[r]["position_ids"] == pos[r]).all()
    assert packed.dropped_tokens < 128
    # the shard size and the data define the cache; the sequence length does not (packing comes later)
    assert cache_key("fp", tok, 16) != cache_key("fp", tok, 8) and cache_key("other", tok, 8) != cache_key("fp", tok, 8)


def test_weighted_mix_counts_and_determinism(tmp_path):
    import datasets

    from astrosage.training.data import DataError, load_records, mix

    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps({"text": f"general {i}", "other": i}) + "\n" for i in range(7)))
    domain = load_records(SAMPLE)
    mixed = mix(domain, [(load_records(general), 0.5)], seed=3, columns=["text"])
    assert len(mixed) == 40 + 20  # weight 0.5 of 40 domain docs, cycling through the 7 general docs
    assert sum(t.startswith("general") for t in mixed["text"]) == 20
    assert mixed["text"] == mix(domain, [(load_records(general), 0.5)], seed=3, columns=["text"])["text"]
    with pytest.raises(DataError, match="does not exist"):
        load_records(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="no column"):
        mix(domain, [(datasets.Dataset.from_dict({"x": [1]}), 1.0)], seed=0, columns=["text"])


def test_tokenization_num_proc_gives_the_same_bytes_and_resumes(model_and_tokenizer, tmp_path):
    """A process pool over shards (cpt.num_proc) writes byte-identical shards to one process, and resumes the same way."""
    import datasets

    _, tok = model_and_tokenizer
    ds = datasets.load_dataset("json", data_files=SAMPLE, split="train")
    one = tokenize_to_cache(ds, "text", tok, tmp_path / "one", shard_docs=8)
    polls = iter([False, True])
    with pytest.raises(TokenizationInterrupted):  # a round is num_proc shards: 2 done before the stop
        tokenize_to_cache(ds, "text", tok, tmp_path / "two", shard_docs=8, num_proc=2, should_stop=lambda: next(polls))
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["shard-00000", "shard-00001"]
    two = tokenize_to_cache(ds, "text", tok, tmp_path / "two", shard_docs=8, num_proc=2)
    assert two.written == 3 and len(two.shards) == len(one.shards) == 5
    for a, b in zip(one.shards, two.shards):
        for name in ("tokens.npy", "lens.npy"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (a.name, name)


def test_per_document_attention_matches_the_block_diagonal_mask(model_and_tokenizer):
    """attn_implementation="sdpa_packed": same logits, loss and gradients as sdpa's block-diagonal mask, [B, L] and [1, B*L]."""
    from astrosage.training.packing import register_packed_sdpa

    models, tok = model_and_tokenizer
    model = models["sdpa"]
    name = register_packed_sdpa()
    ids, pos = pack_documents(_docs(tok, 40), 96)
    rows = [{"input_ids": i, "position_ids": p} for i, p in zip(ids[:4], pos[:4])]
    assert sum(int((p == 0).sum()) for p in pos[:4]) > 4, "the rows must hold several documents each"
    impl = model.config._attn_implementation
    model.train()
    try:
        for flatten in (False, True):
            batch = PackedCollator(flatten=flatten)(rows)
            got = {}
            for attn in (impl, name):
                model.config._attn_implementation = attn
                model.zero_grad()
                out = model(**batch)
                out.loss.backward()
                got[attn] = (out.logits.detach(), out.loss.item(), model.model.layers[0].self_attn.q_proj.weight.grad.clone())
            (la, sa, ga), (lb, sb, gb) = got[impl], got[name]
            assert torch.allclose(la, lb, atol=1e-4), (flatten, (la - lb).abs().max())
            assert sa == pytest.approx(sb, rel=1e-5)
            assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-3)
        # a padded batch with a real attention mask goes through transformers' own sdpa (same logits as sdpa)
        model.eval()
        padded = torch.tensor([[5, 6, 7, 8], [5, 6, tok.pad_token_id, tok.pad_token_id]])
        mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
        with torch.no_grad():
            model.config._attn_implementation = impl
            ref = model(input_ids=padded, attention_mask=mask, use_cache=False).logits
            model.config._attn_implementation = name
            mine = model(input_ids=padded, attention_mask=mask, use_cache=False).logits
        assert torch.allclose(ref, mine, atol=1e-5)
    finally:
        model.config._attn_implementation = impl
        model.zero_grad()
        model.eval()
