"""How generated items name their source paper: "Smith et al. (2021)" from the corpus's authors + year.

Teachers like to write "this paper", "the authors" or "we find", which mean nothing to a reader
without the paper. When the chunk's paper has authors and a year (corpus columns ``authors``,
``year``), such phrases are rewritten into an author-year citation instead of the item being
rejected; without them the validator still rejects the item (``context_reference``).

Family names come from ``nameparser`` ("Maria de la Cruz" -> "de la Cruz", "Ibarra, Jorge" ->
"Ibarra"); collaboration names are kept whole ("LIGO Scientific Collaboration").
"""

from __future__ import annotations

import re
from typing import Sequence

_GROUP = re.compile(r"\b(collaboration|consortium|team|group|survey|project)\b", re.IGNORECASE)
_WORK = r"(?:paper|study|work|article|manuscript|letter|review|analysis|research|publication)"
_VERBS = r"(?:find|found|show|present|report|propose|derive|measure|obtain|conclude|argue)"
# the phrases the validator's _DEICTIC rule rejects, as rewrite targets
_THIS_WORK = re.compile(rf"\b(?:this|the present|the current|our)\s+{_WORK}\b('s)?", re.IGNORECASE)
_AUTHORS = re.compile(r"\bthe\s+authors?\b('s|')?", re.IGNORECASE)
_WE = re.compile(rf"\bwe\s+({_VERBS})\b", re.IGNORECASE)


def family_name(name: str) -> str:
    """The family name of one author as written in arXiv metadata."""
    name = " ".join(str(name).split())
    if not name:
        return ""
    if _GROUP.search(name):
        return re.sub(r"^the\s+", "", name, flags=re.IGNORECASE)
    from nameparser import HumanName

    last = HumanName(name).last
    return last or name.split()[-1]


def short_authors(authors: Sequence[str]) -> str:
    """"Smith", "Smith & Lee", "Smith et al." (the astronomy short form); "" without authors."""
    families = [f for f in (family_name(a) for a in authors) if f]
    if not families:
        return ""
    if len(families) == 1:
        return families[0]
    if len(families) == 2:
        return f"{families[0]} & {families[1]}"
    return f"{families[0]} et al."


def author_citation(authors: Sequence[str], year: str | int | None) -> str:
    """"Smith et al. (2021)"; "" when the authors or the year are unknown."""
    short = short_authors(authors)
    return f"{short} ({year})" if short and year else ""


def rewrite_references(text: str, authors: Sequence[str], year: str | int | None) -> tuple[str, int]:
    """``text`` with "this paper" / "the authors" / "we find" turned into the author-year citation.

    Returns (new text, number of rewrites); unchanged (0) when the citation is unknown.
    """
    cite = author_citation(authors, year)
    if not cite or not text:
        return text, 0
    short = short_authors(authors)
    n = 0

    def work(m: re.Match) -> str:
        nonlocal n
        n += 1
        return cite + ("'s" if m.group(1) else "")

    def who(m: re.Match) -> str:
        nonlocal n
        n += 1
        return short + ("'s" if m.group(1) else "")

    def we(m: re.Match) -> str:
        nonlocal n
        n += 1
        return f"{cite} {m.group(1)}"

    text = _THIS_WORK.sub(work, text)
    text = _AUTHORS.sub(who, text)
    text = _WE.sub(we, text)
    return text, n
