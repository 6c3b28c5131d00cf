"""The generation loop: the corpus's chunks in shards; each shard not committed yet goes to the teacher, then into the store.

The teacher is started (loaded, or connected to) only when the first uncommitted shard comes, so a
finished run that is resumed loads nothing. A committed shard must have been made from the same
chunks the corpus gives now; otherwise the stage stops and asks for ``--force``.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Callable, Iterable, Iterator

from .backends.base import Backend
from .chunking import Chunk
from .generate import SynthError, Synthesizer
from .progress import SynthProgress
from .store import ShardStore, chunk_digest

log = logging.getLogger("astrosage")


def shards(chunks: Iterable[Chunk], size: int) -> Iterator[tuple[int, list[Chunk]]]:
    """(shard index, chunks) in order."""
    it = iter(chunks)
    index = 0
    while batch := list(islice(it, size)):
        yield index, batch
        index += 1


def generate_missing(chunks: Iterable[Chunk], size: int, store: ShardStore, start: Callable[[], Synthesizer],
                     progress: SynthProgress) -> Backend | None:
    """Generate and commit every shard the store lacks; the backend used (closed), or None when none was needed."""
    synth: Synthesizer | None = None
    try:
        for shard, batch in shards(chunks, size):
            if store.done(shard):
                if store.entries[shard]["chunk_digest"] != chunk_digest(c.key for c in batch):
                    raise SynthError(
                        f"shard {shard} in {store.ledger_path} was made from other chunks than the corpus gives now; "
                        "rerun with --force to start over"
                    )
                continue
            if synth is None:
                synth = start()
                progress.restart_clock()  # rates exclude loading the teacher
            result = synth.run_shard(batch, on_result=progress.on_request)
            store.commit(shard, {**result.records, "rejected": result.rejections}, result.ledger_entry(batch))
            for ex in result.examples[:2]:
                log.debug("synth: rejected (%s, %s, %s): %s", ex["reason"], ex["task"], ex["chunk"], ex["detail"])
            progress.on_shard(result)
    finally:
        if synth is not None:
            synth.backend.close()
    return synth.backend if synth is not None else None
