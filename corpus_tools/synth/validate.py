"""Checks on generated items; every rejection has a reason (counted by the stage).

Per item: required fields and types, minimum lengths, no reference to "this paper" / "the
authors" / "the excerpt" without a citation (where the paper's authors and year are known,
"this paper" / "the authors" / "we find" are rewritten to "Smith et al. (2021)" instead, see
:mod:`.citation`; references to the prompt itself are always rejected), and for MCQs a valid answer letter, four distinct
options of balanced length and no answer leaked in the stem. Across items: near-duplicate
questions (MinHash-LSH, reusing :mod:`corpus_tools.dedup`) and benchmark contamination (the
corpus stage's 13-gram rule, :mod:`corpus_tools.decontam`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..decontam import NgramIndex, load_benchmark_texts
from ..dedup import MinHasher, NearDedup
from .chunking import Chunk
from .citation import family_name, rewrite_references

LETTERS = ("A", "B", "C", "D")

# rejection reasons (the keys of the stage's "rejected" counts)
REQUEST_FAILED = "request_failed"
MALFORMED_JSON = "malformed_json"
NO_ITEMS = "no_items"
MALFORMED_ITEM = "malformed_item"
TOO_SHORT = "too_short"
CONTEXT_REFERENCE = "context_reference"
INVALID_ANSWER = "invalid_answer"
DUPLICATE_OPTIONS = "duplicate_options"
UNBALANCED_OPTIONS = "unbalanced_options"
ANSWER_LEAK = "answer_leak"
DUPLICATE_QUESTION = "duplicate_question"
CONTAMINATED = "contaminated"

MIN_QUESTION_CHARS = 15
MIN_ANSWER_CHARS = 20
MIN_REASONING_CHARS = 40
#: option lengths below this count as this long in the balance ratio (short numeric options)
OPTION_LENGTH_FLOOR = 12

# references to the source that a reader without the paper cannot resolve
_DEICTIC = re.compile(
    r"\b(?:this|the present|the current|our)\s+(?:paper|study|work|article|manuscript|letter|review|analysis|research|publication)\b"
    r"|\bthe\s+authors?\b|\bwe\s+(?:find|found|show|present|report|propose|derive|measure|obtain|conclude|argue)\b",
    re.IGNORECASE,
)
# references to the prompt itself: never acceptable
_PROMPT_REF = re.compile(
    r"\b(?:the|this|above|given|provided)\s+(?:excerpt|passage|text\s+above|snippet)\b|\baccording to the (?:text|excerpt|passage)\b",
    re.IGNORECASE,
)
_EXPLICIT_LEAK = re.compile(r"\b(?:correct\s+)?answer\s*(?:is|:)\s*\(?[A-D]\b", re.IGNORECASE)
_NON_WORD = re.compile(r"[\W_]+")


class Rejected(ValueError):
    """An item failed a check; ``reason`` is one of the rejection reasons above."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class QAItem:
    """A validated question/answer pair; ``reasoning`` is set for the qa_reasoning task."""

    question: str
    answer: str
    reasoning: str | None = None
    #: references to the source rewritten into the author-year citation
    rewritten: int = 0

    def text(self) -> str:
        return " ".join(p for p in (self.question, self.reasoning, self.answer) if p)


@dataclass(frozen=True)
class MCQItem:
    """A validated multiple-choice question; ``answer`` is a 0-based option index."""

    question: str
    options: tuple[str, str, str, str]
    answer: int
    explanation: str
    topic: str | None = None
    rewritten: int = 0

    def text(self) -> str:
        return " ".join((self.question, *self.options, self.explanation))


