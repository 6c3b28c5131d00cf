"""Expanded LaTeX -> plain text with math kept as LaTeX source.

Rules (each tested on real-shaped snippets in tests/test_corpus_latex.py and the conversion
suite tests/conversion/cases.yaml): body only (preamble dropped), front matter removed (title and
abstract come from metadata), bibliography cut wherever it is (``thebibliography``,
``references``, ``\\bibliography``, ``\\section*{References}`` + ``\\reference`` lines) while later
appendices are kept; sections -> Markdown headings, figures -> their captions, tables kept as
LaTeX, code environments -> fenced blocks kept character for character; citations -> author-year
or numeric text from the bibliography (:mod:`corpus_tools.citations`); ``\\ref`` family -> the
numbers LaTeX prints (:mod:`corpus_tools.refs`); colour and revision markup -> the final text;
accents -> Unicode; text-mode markup removed. Math (``$``, ``$$``, ``\\(``, ``\\[``,
equation/align/... environments) is copied verbatim: prose rewrites never run inside it (only
``\\label`` is dropped there).

The rule tables live in :mod:`.textrules`, the bibliography cut in :mod:`.bibcut`, per-segment
cleanup (prose, math, raw) in :mod:`.cleanup`; this module does the body's structure and the entry point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .citations import Bibliography, read_aliases, read_bibitems, render_citations
from .refs import Label, number_labels, render_refs
from .segments import CODE_ENVS, MATH_ENVS, RAW_ENVS, segments
from .texparse import find_env_end, read_group, read_groups, read_optional, replace_commands, replace_envs, skip_ws
from .bibcut import cut_bibliography
from .cleanup import _join, _math_cleanup, _raw_cleanup, _text_cleanup
from .textrules import (_FRONT_MATTER, _FRONT_NARGS, _REVISION, _SECTION_LEVEL, _UNWRAP, _UNWRAP_NARGS, DROP_ENVS,
                        FIGURE_ENVS, HARD_NL)

__all__ = ["CODE_ENVS", "MATH_ENVS", "RAW_ENVS", "Rendered", "cut_bibliography", "render", "segments"]


@dataclass
class Rendered:
    """Result of rendering: body text plus title/abstract found in the source (fallbacks)."""

    text: str
    title: str | None
    abstract: str | None
    #: set when a rendering step failed and a simpler one produced the text
    fallback: str | None = None


# ------------------------------------------------------------------ whole-body structure


def _section(appendix: bool):
    def handler(name: str, opts: list, args: list[str]) -> str:
        title = args[0].strip()
        if not re.sub(r"[\s~{}]|\\[ ,;:!]|\\(?:quad|qquad|hfill|hspace\*?\{[^{}]*\})", "", title):
            return HARD_NL + HARD_NL  # \section*{~}: no heading
        if appendix and name in ("section", "chapter"):
            title = f"Appendix: {title}"
        return f"{HARD_NL}{HARD_NL}{_SECTION_LEVEL[name]} {title}{HARD_NL}{HARD_NL}"
    return handler


def _caption_of(body: str) -> str:
    parts = []
    for m in re.finditer(r"\\(?:caption|figcaption)\*?\s*", body):
        j = skip_ws(body, m.end())
        opt = read_optional(body, j)
        if opt is not None:
            j = skip_ws(body, opt[1])
        got = read_group(body, j)
        if got is not None:
            parts.append(got[0].strip())
    return " ".join(parts)


def _figure(name: str, body: str) -> str:
    cap = _caption_of(body)
    return f"{HARD_NL}{HARD_NL}Figure: {cap}{HARD_NL}{HARD_NL}" if cap else HARD_NL


_TITLE = re.compile(r"\\title(?![A-Za-z@])\s*")
_TITLE_NOTES = ("thanks", "footnote", "footnotemark", "altaffilmark", "fnmsep", "orcidlink", "tnoteref")


def _front_matter(text: str) -> tuple[str, str | None, str | None]:
    """Remove title/author/abstract blocks; return (text, title, abstract) as found."""
    title = None
    abstract = None
    m = _TITLE.search(text)
    if m:
        j = skip_ws(text, m.end())
        opt = read_optional(text, j)
        got = read_group(text, skip_ws(text, opt[1]) if opt else j)
        if got:
            title = replace_commands(got[0], _TITLE_NOTES, lambda *a: "",
                                     lambda n: 0 if n in ("footnotemark", "fnmsep") else 1, nopts=1)
    m = re.search(r"\\begin\s*\{abstract\}", text)
    if m:
        end = find_env_end(text, "abstract", m.end())
        if end is not None:
            abstract = text[m.end() : text.rfind("\\end", m.end(), end)]
    else:
        m = re.search(r"\\abstract\s*(?=\{)", text)
        if m:  # A&A: \abstract{context}{aims}{methods}{results}{conclusions}
            parts, j = read_groups(text, m.end(), 5)
            abstract = " ".join(p.strip() for p in parts if p.strip())
            text = text[: m.start()] + text[j:]
    text = replace_envs(text, DROP_ENVS, lambda n, b: HARD_NL)
    text = replace_commands(text, _FRONT_MATTER, lambda *a: "", lambda n: _FRONT_NARGS.get(n, 1), nopts=2)
    return text, title, abstract


_ROMAN_WORD = re.compile(r"[ivx]{1,5}")  # \\textsc{ii} is an ionisation stage (H II); other small caps keep their case


def _until_stable(text: str, step, rounds: int = 4) -> str:
    """Apply ``step`` until nothing changes (nested markup), at most ``rounds`` times."""
    for _ in range(rounds):
        new = step(text)
        if new == text:
            break
        text = new
    return text


def _unwrap(text: str) -> str:
    return replace_commands(text, _UNWRAP, lambda n, o, a: a[-1], lambda n: _UNWRAP_NARGS.get(n, 1), nopts=2)


def _revision(text: str) -> str:
    return replace_commands(text, tuple(_REVISION), lambda n, o, a: "" if _REVISION[n] is None else a[_REVISION[n]],
                            lambda n: 2 if n == "replaced" else 1, nopts=1)


def _structure(text: str, bib: Bibliography | None = None, labels: dict[str, Label] | None = None) -> str:
    """Section headings, figures, citations, references, footnotes, markup: prose only (math is protected)."""
    text = replace_envs(text, FIGURE_ENVS, _figure)
    head, sep, tail = text.partition("\\appendix")
    if not sep:
        m = re.search(r"\\begin\s*\{(?:appendix|appendices|appendixes)\}", text)
        if m:
            head, sep, tail = text[: m.start()], "x", text[m.end() :]
    names = tuple(_SECTION_LEVEL)
    head = replace_commands(head, names, _section(False), 1, nopts=1)
    if sep:
        tail = replace_commands(tail, names, _section(True), 1, nopts=1)
        text = head + HARD_NL + tail
    else:
        text = head
    if "\\" in text:
        text = _revision(text)
        text = render_citations(text, bib or Bibliography())
        text = render_refs(text, labels or {})
        text = replace_commands(text, ("footnote", "footnotetext"), lambda n, o, a: f" ({a[0].strip()})", 1)
        text = replace_commands(text, ("href",), lambda n, o, a: a[1], 2)
        text = replace_commands(text, ("parbox",), lambda n, o, a: a[1], 2, nopts=2)
        text = replace_commands(text, ("textsc",), lambda n, o, a: a[0].upper() if _ROMAN_WORD.fullmatch(a[0].strip()) else a[0], 1)
        text = _until_stable(text, _unwrap)
        text = replace_commands(text, ("caption", "tablecaption", "tablenotetext", "tablecomments"), lambda n, o, a: a[0], 1)
    return text


# ------------------------------------------------------------------ entry point

_DOC_BEGIN = re.compile(r"\\begin\s*\{document\}")
_DOC_END = re.compile(r"\\end\s*\{document\}")
_SLOT = re.compile("\x01(\\d+)\x01")
_BIBLATEX = re.compile(r"\\usepackage\s*(?:\[[^\]]*\])?\s*\{biblatex\}|\\addbibresource")


def render(src: str) -> Rendered:
    """Turn assembled (comment-free, macro-expanded) LaTeX into text; see the module doc for rules.

    If a rendering step fails on a malformed source, the text is produced without citations,
    references and structure rewrites instead (``Rendered.fallback`` says why): never lost.
    """
    try:
        return _render(src, full=True)
    except (RecursionError, ValueError, IndexError, KeyError, TypeError) as exc:
        out = _render(src, full=False)
        out.fallback = f"{type(exc).__name__}: {exc}"[:200]
        return out


def _protect(parts: list[tuple[str, str]], store: list[tuple[str, str]]) -> str:
    """Prose with every non-prose piece replaced by a ``\\x01<n>\\x01`` slot (so prose rewrites never touch math)."""
    out = []
    for kind, piece in parts:
        if kind == "text":
            out.append(piece)
        else:
            store.append((kind, piece))
            out.append(f"\x01{len(store) - 1}\x01")
    return "".join(out)


def _unprotect(text: str, store: list[tuple[str, str]]) -> list[tuple[str, str]]:
    chunks = _SLOT.split(text)
    parts: list[tuple[str, str]] = []
    for i, chunk in enumerate(chunks):
        if i % 2 == 0:
            if chunk:
                parts.append(("text", chunk))
        else:
            parts.append(store[int(chunk)])
    return parts


def _slots_to_source(text: str | None, store: list[tuple[str, str]]) -> str | None:
    if text is None or "\x01" not in text:
        return text
    return _SLOT.sub(lambda m: store[int(m.group(1))][1], text)


def _render(src: str, full: bool) -> Rendered:
    if "\x01" in src or "\x03" in src:
        src = src.replace("\x01", " ").replace("\x03", " ")
    m = _DOC_BEGIN.search(src)
    preamble, body = (src[: m.start()], src[m.end() :]) if m else ("", src)
    e = _DOC_END.search(body)
    if e:
        body = body[: e.start()]
    bib: Bibliography | None = None
    labels: dict[str, Label] = {}
    if full:
        bib = read_bibitems(body)
        read_aliases(src, bib)
        bib.biblatex = bool(_BIBLATEX.search(preamble))
    body = cut_bibliography(body)
    if full:
        labels = number_labels(body)
    store: list[tuple[str, str]] = []
    prose = _protect(_with_ensuremath(segments(body)), store)
    prose, title, abstract = _front_matter(prose)
    title, abstract = _slots_to_source(title, store), _slots_to_source(abstract, store)
    if title is None or abstract is None:
        _, t2, a2 = _front_matter(preamble)
        title = title or t2
        abstract = abstract or a2
    if full:
        prose = _structure(prose, bib, labels)
    parts: list[tuple[str, str]] = []
    for kind, piece in _unprotect(prose, store):
        if kind == "text":
            parts.append((kind, _text_cleanup(piece)))
        elif kind == "raw":
            parts.append((kind, _raw_cleanup(piece, bib, labels)))
        elif kind in ("code", "verb"):
            parts.append((kind, piece))
        else:
            parts.append((kind, _math_cleanup(piece)))
    return Rendered(_join(parts), _inline(title, bib, labels), _inline(abstract, bib, labels))


_ENSURE_RE = re.compile(r"\\ensuremath\s*(?=\{)")


def _with_ensuremath(parts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """In text pieces, turn ``\\ensuremath{X}`` (built-in math macros) into math pieces ``$X$``."""
    out: list[tuple[str, str]] = []
    for kind, piece in parts:
        if kind != "text" or "\\ensuremath" not in piece:
            out.append((kind, piece))
            continue
        pos = 0
        for m in _ENSURE_RE.finditer(piece):
            if m.start() < pos:
                continue
            got = read_group(piece, m.end())
            if got is None:
                continue
            out.append(("text", piece[pos : m.start()]))
            out.append(("math", "$" + _math_cleanup(got[0]) + "$"))
            pos = got[1]
        out.append(("text", piece[pos:]))
    return out


def _inline(fragment: str | None, bib: Bibliography | None = None, labels: dict[str, Label] | None = None) -> str | None:
    """Render a short fragment (title, abstract) to one line of text."""
    if fragment is None:
        return None
    store: list[tuple[str, str]] = []
    prose = _structure(_protect(_with_ensuremath(segments(fragment)), store), bib, labels)
    parts = [(k, _text_cleanup(p) if k == "text" else p if k in ("code", "verb") else _math_cleanup(p))
             for k, p in _unprotect(prose, store)]
    return re.sub(r"\s+", " ", _join(parts)).strip() or None
