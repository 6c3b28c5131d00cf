"""Cutting the bibliography out of the body wherever it is, keeping later appendices."""

from __future__ import annotations

import re

from .texparse import replace_commands, replace_envs

_BIB_HEADING = re.compile(
    r"\\(?:section|subsection|chapter)\*?\s*\{\s*(?:\\[a-z]+\s*)?(?:References?|Bibliography|Literature\s+Cited|"
    r"REFERENCES|BIBLIOGRAPHY)\s*\}|\\references\b|\\begin\s*\{references\}"
)
_BIB_STOP = re.compile(r"\\(?:section|chapter)\*?\s*[\[{]|\\appendix\b|\\begin\s*\{appendix|\\end\s*\{document\}|\\onecolumngrid\\appendix")
_REFERENCE_LINE = re.compile(r"^[ \t]*\\(?:reference|refitem|bibitem|rf)\b.*(?:\n|$)", re.M)


def cut_bibliography(body: str) -> str:
    """Remove the bibliography wherever it is, keeping anything after it (appendices)."""
    body = replace_envs(body, ("thebibliography", "references", "bibliography"), lambda n, b: "\n")
    out: list[str] = []
    pos = 0
    while True:
        m = _BIB_HEADING.search(body, pos)
        if m is None:
            break
        out.append(body[pos : m.start()])
        stop = _BIB_STOP.search(body, m.end())
        pos = len(body) if stop is None else stop.start()
    out.append(body[pos:])
    body = "".join(out)
    body = replace_commands(body, ("bibliography", "bibliographystyle", "nocite", "bibpunct"), lambda *a: "", 1)
    body = re.sub(r"\\printbibliography(\[[^\]]*\])?", "", body)
    return _REFERENCE_LINE.sub("", body)
