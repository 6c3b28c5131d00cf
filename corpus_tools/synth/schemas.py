"""JSON schemas of the teacher's replies, one per task: what structured decoding enforces.

The validator (:mod:`.validate`) reads the same canonical shapes and applies the content rules;
these schemas carry its structural rules (fields, types, answer letters, minimum lengths) plus
upper bounds on every string, fitted to the request's ``max_new_tokens``, so a constrained
teacher closes its JSON within budget (a weak or random model would otherwise write one string
until the budget cuts it off)::

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

#: characters a reply may plan per generated token when the caps are fitted to ``max_new_tokens``
#: (English BPE averages ~4; LaTeX, numbers, rare characters and small vocabularies far less)
CHARS_PER_TOKEN = 2.0
#: tokens of JSON syntax (key, quotes, colon, comma) per field and per item, taken off the budget
FIELD_OVERHEAD_TOKENS = 6
ITEM_OVERHEAD_TOKENS = 8

#: keywords that :func:`portable_schema` removes
LENGTH_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")


def _text(min_chars: int, max_chars: int, floor: int, description: str) -> dict[str, Any]:
    """A string field; ``floor`` is the least its cap is fitted down to (see :func:`_fit`)."""
    return {"type": "string", "minLength": min_chars, "maxLength": max_chars, "description": description, "x-floor": floor}


def _fit(props: dict[str, Any], budget_chars: int | None) -> None:
    """Fit the string caps into ``budget_chars``: each keeps its floor, the rest shrinks proportionally
    (below the floors' total, the floors shrink proportionally instead)."""
    strings = [p for p in props.values() if "maxLength" in p]
    floors = {id(p): max(p.pop("x-floor"), p["minLength"] + 10) for p in strings}
    if budget_chars is None:
        return
    floor_total = sum(floors.values())
    if budget_chars < floor_total:  # a very small budget: the floors shrink too (not below minimum + 10)
        for p in strings:
            p["maxLength"] = max(p["minLength"] + 10, int(floors[id(p)] * budget_chars / floor_total))
        return
    spare = sum(p["maxLength"] - floors[id(p)] for p in strings)
    share = min(1.0, (budget_chars - floor_total) / spare) if spare > 0 else 1.0
    for p in strings:
        p["maxLength"] = floors[id(p)] + int((p["maxLength"] - floors[id(p)]) * share)


def item_schema(task: str, budget_chars: int | None = None) -> dict[str, Any]:
    """The schema of one item of ``task`` (qa, qa_reasoning, mcq), its strings fitted to ``budget_chars``."""
    if task == "mcq":
        props: dict[str, Any] = {"question": _text(MIN_QUESTION_CHARS, MAX_QUESTION_CHARS, 150, "Self-contained question stem.")}
        for letter in LETTERS:
            props[letter] = _text(1, MAX_OPTION_CHARS, 40, f"Option {letter}.")
        props["answer"] = {"type": "string", "enum": list(LETTERS), "description": "Letter of the correct option."}
        props["explanation"] = _text(1, MAX_EXPLANATION_CHARS, 60, "Why the answer is correct and the others are not.")
        props["topic"] = _text(1, MAX_TOPIC_CHARS, 30, "Short subfield label.")
    elif task in ("qa", "qa_reasoning"):
        props = {"question": _text(MIN_QUESTION_CHARS, MAX_QUESTION_CHARS, 150, "Self-contained question.")}
        if task == "qa_reasoning":
            props["reasoning"] = _text(MIN_REASONING_CHARS, MAX_REASONING_CHARS, 120, "Step-by-step reasoning chain.")
        props["answer"] = _text(MIN_ANSWER_CHARS, MAX_ANSWER_CHARS, 80, "Final answer.")
    else:
        raise ValueError(f"unknown synth task {task!r}; tasks are qa, qa_reasoning, mcq")
    _fit(props, budget_chars)
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def response_schema(task: str, n_items: int, max_new_tokens: int | None = None) -> dict[str, Any]:
    """The whole reply for ``task``: ``{"items": [...]}`` with exactly ``n_items`` items.

    With ``max_new_tokens`` the string caps shrink (proportionally) until ``n_items`` items fit
    ``max_new_tokens`` (less the JSON syntax, at ``CHARS_PER_TOKEN``), so a constrained reply closes its JSON
    before the token budget cuts it off.
    """
    if n_items < 1:
        raise ValueError(f"n_items must be at least 1, got {n_items}")
    budget = None
    if max_new_tokens is not None:
        n_fields = len(item_schema(task)["properties"])
        per_item = max_new_tokens / n_items - ITEM_OVERHEAD_TOKENS - FIELD_OVERHEAD_TOKENS * n_fields
        budget = max(0, int(per_item * CHARS_PER_TOKEN))
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": item_schema(task, budget), "minItems": n_items, "maxItems": n_items}},
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
