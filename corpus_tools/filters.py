"""Quality filters tuned for papers: every statistic is computed on prose with math and tables removed.

Generic web filters misfire on LaTeX (C4 drops any '{', Gopher's "80% of words contain a letter"
rule hits equations). Here math (``$...$``, display environments) and kept LaTeX tables are
stripped first, so a math-heavy paper is judged on its sentences only.

Language: an offline heuristic, no model download: the share of English stop words among the
prose words (English scientific prose: ~0.3-0.45; French/German/Spanish prose: < 0.08 since
their function words differ). It can only say "en" or "unknown".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

ENGLISH_STOPWORDS = frozenset(
    """a about above after again against all also although am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either few for from further had has have
    having he her here hers him his how however i if in into is it its itself just may might more most much must my
    neither no nor not now of off on once only or other our ours out over own same she should since so some such than
    that the their theirs them then there these they this those through thus to too under until up upon very was we
    were what when where whether which while who whom whose why will with within without would yet you your""".split()
)

_MATH_OR_TABLE = re.compile(
    r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)|\\begin\{([A-Za-z]+\*?)\}.*?\\end\{\1\}", re.S
)
_PROSE_WORD = re.compile(r"[^\W\d_]+")
_ALLOWED = re.compile(r"[\w\s.,;:!?()\[\]'\"\-–—/%&+=<>*~±×°′″…“”‘’§#@|]")
#: replacement characters, classic UTF-8-as-latin-1 mojibake, NULs and other C0 controls (a UTF-16
#: file read as bytes is NUL-interleaved text: every other character counts as bad)
_MOJIBAKE = re.compile("[\ufffd\x00-\x08\x0b\x0e-\x1f]|Ã[\u0080-\u00bf]|â€")


@dataclass(frozen=True)
class FilterConfig:
    """Plain copy of the recipe's FilterSettings (picklable for worker processes)."""

    min_chars: int = 2_000
    max_chars: int = 2_000_000
    languages: tuple[str, ...] = ("en",)
    max_non_text_ratio: float = 0.5
    min_stopword_ratio: float = 0.15
    max_bad_char_ratio: float = 0.001
    max_duplicate_line_ratio: float = 0.3

    @classmethod
    def from_settings(cls, s: Any) -> "FilterConfig":
        return cls(**{f: (tuple(getattr(s, f)) if f == "languages" else getattr(s, f)) for f in cls.__dataclass_fields__})


def prose_of(text: str) -> str:
    """The text with math and LaTeX tables removed."""
    return _MATH_OR_TABLE.sub(" ", text)


def stopword_ratio(prose: str) -> float:
    """Share of English stop words among alphabetic words of the prose (0 if it has none)."""
    toks = _PROSE_WORD.findall(prose.lower())
    if not toks:
        return 0.0
    return sum(1 for t in toks if t in ENGLISH_STOPWORDS) / len(toks)


def non_text_ratio(prose: str) -> float:
    """Share of prose characters that are not letters, digits, whitespace or ordinary punctuation."""
    if not prose:
        return 1.0
    return 1.0 - len(_ALLOWED.findall(prose)) / len(prose)


def duplicate_line_ratio(prose: str) -> float:
    """Share of non-empty lines (paragraphs) that repeat an earlier line."""
    lines = [ln.strip() for ln in prose.splitlines() if len(ln.strip()) > 20]
    if not lines:
        return 0.0
    counts = Counter(lines)
    return sum(c - 1 for c in counts.values()) / len(lines)


def check(text: str, cfg: FilterConfig) -> tuple[str | None, dict[str, float]]:
    """Return (reject reason or None, the statistics computed)."""
    n = len(text)
    if n < cfg.min_chars:
        return "too_short", {"n_chars": n}
    if n > cfg.max_chars:
        return "too_long", {"n_chars": n}
    bad = len(_MOJIBAKE.findall(text)) / max(n, 1)
    if bad > cfg.max_bad_char_ratio:
        return "bad_encoding", {"bad_char_ratio": bad}
    prose = prose_of(text)
    stats = {"n_chars": n, "stopword_ratio": stopword_ratio(prose), "non_text_ratio": non_text_ratio(prose),
             "duplicate_line_ratio": duplicate_line_ratio(prose)}
    if cfg.languages:
        lang = "en" if stats["stopword_ratio"] >= cfg.min_stopword_ratio else "unknown"
        if lang not in cfg.languages:
            return "language", stats
    if stats["non_text_ratio"] > cfg.max_non_text_ratio:
        return "non_text", stats
    if stats["duplicate_line_ratio"] > cfg.max_duplicate_line_ratio:
        return "repeated_lines", stats
    return None, stats


SUPPORTED_LANGUAGES = ("en",)
