"""Which file of an e-print is the paper: ``\\documentclass`` + ``\\begin{document}``, not a referee reply."""

from __future__ import annotations

import posixpath
import re

from .texerror import LatexError

TEX_SUFFIXES = (".tex", ".ltx", ".latex", "")
#: file names of referee responses / cover letters, never the paper
REFEREE_NAME = re.compile(r"(respon[sc]e|reply|referee|rebuttal|cover[-_ ]?letter|letter[-_ ]?to|changes|answer)", re.I)

_DOCCLASS = re.compile(r"^[^%\n]*\\document(?:class|style)\b", re.M)
_BEGIN_DOC = re.compile(r"\\begin\s*\{document\}")
_LETTER_CLASS = re.compile(r"\\documentclass\s*(?:\[[^\]]*\])?\s*\{letter\}")


def is_tex_name(name: str) -> bool:
    """True for file names that may hold TeX source (``.tex``, ``.ltx``, or no extension)."""
    base = posixpath.basename(name)
    ext = posixpath.splitext(base)[1].lower()
    return ext in TEX_SUFFIXES and not base.startswith(".")


def is_referee_response(name: str, text: str) -> bool:
    """A reply to the referee / cover letter: by file name or by the ``letter`` class."""
    return bool(REFEREE_NAME.search(posixpath.basename(name))) or bool(_LETTER_CLASS.search(text))


def find_main(files: dict[str, str]) -> str:
    """Pick the main file: has ``\\documentclass`` and ``\\begin{document}``, is not a referee reply.

    Ties go to conventional names (main, ms, paper), then to the largest file. A lone TeX file
    without ``\\documentclass`` is accepted as the paper. Raises :class:`LatexError` otherwise.
    """
    candidates = []
    for name, text in files.items():
        if not is_tex_name(name) or not _DOCCLASS.search(text):
            continue
        if is_referee_response(name, text):
            continue
        stem = posixpath.splitext(posixpath.basename(name))[0].lower()
        has_doc = bool(_BEGIN_DOC.search(text))
        conventional = stem in ("main", "ms", "paper", "manuscript", "article")
        candidates.append((has_doc, conventional, len(text), -name.count("/"), name))
    if candidates:
        return max(candidates)[4]
    tex = [n for n in files if is_tex_name(n) and not is_referee_response(n, files[n])]
    if len(tex) == 1:
        return tex[0]
    if any(is_referee_response(n, t) for n, t in files.items() if is_tex_name(n)):
        raise LatexError("no_main_tex", "only a referee response / cover letter found")
    raise LatexError("no_main_tex", f"no file with \\documentclass among {len(files)} files")