def _field(raw: dict[str, Any], *names: str, required: bool = True) -> str | None:
    for name in names:
        value = raw.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            if "<think>" in value or "</think>" in value:
                raise Rejected(MALFORMED_ITEM, f"field {name!r} contains a <think> tag")
            return value.strip()
        if value is not None and not isinstance(value, str):
            raise Rejected(MALFORMED_ITEM, f"field {name!r} is a {type(value).__name__}, expected text")
    if required:
        raise Rejected(MALFORMED_ITEM, f"missing field {names[0]!r}")
    return None


def _norm(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def check_context(texts: Iterable[str], chunk: Chunk) -> None:
    """Reject references to the source that only make sense next to the paper."""
    joined = " ".join(texts)
    m = _PROMPT_REF.search(joined)
    if m:
        raise Rejected(CONTEXT_REFERENCE, f"refers to the prompt ({m.group(0)!r})")
    m = _DEICTIC.search(joined)
    if m is None:
        return
    low = joined.lower()
    first_author = family_name(chunk.authors[0]).lower() if chunk.authors else ""
    anchored = (
        "et al" in low or chunk.paper_id.lower() in low or (len(chunk.title) >= 12 and chunk.title.lower() in low)
        or (len(first_author) >= 2 and re.search(rf"\b{re.escape(first_author)}\b", low) is not None)
    )
    if not anchored:
        raise Rejected(CONTEXT_REFERENCE, f"{m.group(0)!r} without naming the work")


def _rewrite(texts: list[str | None], chunk: Chunk) -> tuple[list[str | None], int]:
    """Each text with references to the source turned into the chunk's author-year citation."""
    out, total = [], 0
    for text in texts:
        if text is None:
            out.append(None)
            continue
        new, n = rewrite_references(text, chunk.authors, chunk.year)
        out.append(new)
        total += n
    return out, total


def validate_qa(raw: Any, chunk: Chunk, reasoning: bool) -> QAItem:
    """A QA (or, with ``reasoning``, QA + reasoning chain) item, or Rejected."""
    if not isinstance(raw, dict):
        raise Rejected(MALFORMED_ITEM, f"item is a {type(raw).__name__}, expected an object")
    question = _field(raw, "question", "q")
    answer = _field(raw, "answer", "a", "final_answer")
    chain = _field(raw, "reasoning", "thinking", "chain_of_thought", "rationale") if reasoning else None
    if len(question) < MIN_QUESTION_CHARS:
        raise Rejected(TOO_SHORT, "question")
    if len(answer) < MIN_ANSWER_CHARS:
        raise Rejected(TOO_SHORT, "answer")
    if chain is not None and len(chain) < MIN_REASONING_CHARS:
        raise Rejected(TOO_SHORT, "reasoning")
    (question, answer, chain), rewritten = _rewrite([question, answer, chain], chunk)
    check_context([question, answer, chain or ""], chunk)
    return QAItem(question, answer, chain, rewritten)  # type: ignore[arg-type]


def _options(raw: dict[str, Any]) -> list[str]:
    if all(k in raw for k in LETTERS):
        return [_field(raw, k) for k in LETTERS]  # type: ignore[misc]
    opts = raw.get("options") or raw.get("choices")
    if isinstance(opts, dict):
        opts = [opts.get(k) for k in LETTERS]
    if not isinstance(opts, list) or len(opts) != 4:
        raise Rejected(MALFORMED_ITEM, "needs exactly four options A-D")
    out = []
    for i, opt in enumerate(opts):
        text = str(opt).strip() if isinstance(opt, (str, int, float)) and not isinstance(opt, bool) else ""
        text = re.sub(r"^\(?[A-Da-d][).:]\s+", "", text)
        if not text:
            raise Rejected(MALFORMED_ITEM, f"option {LETTERS[i]} is empty")
        out.append(text)
    return out


def _answer_index(value: Any, options: list[str]) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3:
        return value
    if isinstance(value, str):
        text = value.strip()
        m = re.fullmatch(r"\(?([A-Da-d])\)?(?:[).:]\s*.*)?", text, re.DOTALL)
        if m:
            return LETTERS.index(m.group(1).upper())
        for i, opt in enumerate(options):  # the answer given as the option text
            if _norm(text) == _norm(opt):
                return i
    raise Rejected(INVALID_ANSWER, f"answer {value!r} is not one of A-D")


def check_option_balance(options: Iterable[str], max_ratio: float) -> None:
    """Reject options whose lengths differ too much (the longest option is a known giveaway)."""
    lengths = [max(len(o), OPTION_LENGTH_FLOOR) for o in options]
    ratio = max(lengths) / min(lengths)
    if ratio > max_ratio:
        raise Rejected(UNBALANCED_OPTIONS, f"length ratio {ratio:.2f} > {max_ratio:g}")


def check_answer_leak(question: str, options: list[str], answer: int) -> None:
    """Reject stems that state the answer letter or contain the correct option's text."""
    m = _EXPLICIT_LEAK.search(question)
    if m:
        raise Rejected(ANSWER_LEAK, f"stem states the answer ({m.group(0)!r})")
    stem = f" {_norm(question)} "
    correct = _norm(options[answer])
    if len(correct) < 4 or f" {correct} " not in stem:
        return
    others = [_norm(o) for i, o in enumerate(options) if i != answer]
    if not any(len(o) >= 4 and f" {o} " in stem for o in others):
        raise Rejected(ANSWER_LEAK, "the correct option's text appears in the stem")


def validate_mcq(raw: Any, chunk: Chunk, max_option_ratio: float) -> MCQItem:
    """A benchmark-style MCQ item, or Rejected."""
    if not isinstance(raw, dict):
        raise Rejected(MALFORMED_ITEM, f"item is a {type(raw).__name__}, expected an object")
    question = _field(raw, "question", "stem")
    options = _options(raw)
    answer = _answer_index(raw.get("answer", raw.get("correct")), options)
    explanation = _field(raw, "explanation", "rationale") or ""
    topic = _field(raw, "topic", "subfield", required=False)
    if len(question) < MIN_QUESTION_CHARS:
        raise Rejected(TOO_SHORT, "question")
    if len({_norm(o) for o in options}) < 4:
        raise Rejected(DUPLICATE_OPTIONS)
    check_answer_leak(question, options, answer)
    check_option_balance(options, max_option_ratio)
    (question, explanation), rewritten = _rewrite([question, explanation], chunk)
    check_context([question, *options], chunk)
    return MCQItem(question, tuple(options), answer, explanation, topic, rewritten)  # type: ignore[arg-type]


class QuestionDeduper:
    """Near-duplicate questions by MinHash-LSH on word shingles; the first one seen is kept."""

    def __init__(self, threshold: float, num_perm: int = 128, shingle_size: int = 2, seed: int = 1):
        self.hasher = MinHasher(num_perm=num_perm, shingle_size=shingle_size, seed=seed)
        self.index = NearDedup(num_perm=num_perm, threshold=threshold, seed=seed)
        self._n = 0

    def check(self, question: str) -> bool:
        """True if ``question`` near-duplicates a kept one; else remember it and return False."""
        self._n += 1
        return self.index.check(f"q{self._n}", self.hasher.signature(question)) is not None


class Decontaminator:
    """The corpus stage's rule: an item sharing any word n-gram with a benchmark item is contaminated."""

    def __init__(self, index: NgramIndex | None, sources: list[str]):
        self.index = index
        self.sources = sources

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], n: int) -> "Decontaminator":
        paths = [Path(p) for p in paths]
        texts: list[str] = []
        for path in paths:
            texts.extend(load_benchmark_texts(path))
        index = NgramIndex.from_texts(texts, n) if texts else None
        return cls(index, [str(p) for p in paths])

    def check(self, text: str) -> None:
        if self.index is not None and self.index.overlap(text) > 0:
            raise Rejected(CONTAMINATED, f"shares a {self.index.n}-gram with a benchmark item")
