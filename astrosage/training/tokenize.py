"""Cached, resumable tokenization of plain-text documents (the CPT corpus).

Tokenization is its own step with its own cache, outside the stage folder, so it is reused by
every run (and rerun) that trains on the same data with the same tokenizer:

    <run_dir>/tokenized.cache/<key>/
        shard-00000/tokens.npy   int32, the documents' token ids back to back
        shard-00000/lens.npy     int64, token count of each document
        ...
        meta.json                written last: the cache is complete

``key`` hashes the data fingerprint, the tokenizer, ``max_seq_len``, the shard size and the
format version. Each shard is written to a temp folder and renamed into place, so a killed
tokenization keeps every finished shard and resumes with the next one. Under several ranks,
rank ``r`` tokenizes shards ``r, r + world, ...`` and the ranks check for preemption together
after every round. Every document is ``tokenizer(text)`` (BOS when the tokenizer adds one)
followed by EOS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import atomic_write_json

log = logging.getLogger("astrosage")

FORMAT_VERSION = 1
META_NAME = "meta.json"


def tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update(f"bos={tokenizer.bos_token_id},eos={tokenizer.eos_token_id}".encode())
    return h.hexdigest()


def cache_key(data_fingerprint: str, tokenizer, max_seq_len: int, shard_docs: int) -> str:
    payload = f"v{FORMAT_VERSION}|{data_fingerprint}|{tokenizer_fingerprint(tokenizer)}|L={max_seq_len}|shard={shard_docs}"
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass
class TokenizedCorpus:
    """A complete tokenization cache: shard folders + totals."""

    root: Path
    shards: list[Path]
    n_docs: int
    n_tokens: int
    #: shards tokenized by this call on this rank (0 when everything came from the cache)
    written: int = 0

    @classmethod
    def open(cls, root: Path, written: int = 0) -> "TokenizedCorpus":
        meta = json.loads((root / META_NAME).read_text())
        return cls(root, [root / name for name in meta["shards"]], meta["n_docs"], meta["n_tokens"], written)


class TokenizationInterrupted(RuntimeError):
    """A stop was requested between shards (preemption); finished shards are kept."""


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _tokenize_shard(texts: list[str], tokenizer, out: Path) -> tuple[int, int]:
    """Tokenize one shard into ``out`` (atomically: temp folder + rename). Returns (docs, tokens)."""
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    eos = tokenizer.eos_token_id
    ids_list = tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
    lens = np.empty(len(ids_list), dtype=np.int64)
    chunks = []
    for i, ids in enumerate(ids_list):
        if eos is not None and (not ids or ids[-1] != eos):
            ids = [*ids, eos]
        lens[i] = len(ids)
        chunks.append(np.asarray(ids, dtype=np.int32))
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        np.save(tmp / "tokens.npy", tokens)
        np.save(tmp / "lens.npy", lens)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(lens), int(tokens.size)


def tokenize_to_cache(
    dataset,
    text_field: str,
    tokenizer,
    root: Path,
    shard_docs: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> TokenizedCorpus:
    """Tokenize ``dataset[text_field]`` into the cache folder ``root`` (resuming), return it.

    ``should_stop`` is polled between rounds of shards (a collective under several ranks);
    when it returns True, :class:`TokenizationInterrupted` is raised with finished shards kept.
    """
    root = Path(root)
    rank, world = _world()
    if (root / META_NAME).exists():
        return TokenizedCorpus.open(root)
    if text_field not in dataset.column_names:
        raise ValueError(f"the training documents have no field {text_field!r} (fields: {dataset.column_names})")
    root.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-len(dataset) // shard_docs))
    written = 0
    t0 = time.monotonic()
    for round_start in range(0, n_shards, world):
        if should_stop():
            raise TokenizationInterrupted(f"tokenization stopped at shard {round_start}/{n_shards}; finished shards kept in {root}")
        i = round_start + rank
        if i < n_shards and not (root / _shard_name(i)).is_dir():
            texts = dataset[i * shard_docs : (i + 1) * shard_docs][text_field]
            _tokenize_shard(texts, tokenizer, root / _shard_name(i))
            written += 1
            log.info("tokenized shard %d/%d (%.1fs)", i + 1, n_shards, time.monotonic() - t0)
    _barrier()
    if rank == 0 and not (root / META_NAME).exists():
        n_docs = n_tokens = 0
        for i in range(n_shards):
            lens = np.load(root / _shard_name(i) / "lens.npy")
            n_docs += int(lens.size)
            n_tokens += int(lens.sum())
        atomic_write_json(
            root / META_NAME,
            {
                "format_version": FORMAT_VERSION,
                "shards": [_shard_name(i) for i in range(n_shards)],
                "n_docs": n_docs,
                "n_tokens": n_tokens,
                "text_field": text_field,
                "tokenizer": tokenizer_fingerprint(tokenizer),
            },
        )
    _barrier()
    return TokenizedCorpus.open(root, written)
