"""Split LaTeX into prose, math, tables and code, in one linear pass.

Pieces are ``("text" | "math" | "display" | "raw" | "code" | "verb", source)``. Math is
``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]`` and the display environments; "raw" are tables (kept
as LaTeX); "code" are verbatim-like environments (kept character for character); "verb" is
``\\verb|..|``. Escapes such as ``\\$`` stay prose. Environments are paired once up front
(:func:`corpus_tools.texparse.pair_envs`), and a failed search for a closer is remembered, so
thousands of unclosed openers cost one pass instead of one pass each.
"""

from __future__ import annotations

import re

from .texparse import pair_envs

MATH_ENVS = (
    "equation", "equation*", "align", "align*", "eqnarray", "eqnarray*", "gather", "gather*", "multline", "multline*",
    "flalign", "flalign*", "alignat", "alignat*", "displaymath", "math", "dmath", "dmath*", "subequations",
)
RAW_ENVS = (
    "table", "table*", "tabular", "tabular*", "tabularx", "deluxetable", "deluxetable*", "longtable", "longtable*",
    "planotable", "splittabular",
)
CODE_ENVS = ("verbatim", "verbatim*", "Verbatim", "lstlisting", "minted", "alltt", "BVerbatim", "LVerbatim")
_ALL_ENVS = MATH_ENVS + RAW_ENVS + CODE_ENVS

_SEG = re.compile(
    r"\\[\\$%&#_{}]|\$\$|\$|\\\(|\\\[|\\verb\*?(?=[^A-Za-z\s*])|\\begin\s*\{(" + "|".join(re.escape(e) for e in _ALL_ENVS) + r")\}"
)
_DOLLAR = re.compile(r"\\.|\$", re.S)
_DDOLLAR = re.compile(r"\\.|\$\$", re.S)
_PARBREAK = re.compile(r"\n[ \t]*\n")


def segments(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into typed pieces (see the module doc); unbalanced openers stay prose."""
    out: list[tuple[str, str]] = []
    pos = 0
    i = 0
    n = len(text)
    pairs: dict[int, tuple[str, int, int, int]] | None = None
    no_close: dict[str, int] = {}  # closer token -> an index after which it is known to be absent
    while i < n:
        m = _SEG.search(text, i)
        if m is None:
            break
        tok = m.group(0)
        if len(tok) == 2 and tok[0] == "\\" and tok[1] in "\\$%&#_{}":
            i = m.end()
            continue
        start = m.start()
        end: int | None = None
        kind = "math"
        if tok == "$$":
            end = _find(_DDOLLAR, "$$", text, m.end(), no_close)
            kind = "display"
        elif tok == "$":
            end = _find(_DOLLAR, "$", text, m.end(), no_close)
        elif tok in ("\\(", "\\["):
            close = "\\)" if tok == "\\(" else "\\]"
            if no_close.get(close, n + 1) > m.end():
                k = text.find(close, m.end())
                if k < 0:
                    no_close[close] = m.end()
                else:
                    end = k + 2
            kind = "math" if tok == "\\(" else "display"
        elif tok.startswith("\\verb"):
            delim = text[m.end()]
            k = text.find(delim, m.end() + 1)
            nl = text.find("\n", m.end() + 1)
            if k >= 0 and (nl < 0 or k < nl):
                end = k + 1
            kind = "verb"
        else:
            if pairs is None:
                pairs = pair_envs(text, _ALL_ENVS)
            got = pairs.get(start)
            env = m.group(1)
            if got is not None:
                end = got[3]
            kind = "raw" if env in RAW_ENVS else "code" if env in CODE_ENVS else "display"
        if end is None:  # unbalanced: treat the opener as text
            i = m.end()
            continue
        if start > pos:
            out.append(("text", text[pos:start]))
        out.append((kind, text[start:end]))
        pos = i = end
    if pos < n:
        out.append(("text", text[pos:]))
    return out


def _find(pat: re.Pattern, tok: str, text: str, i: int, no_close: dict[str, int]) -> int | None:
    """End of the closing ``tok``; None if unclosed or if the math would span a paragraph break."""
    if no_close.get(tok, len(text) + 1) <= i:
        return None
    for m in pat.finditer(text, i):
        if m.group(0) == tok:
            return None if _PARBREAK.search(text, i, m.start()) else m.end()
    no_close[tok] = i
    return None


def code_body(piece: str) -> str:
    """The content of a code environment (the ``\\begin`` line's options dropped), or of ``\\verb``."""
    if piece.startswith("\\verb"):
        j = 6 if piece.startswith("\\verb*") else 5
        return piece[j + 1 : -1]
    m = re.match(r"\\begin\s*\{([^}]*)\}(\s*\[[^\]\n]*\])?(\s*\{[^}\n]*\})?", piece)
    if m is None:
        return piece
    if m.group(1) != "minted" and m.group(3):  # only minted takes a mandatory {language}
        head = m.end(2) if m.group(2) else m.end(1) + 1
    else:
        head = m.end()
    e = piece.rfind("\\end")
    body = piece[head:e] if e >= head else piece[head:]
    return body.strip("\n")
