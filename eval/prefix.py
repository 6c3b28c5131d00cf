"""The instruction prefix every prompt shares: its keys/values computed once and reused by each batch."""

from __future__ import annotations

from typing import Any, Sequence

from .modeling import LoadedModel


def cache_kwarg(model: Any) -> str:
    """``cache`` (transformers >= 5.2x) or ``past_key_values`` (older 5.x): the forward's KV-cache argument."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all ``seqs`` share, leaving every sequence at least one token."""
    if not seqs:
        return 0
    first, limit = seqs[0], min(len(s) for s in seqs) - 1
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n


class SharedPrefix:
    """Keys/values of the token prefix every prompt starts with, computed once and reused by each batch.

    Exact by construction: the prefix is a common prefix of the token ids (not of the text), and
    causal attention makes a prefix's keys/values independent of what follows it.
    """

    #: below this many shared tokens the extra masked-attention call costs more than it saves
    MIN_TOKENS = 8

    def __init__(self, lm: LoadedModel, ids: list[int]):
        import torch

        self.ids = ids
        self._config = lm.model.config
        with torch.inference_mode():
            out = lm.model(input_ids=torch.tensor([ids], dtype=torch.long, device=lm.device), use_cache=True, logits_to_keep=1)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        self._kv = [(layer.keys, layer.values) for layer in cache.layers]

    def cache(self, batch: int) -> Any:
        """A fresh cache holding the prefix for ``batch`` rows (each forward appends to its own copy)."""
        from transformers import DynamicCache

        data = [(k.expand(batch, -1, -1, -1).contiguous(), v.expand(batch, -1, -1, -1).contiguous()) for k, v in self._kv]
        return DynamicCache(ddp_cache_data=data, config=self._config)

    @classmethod
    def maybe(cls, lm: LoadedModel, seqs: Sequence[Sequence[int]], reuse: bool = True) -> "SharedPrefix | None":
        n = common_prefix(seqs) if reuse and len(seqs) > 1 else 0
        return cls(lm, list(seqs[0][:n])) if n >= cls.MIN_TOKENS else None
