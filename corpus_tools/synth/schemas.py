"""JSON schemas of the teacher's replies, one per task: what structured decoding enforces.

The validator (:mod:`.validate`) reads the same canonical shapes and applies the content rules;
these schemas carry its structural rules (fields, types, answer letters, minimum lengths) plus
upper bounds on every string, so a constrained teacher always closes its JSON within a sane
budget (a weak or random model would otherwise write one string until ``max_new_tokens``)::

    qa            {"items": [{"question", "answer"}] * n}
    qa_reasoning  {"items": [{"question", "reasoning", "answer"}] * n}
    mcq           {"items": [{"question", "A", "B", "C", "D", "answer": "A".."D", "explanation", "topic"}] * n}

:func:`response_schema` is the full schema (local constrained decoders and OpenAI-compatible
servers that enforce it: vLLM, SGLang); :func:`portable_schema` drops the length and count
keywords that some hosted APIs refuse in strict mode (the OpenAI backend falls back to it).
"""

from __future__ import annotations

import copy
from typing import Any

from .validate import LETTERS, MIN_ANSWER_CHARS, MIN_QUESTION_CHARS, MIN_REASONING_CHARS

#: upper bounds on generated strings (characters): generous for a real teacher, finite for a weak one
MAX_QUESTION_CHARS = 600
MAX_ANSWER_CHARS = 2_000
MAX_REASONING_CHARS = 4_000
MAX_OPTION_CHARS = 300
MAX_EXPLANATION_CHARS = 1_000
MAX_TOPIC_CHARS = 60

#: keywords that :func:`portable_schema` removes
LENGTH_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")


def _text(min_chars: int, max_chars: int, description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": min_chars, "maxLength": max_chars, "description": description}


def item_schema(task: str) -> dict[str, Any]:
    """The schema of one item of ``task`` (qa, qa_reasoning, mcq)."""
    if task == "mcq":
        props: dict[str, Any] = {"question": _text(MIN_QUESTION_CHARS, MAX_QUESTION_CHARS, "Self-contained question stem.")}
        for letter in LETTERS:
            props[letter] = _text(1, MAX_OPTION_CHARS, f"Option {letter}.")
        props["answer"] = {"type": "string", "enum": list(LETTERS), "description": "Letter of the correct option."}
        props["explanation"] = _text(1, MAX_EXPLANATION_CHARS, "Why the answer is correct and the others are not.")
        props["topic"] = _text(1, MAX_TOPIC_CHARS, "Short subfield label.")
    elif task in ("qa", "qa_reasoning"):
        props = {"question": _text(MIN_QUESTION_CHARS, MAX_QUESTION_CHARS, "Self-contained question.")}
        if task == "qa_reasoning":
            props["reasoning"] = _text(MIN_REASONING_CHARS, MAX_REASONING_CHARS, "Step-by-step reasoning chain.")
        props["answer"] = _text(MIN_ANSWER_CHARS, MAX_ANSWER_CHARS, "Final answer.")
    else:
        raise ValueError(f"unknown synth task {task!r}; tasks are qa, qa_reasoning, mcq")
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def response_schema(task: str, n_items: int) -> dict[str, Any]:
    """The whole reply for ``task``: ``{"items": [...]}`` with exactly ``n_items`` items."""
    if n_items < 1:
        raise ValueError(f"n_items must be at least 1, got {n_items}")
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": item_schema(task), "minItems": n_items, "maxItems": n_items}},
        "required": ["items"],
        "additionalProperties": False,
    }


def portable_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without length/count keywords (accepted by strict-mode hosted APIs)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in LENGTH_KEYWORDS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(copy.deepcopy(schema))


def schema_name(task: str) -> str:
    """The ``json_schema.name`` sent to OpenAI-compatible servers."""
    return f"astrosage_{task}"
