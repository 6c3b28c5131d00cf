"""Validated items -> output records (DESIGN.md formats), with stable ids and provenance.

QA (``qa/*.jsonl``)::

    {"messages": [{"role": "user", ...}, {"role": "assistant", "content": "<think>\\n...\\n</think>\\n\\nanswer"}],
     "meta": {"id", "task", "reasoning", "rewritten_refs", "paper_id", "chunk_index", "backend", "model", "prompt", "prompt_sha",
              "sampling": {...}, "seed", "source"}}

MCQ (``mcq/*.jsonl``; loadable by ``eval.data.load_benchmark``)::

    {"id", "question", "A", "B", "C", "D", "answer": "C", "explanation", "topic", "paper_id", "meta": {...}}

Every record's meta has the same keys and types, so the files load as one table. MCQ options
are permuted (seeded by the item id) so the correct letter is spread evenly over A-D.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from .chunking import Chunk
from .validate import LETTERS, MCQItem, QAItem

SOURCE = "astrosage-synth"


@dataclass(frozen=True)
class Provenance:
    """Where an item came from and how it was generated."""

    chunk: Chunk
    task: str
    backend: str
    model: str
    prompt: str
    prompt_sha: str
    sampling: dict[str, Any]
    seed: int

    def meta(self, item_id: str) -> dict[str, Any]:
        return {
            "id": item_id,
            "task": self.task,
            "paper_id": self.chunk.paper_id,
            "chunk_index": self.chunk.chunk_index,
            "backend": self.backend,
            "model": self.model,
            "prompt": self.prompt,
            "prompt_sha": self.prompt_sha,
            "sampling": dict(self.sampling),
            "seed": int(self.seed),
            "source": SOURCE,
        }


def item_id(prov: Provenance, index: int, prefix: str) -> str:
    """Stable id: the same chunk, task, prompt, seed and item position always give the same id."""
    key = f"{prov.task}|{prov.chunk.paper_id}|{prov.chunk.chunk_index}|{index}|{prov.prompt}|{prov.seed}"
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def assistant_content(item: QAItem) -> str:
    """The assistant turn: the reasoning chain inline in <think> (if any), then the answer."""
    if item.reasoning:
        return f"<think>\n{item.reasoning.strip()}\n</think>\n\n{item.answer.strip()}"
    return item.answer.strip()


def qa_record(item: QAItem, prov: Provenance, index: int) -> dict[str, Any]:
    ident = item_id(prov, index, "synth")
    meta = prov.meta(ident)
    meta["reasoning"] = item.reasoning is not None
    meta["rewritten_refs"] = item.rewritten
    return {
        "messages": [
            {"role": "user", "content": item.question},
            {"role": "assistant", "content": assistant_content(item)},
        ],
        "meta": meta,
    }


def shuffle_options(item: MCQItem, seed_key: str) -> tuple[list[str], int]:
    """Options permuted so the correct one lands on a letter drawn uniformly from A-D."""
    rng = random.Random(seed_key)
    target = rng.randrange(4)
    distractors = [o for i, o in enumerate(item.options) if i != item.answer]
    rng.shuffle(distractors)
    options = distractors[:target] + [item.options[item.answer]] + distractors[target:]
    return options, target


def mcq_record(item: MCQItem, prov: Provenance, index: int) -> dict[str, Any]:
    ident = item_id(prov, index, "mcq")
    options, answer = shuffle_options(item, ident)
    return {
        "id": ident,
        "question": item.question,
        **dict(zip(LETTERS, options)),
        "answer": LETTERS[answer],
        "explanation": item.explanation,
        "topic": item.topic,
        "paper_id": prov.chunk.paper_id,
        "meta": {**prov.meta(ident), "rewritten_refs": item.rewritten},
    }
