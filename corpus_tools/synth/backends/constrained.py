"""Grammar-constrained decoding for transformers ``generate``: JSON schemas through llguidance.

llguidance (guidance-ai; the structured-output engine behind vLLM, SGLang and llama.cpp options)
compiles a JSON schema into a token-level grammar for the model's tokenizer and computes, per
step, the bitmask of tokens that keep the output valid. This module only wires it into
transformers: one matcher per batch row (rows may follow different schemas, or none), the mask
applied to the logits before sampling (transformers runs custom processors before its
temperature/top-p warpers, so sampling only ever sees allowed tokens).

Chosen over xgrammar (whose length-bounded strings exclude every escape, so no ``\\\\alpha``
and no quotes, and which lets control characters through) and lm-format-enforcer (pure Python,
slow on 100k-token vocabularies); llguidance has no dependencies and installs from one wheel.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from transformers import LogitsProcessor

from .base import BackendError

NOT_AVAILABLE = (
    "structured outputs for the transformers synth backend are not available: pip install llguidance "
    "(or pip install 'astrosage[synth]'); or set synth.structured_output: false to generate free text"
)


def import_llguidance():
    """The llguidance module (with its HF helper), or BackendError with the install hint."""
    try:
        import llguidance
        import llguidance.hf  # noqa: F401
    except ImportError as exc:
        raise BackendError(f"{NOT_AVAILABLE} ({exc})") from None
    return llguidance


class SchemaGrammars:
    """llguidance grammars for one tokenizer, compiled once per schema."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Sequence[int]):
        self.llg = import_llguidance()
        try:
            self.tokenizer = self.llg.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=sorted(eos_ids))
        except ValueError as exc:  # e.g. a slow (Python) tokenizer
            raise BackendError(f"llguidance cannot use the teacher's tokenizer: {exc}") from None
        self.vocab_size = vocab_size
        self._grammars: dict[str, str] = {}

    def grammar(self, schema: dict[str, Any]) -> str:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            # compact JSON (no free whitespace): a weak model cannot stall in endless blanks
            grammar = self.llg.LLMatcher.grammar_from_json_schema(key, defaults={"whitespace_flexible": False})
            error = self.llg.LLMatcher.validate_grammar(grammar, self.tokenizer)
            if error:
                raise BackendError(f"llguidance rejected the reply schema: {error}")
            self._grammars[key] = grammar
        return self._grammars[key]

    def processor(self, schemas: Sequence[dict[str, Any] | None]) -> "GrammarLogitsProcessor":
        """A fresh logits processor for one ``generate`` call (row i follows ``schemas[i]``)."""
        matchers = [self.llg.LLMatcher(self.tokenizer, self.grammar(s), log_level=0) if s is not None else None for s in schemas]
        return GrammarLogitsProcessor(matchers, self.vocab_size, self.tokenizer.eos_tokens)


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks each constrained row's logits to the tokens its grammar allows; single use."""

    def __init__(self, matchers: list[Any], vocab_size: int, eos_ids: Sequence[int]):
        import torch

        self.matchers = matchers
        self.eos_ids = list(eos_ids)
        self.vocab_size = vocab_size
        self.bitmask = torch.full((len(matchers), (vocab_size + 31) // 32), -1, dtype=torch.int32)
        self._bits = torch.arange(32, dtype=torch.int32)
        self._started = False
        #: rows whose matcher failed (an internal error): left unconstrained, reported by the backend
        self.errors: dict[int, str] = {}

    def __call__(self, input_ids, scores):
        import torch

        if input_ids.shape[0] != len(self.matchers):
            raise RuntimeError(f"grammar processor built for {len(self.matchers)} rows got a batch of {input_ids.shape[0]}")
        active, done = [], []
        for row, matcher in enumerate(self.matchers):
            if matcher is None or row in self.errors:
                continue
            if self._started and not matcher.is_stopped():
                matcher.consume_token(int(input_ids[row, -1]))
            if matcher.is_stopped():  # the reply is complete: only end-of-sequence from here on
                done.append(row)
                continue
            if matcher.is_error():
                self.errors[row] = matcher.get_error()
                continue
            matcher.unsafe_compute_mask_ptr(self.bitmask[row].data_ptr(), self.bitmask.shape[1] * 4)
            active.append(row)
        self._started = True
        if active:
            rows = torch.tensor(active, device=scores.device)
            allowed = ((self.bitmask[rows.cpu()].unsqueeze(-1) >> self._bits) & 1).flatten(1)[:, : scores.shape[1]].bool()
            if scores.shape[1] > allowed.shape[1]:  # logits wider than the grammar's vocabulary
                pad = torch.zeros(len(active), scores.shape[1] - allowed.shape[1], dtype=torch.bool)
                allowed = torch.cat([allowed, pad], dim=1)
            scores[rows] = scores[rows].masked_fill(~allowed.to(scores.device), float("-inf"))
        if done:
            rows = torch.tensor(done, device=scores.device)
            eos = scores[rows][:, self.eos_ids]
            scores[rows] = float("-inf")
            scores[rows.unsqueeze(1), torch.tensor(self.eos_ids, device=scores.device)] = eos
        return scores

    def accepted(self, row: int) -> bool:
        """Row ``row`` produced a complete reply the grammar accepts."""
        m = self.matchers[row]
        return m is not None and row not in self.errors and (m.is_stopped() or m.is_accepting())
