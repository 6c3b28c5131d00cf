"""Robust JSON extraction from teacher output.

Models wrap JSON in prose, code fences and <think> blocks, and leave trailing commas. Tried in
order: the whole text, each fenced code block, the first balanced ``{...}`` / ``[...]`` span;
each candidate as-is, then with trailing commas removed. Items are then pulled out of the common
shapes (a list, ``{"items": [...]}``, a single object).
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
LIST_KEYS = ("items", "questions", "qa_pairs", "qa", "pairs", "mcqs", "data", "results")


class ParseError(ValueError):
    """No JSON value could be recovered from the text."""


def _balanced_spans(text: str, max_starts: int = 200) -> Iterator[str]:
    """Balanced ``{...}`` / ``[...]`` spans, outermost first, aware of JSON strings.

    An unbalanced opener (e.g. output cut off by the token budget) is skipped, so complete
    items nested inside it are still found; at most ``max_starts`` openers are tried.
    """
    tried = 0
    for start, ch in enumerate(text):
        if ch not in "{[":
            continue
        tried += 1
        if tried > max_starts:
            return
        depth, in_str, esc = 0, False, False
        for i in range(start, len(text)):
            c = text[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    yield text[start : i + 1]
                    break


def _candidates(text: str) -> Iterator[str]:
    yield text.strip()
    for m in _FENCE.finditer(text):
        yield m.group(1).strip()
    yield from _balanced_spans(text)


def extract_json(text: str) -> Any:
    """The first JSON value recoverable from ``text``; raises ParseError if there is none."""
    cleaned = _THINK.sub("", text or "")
    for cand in _candidates(cleaned):
        if not cand or cand[0] not in "{[":
            continue
        for variant in (cand, _TRAILING_COMMA.sub(r"\1", cand)):
            try:
                return json.loads(variant)
            except json.JSONDecodeError:
                continue
    raise ParseError("no JSON object or array found in the response")


def extract_items(text: str) -> list[Any]:
    """The list of generated items in a response (shapes: list, {"items": [...]}, one object)."""
    value = extract_json(text)
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in LIST_KEYS:
            if isinstance(value.get(key), list):
                return value[key]
        lists = [v for v in value.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(lists) == 1:
            return lists[0]
        return [value]
    raise ParseError(f"expected a JSON list or object of items, got {type(value).__name__}")
