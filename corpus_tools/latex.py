"""LaTeX source assembly: the e-print's files -> one expanded LaTeX string.

Steps, one module each: :mod:`.texdecode` (bytes -> text), :mod:`.mainfile` (which file is the
paper), :mod:`.includes` (``\\input``/``\\include``), :mod:`.texcomments` (comments, verbatim),
:mod:`.bibsource` (the ``.bbl``/``.bib``), :mod:`.bundled` (standard packages ignored),
:mod:`.macrodefs` + :mod:`.expander` (macros). The output is still LaTeX;
:mod:`corpus_tools.render` turns it into text. Nothing here runs TeX.
"""

from __future__ import annotations

import posixpath
import re

from .bibsource import bibliography_source, insert_bibliography
from .bundled import STANDARD_PACKAGES, is_library_sty
from .expander import MacroExpander
from .includes import MAX_ASSEMBLED_CHARS, inline_inputs
from .macrodefs import PROTECTED_NAMES, Macro, collect_macros
from .mainfile import REFEREE_NAME, TEX_SUFFIXES, find_main, is_referee_response, is_tex_name
from .texcomments import VERBATIM_ENVS, protect_verbatim, restore_verbatim, strip_comments
from .texdecode import decode_tex
from .texerror import LatexError

__all__ = [
    "LatexError", "Macro", "MacroExpander", "MAX_ASSEMBLED_CHARS", "PROTECTED_NAMES", "REFEREE_NAME", "STANDARD_PACKAGES",
    "TEX_SUFFIXES", "VERBATIM_ENVS", "assemble", "bibliography_source", "collect_macros", "decode_tex", "find_main",
    "inline_inputs", "insert_bibliography", "is_library_sty", "is_referee_response", "is_tex_name", "protect_verbatim",
    "restore_verbatim", "strip_comments",
]

_USEPACKAGE = re.compile(r"\\usepackage\s*(?:\[[^\]]*\])?\s*\{([^}]*)\}")


def assemble(files: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    """Decode every TeX file, pick the main one, inline its inputs, strip comments, expand macros.

    Returns the expanded LaTeX of the whole paper and info (main file, encoding, and
    ``fallback`` when expansion had to be reduced). Expansion is tried with every definition,
    then with the paper's own definitions only (no local ``.sty``), then built-ins only, then
    none: a macro bomb or a parser error costs expansion, never the paper.
    """
    texts: dict[str, str] = {}
    encodings: dict[str, str] = {}
    for name, data in files.items():
        if is_tex_name(name) or name.endswith((".sty", ".def", ".cls", ".bbl", ".bib")):
            texts[name], encodings[name] = decode_tex(data)
    if not texts:
        raise LatexError("no_tex", "the e-print holds no TeX source")
    main = find_main(texts)
    src = inline_inputs(strip_comments(texts[main]), {n: t for n, t in texts.items() if n != main and not n.endswith(".bib")})
    bib = bibliography_source(src, texts, main)
    if bib:
        src = insert_bibliography(src, bib)
    verbatim: list[str] = []
    src = protect_verbatim(src, verbatim)
    info = {"main_file": main, "encoding": encodings[main]}
    # macro definitions in the paper's own .sty files (\usepackage{mymacros}); bundled standard packages skipped
    local_sty = {posixpath.splitext(posixpath.basename(n))[0]: t for n, t in texts.items()
                 if n.endswith(".sty") and not is_library_sty(n, t)}
    sty_macros: dict[str, Macro] = {}
    if local_sty:
        used = {p.strip() for group in _USEPACKAGE.findall(src) for p in group.split(",")}
        defs = "".join(strip_comments(local_sty[p]) + "\n" for p in sorted(used & set(local_sty)))
        if defs:
            try:
                sty_macros, _ = collect_macros(defs)
            except (RecursionError, ValueError, IndexError) as exc:
                info["fallback"] = f"local packages ignored ({type(exc).__name__})"
    try:
        paper_macros, body = collect_macros(src)
    except (RecursionError, ValueError, IndexError) as exc:
        paper_macros, body = {}, src
        info["fallback"] = f"definitions not read ({type(exc).__name__})"
    attempts = (("all definitions", {**sty_macros, **paper_macros}, True), ("paper definitions only", paper_macros, True),
                ("built-in macros only", {}, True), ("no expansion", {}, False))
    failures: list[str] = []
    for label, user, builtins in attempts:
        if label == "paper definitions only" and not sty_macros:
            continue
        try:
            out = MacroExpander(user, builtins=builtins).expand(body)
        except (LatexError, RecursionError) as exc:
            failures.append(f"{label}: {getattr(exc, 'reason', type(exc).__name__)}")
            continue
        if failures:
            info["fallback"] = "; ".join(failures) + f" -> kept with {label}"
        return restore_verbatim(out, verbatim), info
    raise AssertionError("unreachable: expansion without macros cannot fail")
