"""The e-print's bibliography for citation rendering: its ``.bbl`` (natbib or biblatex) or ``.bib``,
put where LaTeX would read it."""

from __future__ import annotations

import posixpath
import re

from .citations import bbl_to_bibitems, bib_to_bibitems, is_biblatex_bbl
from .mainfile import _BEGIN_DOC

_BIBLIOGRAPHY_CMD = re.compile(r"\\bibliography\s*\{([^{}]*)\}")
_ADDBIBRESOURCE = re.compile(r"\\(?:addbibresource|bibliography)\s*(?:\[[^\]]*\])?\s*\{([^{}]*)\}")
_PRINTBIB = re.compile(r"\\printbibliography\b")
_END_DOCUMENT = re.compile(r"\\end\s*\{document\}")


def bibliography_source(src: str, texts: dict[str, str], main: str) -> str | None:
    """The e-print's bibliography as ``\\bibitem`` lines: its ``.bbl`` (natbib or biblatex) or ``.bib`` files.

    Returns None when the source already holds a ``thebibliography`` list or nothing is bundled.
    """
    doc = _BEGIN_DOC.search(src)
    if "\\bibitem" in (src[doc.end():] if doc else src):  # a preamble's \let\oldbibitem\bibitem is no list
        return None
    bbls = {n: t for n, t in texts.items() if n.endswith(".bbl")}
    bibs = {n: t for n, t in texts.items() if n.endswith(".bib")}
    if bbls:
        stem = posixpath.splitext(main)[0]
        name = stem + ".bbl" if stem + ".bbl" in bbls else sorted(bbls, key=lambda n: -len(bbls[n]))[0]
        bbl = bbls[name]
        items = bbl_to_bibitems(bbl) if is_biblatex_bbl(bbl) else bbl
        # a stale .bbl (an older version's) misses keys the text cites: take those from the .bib
        missing = {k for k in _cited_keys(src) if "{" + k + "}" not in items} if bibs else set()
        extra = _bib_items(src, bibs, missing) if missing else ""
        if not extra:
            return items
        end = items.rfind("\\end{thebibliography}")
        return items[:end] + extra + "\n" + items[end:] if end >= 0 else items + "\n" + extra
    if not bibs:
        return None
    items = _bib_items(src, bibs)
    return "\\begin{thebibliography}{}\n" + items + "\n\\end{thebibliography}\n" if items else None


_CITE_KEYS = re.compile(r"\\(?:[A-Za-z]*cite[A-Za-z]*|citetalias|citepalias)\*?\s*(?:\[[^\]]*\]\s*){0,2}\{([^{}]*)\}")


def _cited_keys(src: str) -> set[str]:
    return {k.strip() for group in _CITE_KEYS.findall(src) for k in group.split(",") if k.strip()}


def _bib_items(src: str, bibs: dict[str, str], only: set[str] | None = None) -> str:
    """``\\bibitem`` lines from the ``.bib`` files the source names (else all of them); ``only`` these keys."""
    wanted = [w.strip() for group in _ADDBIBRESOURCE.findall(src) for w in group.split(",") if w.strip()]
    chosen = []
    for w in wanted:
        for cand in (w, w + ".bib"):
            if cand in bibs and cand not in chosen:
                chosen.append(cand)
    chosen = chosen or sorted(bibs)
    items = "\n".join(bib_to_bibitems(bibs[n]) for n in chosen)
    if only is None:
        return items
    return "\n".join(line for line in items.split("\n") if line.rstrip().endswith(tuple("{" + k + "}" for k in only)))


def insert_bibliography(src: str, bib: str) -> str:
    """Put ``bib`` where LaTeX would read it: at ``\\bibliography{..}``/``\\printbibliography``, else before ``\\end{document}``."""
    if "thebibliography" not in bib:
        bib = "\\begin{thebibliography}{}\n" + bib + "\n\\end{thebibliography}\n"
    for pat in (_BIBLIOGRAPHY_CMD, _PRINTBIB):
        m = pat.search(src)
        if m:
            return src[: m.start()] + "\n" + bib + "\n" + src[m.end() :]
    m = _END_DOCUMENT.search(src)
    if m:
        return src[: m.start()] + "\n" + bib + "\n" + src[m.start() :]
    return src + "\n" + bib
