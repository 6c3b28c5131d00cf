"""Cached, resumable tokenization of plain-text documents (the CPT corpus).

Tokenization is its own step with its own cache, outside the stage folder, so it is reused by
every run (and rerun) that trains on the same data with the same tokenizer:

    <run_dir>/tokenized.cache/<key>/
        shard-00000/tokens.npy   int32, the documents' token ids back to back
        shard-00000/lens.npy     int64, token count of each document
        ...
        meta.json                written last: the cache is complete

``key`` hashes the data fingerprint, the tokenizer, the shard size and the format version (not
``max_seq_len``: whole documents are tokenized and packing happens later, so a new sequence length
reuses the cache). Each shard is written to a temp folder and renamed into place, so a killed
tokenization keeps every finished shard and resumes with the next one. Under several ranks,
rank ``r`` tokenizes shards ``r, r + world, ...`` and the ranks check for preemption together
after every round. With ``num_proc > 1`` each rank tokenizes ``num_proc`` of its shards at a time
in a process pool (one tokenizer copy per worker; a round is then ``world * num_proc`` shards).
Every document is ``tokenizer(text)`` (BOS when the tokenizer adds one)
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

from ..core import distributed
from ..core.artifacts import atomic_write_json

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


def cache_key(data_fingerprint: str, tokenizer, shard_docs: int) -> str:
    payload = f"v{FORMAT_VERSION}|{data_fingerprint}|{tokenizer_fingerprint(tokenizer)}|shard={shard_docs}"
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


_WORKER_TOKENIZER = None


def _init_worker(tokenizer) -> None:
    global _WORKER_TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: the pool is the parallelism
    _WORKER_TOKENIZER = tokenizer


def _worker_shard(texts: list[str], out: str) -> tuple[int, int]:
    return _tokenize_shard(texts, _WORKER_TOKENIZER, Path(out))


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
    num_proc: int = 1,
) -> TokenizedCorpus:
    """Tokenize ``dataset[text_field]`` into the cache folder ``root`` (resuming), return it.

    ``should_stop`` is polled between rounds of shards (a collective under several ranks);
    when it returns True, :class:`TokenizationInterrupted` is raised with finished shards kept.
    ``num_proc`` worker processes per rank tokenize shards in parallel (same shards, same bytes).
    """
    root = Path(root)
    rank, world = distributed.rank(), distributed.world_size()
    if (root / META_NAME).exists():
        return TokenizedCorpus.open(root)
    if text_field not in dataset.column_names:
        raise ValueError(f"the training documents have no field {text_field!r} (fields: {dataset.column_names})")
    root.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-len(dataset) // shard_docs))
    written = 0
    t0 = time.monotonic()
    per_round = world * max(1, num_proc)
    pool = None
    if num_proc > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork where there is one: a spawned worker re-imports astrosage.training (transformers, peft: ~6 s of CPU
        # each), a forked one inherits the tokenizer as is; the workers only run the Rust tokenizer and numpy
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context(method),
                                   initializer=_init_worker, initargs=(tokenizer,))
    try:
        for round_start in range(0, n_shards, per_round):
            if should_stop():
                raise TokenizationInterrupted(f"tokenization stopped at shard {round_start}/{n_shards}; finished shards kept in {root}")
            mine = [i for i in range(round_start + rank, min(round_start + per_round, n_shards), world)
                    if not (root / _shard_name(i)).is_dir()]
            if pool is None:
                for i in mine:
                    _tokenize_shard(dataset[i * shard_docs : (i + 1) * shard_docs][text_field], tokenizer, root / _shard_name(i))
            else:
                futures = [pool.submit(_worker_shard, dataset[i * shard_docs : (i + 1) * shard_docs][text_field],
                                       str(root / _shard_name(i))) for i in mine]
                for f in futures:
                    f.result()
            written += len(mine)
            if mine:
                log.info("tokenized shards %s/%d (%.1fs)", ",".join(str(i + 1) for i in mine), n_shards, time.monotonic() - t0)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    distributed.barrier()
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
    distributed.barrier()
    return TokenizedCorpus.open(root, written)
