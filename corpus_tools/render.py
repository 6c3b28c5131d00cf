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
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .citations import Bibliography, read_aliases, read_bibitems, render_citations
from .macros import BUILTIN_MACROS, roman
from .refs import Label, number_labels, render_refs
from .segments import CODE_ENVS, MATH_ENVS, RAW_ENVS, code_body, segments
from .texparse import find_env_end, read_group, read_groups, read_optional, replace_commands, replace_envs, skip_ws

__all__ = ["CODE_ENVS", "MATH_ENVS", "RAW_ENVS", "Rendered", "cut_bibliography", "render", "segments"]

HARD_NL = "\x02"

DROP_ENVS = ("comment", "tikzpicture", "picture", "pspicture", "keywords", "titlepage", "CJK", "thebibliography",
             "references", "abstract")
FIGURE_ENVS = ("figure", "figure*", "wrapfigure", "SCfigure", "subfigure", "interactive", "animation")

_SECTION_LEVEL = {"part": "#", "chapter": "#", "section": "#", "subsection": "##", "subsubsection": "###",
                  "paragraph": "####", "subparagraph": "####"}
_FRONT_MATTER = (
    "title", "author", "affiliation", "affil", "altaffiliation", "altaffiltext", "institute", "email", "date", "keywords",
    "thanks", "shorttitle", "shortauthors", "received", "accepted", "published", "revised", "submitted", "journalinfo",
    "correspondingauthor", "titlerunning", "authorrunning", "offprints", "subjclass", "pacs", "collaboration", "address",
    "affilnum", "orcidlink", "submitjournal", "keyword", "KEYWORDS", "doi", "dedicated", "mail", "homepage",
    "bibliographystyle", "bibliography", "nocite", "label", "includegraphics", "vspace", "hspace", "setlength",
    "addtolength", "setcounter", "addtocounter", "pagestyle", "thispagestyle", "epsscale", "plotone", "linenumbers",
    "graphicspath", "newcounter", "renewenvironment", "newenvironment", "newtheorem", "hypersetup", "usepackage",
    "printbibliography", "altaffilmark", "facility", "facilities", "software", "tableofcontents", "phantom",
    "markboth", "settowidth", "fontsize", "selectfont", "resizebox", "epsfig", "psfig", "epsfxsize", "rotatebox",
    "titlehead", "pagerange", "pubyear", "volume", "copyrightyear", "journal", "footnotemark",
    "listoftodos", "color", "pagecolor", "definecolor", "defcitealias", "AuthorCallLimit", "shortauthor", "shorttitle", "def", "makeatletter", "makeatother",
    "definechangesauthor", "orcid", "arxiv", "newpage", "clearpage", "bigskip", "medskip", "smallskip", "centering",
)
_FRONT_NARGS = {"newenvironment": 3, "renewenvironment": 3, "setlength": 2, "addtolength": 2, "setcounter": 2,
                "addtocounter": 2, "markboth": 2, "settowidth": 2, "fontsize": 2, "resizebox": 2, "rotatebox": 1,
                "newtheorem": 2, "footnotemark": 0, "definecolor": 3, "pagecolor": 1, "listoftodos": 0,
                "makeatletter": 0, "makeatother": 0, "newpage": 0, "clearpage": 0, "bigskip": 0, "medskip": 0,
                "smallskip": 0, "centering": 0, "definechangesauthor": 1}
_UNWRAP = (
    "textbf", "textit", "textsl", "textsc", "textrm", "texttt", "textsf", "textup", "textnormal", "emph", "underline",
    "mbox", "hbox", "fbox", "makebox", "framebox", "text", "uline", "textmd", "em", "bf", "it", "url", "nolinkurl",
    "MakeUppercase", "uppercase", "lowercase", "textsuperscript", "textsubscript", "object", "dataset", "anchor",
    "acronym", "ac", "acs", "acl", "gls", "texorpdfstring", "hl", "highlight", "hlc", "uwave", "textcolor", "colorbox",
    "fcolorbox", "added", "sethlcolor", "ul",
)
#: arguments that are not text, per command: the text argument kept is the last one
_UNWRAP_NARGS = {"textcolor": 2, "colorbox": 2, "fcolorbox": 3, "texorpdfstring": 2, "parbox": 2}
#: colour / revision markup (ulem, soul, changes): deleted text goes, the replacement stays
_REVISION = {"st": None, "sout": None, "xout": None, "deleted": None, "replaced": 0, "comment": None,
             "todo": None, "marginpar": None, "marginnote": None}
#: arguments after \begin{name} that are layout, not text: (optional args, mandatory args)
_ENV_ARGS = {"minipage": (1, 1), "wrapfigure": (1, 2), "wraptable": (1, 2), "multicols": (0, 1), "multicols*": (0, 1),
             "list": (0, 2), "adjustbox": (0, 1), "tcolorbox": (1, 0), "mdframed": (1, 0), "spacing": (0, 1),
             "addmargin": (1, 1), "landscape": (0, 0), "center": (0, 0), "figure": (1, 0), "table": (1, 0)}
_TEXT_BUILTINS = {k: b for k, (n, b) in BUILTIN_MACROS.items() if n == 0 and not b.startswith("\\ensuremath")}

_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304", ".": "\u0307",
            "u": "\u0306", "v": "\u030c", "H": "\u030b", "c": "\u0327", "k": "\u0328", "r": "\u030a", "d": "\u0323",
            "b": "\u0331"}
_SYMBOLS = {
    "o": "ø", "O": "Ø", "ss": "ß", "aa": "å", "AA": "Å", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "l": "ł",
    "L": "Ł", "i": "ı", "j": "ȷ", "ldots": "...", "dots": "...", "textellipsis": "...", "textendash": "–",
    "textemdash": "—", "textdegree": "°", "degree": "°", "textasciitilde": "~", "textbackslash": "\\",
    "textless": "<", "textgreater": ">", "textbar": "|", "S": "§", "P": "¶", "copyright": "©", "pounds": "£",
    "dag": "†", "ddag": "‡", "textregistered": "®", "texttrademark": "™", "LaTeX": "LaTeX", "TeX": "TeX",
    "quad": " ", "qquad": " ", "enspace": " ", "thinspace": " ", "newline": HARD_NL, "linebreak": HARD_NL,
    "par": HARD_NL + HARD_NL, "textperthousand": "‰", "textmu": "µ", "micro": "µ", "sim": "~", "pm": "±",
    "times": "×", "approx": "≈", "odot": "⊙", "textpm": "±", "texttimes": "×", "farcs": ".″", "farcm": ".′", "fdg": ".°",
    "acknowledgments": HARD_NL * 2 + "# Acknowledgments" + HARD_NL * 2,
    "acknowledgements": HARD_NL * 2 + "# Acknowledgements" + HARD_NL * 2,
    "item": HARD_NL + "- ", "noindent": "", "indent": "",
}
_WORDS = {**_TEXT_BUILTINS, **_SYMBOLS}

_ESCAPES = {"%": "\ue000", "&": "\ue001", "#": "\ue002", "_": "\ue003", "$": "\ue004", "{": "\ue005", "}": "\ue006"}
_UNESCAPE = {v: k for k, v in _ESCAPES.items()}


@dataclass
class Rendered:
    """Result of rendering: body text plus title/abstract found in the source (fallbacks)."""

    text: str
    title: str | None
    abstract: str | None
    #: set when a rendering step failed and a simpler one produced the text
    fallback: str | None = None


# ------------------------------------------------------------------ bibliography

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


# ------------------------------------------------------------------ per-segment cleanup

_ENSUREMATH = ("ensuremath",)
_ACCENT_RE = re.compile(r"\\([\'`^\"~=.])\s*(?:\{\s*(\\?[A-Za-z])\s*\}|(\\?[A-Za-z]))|\\([uvHckrdb])\s*\{\s*(\\?[A-Za-z])\s*\}")
_LINEBREAK = re.compile(r"\\\\\*?(?:\s*\[[^\]]*\])?")
_ROMAN_RE = re.compile(r"\\romannumeral\s*\{?\s*(\d+)(?:\s*\})?")
_SPACES = re.compile(r"\\[,;:> ]|\\!|~")
_BEGIN = re.compile(r"\\begin\s*\{([^{}]*)\}")
_END = re.compile(r"\\end\s*\{[^{}]*\}")
_PLACEMENT = re.compile(r"\s*\[[htbpH!]{1,6}\]")
_CMD = re.compile(r"\\([A-Za-z@]+)\*?")
_OTHER_CMD = re.compile(r"\\([^A-Za-z@\s])")


def _accent(m: re.Match) -> str:
    mark, base = (m.group(1), m.group(2) or m.group(3)) if m.group(1) else (m.group(4), m.group(5))
    if base.startswith("\\"):
        base = {"\\i": "i", "\\j": "j"}.get(base, base[1:])
    return unicodedata.normalize("NFC", base + _ACCENTS[mark])


def _text_cleanup(s: str) -> str:
    if "\\" in s:
        s = _ACCENT_RE.sub(_accent, s)
        for esc, ph in _ESCAPES.items():
            s = s.replace("\\" + esc, ph)
        s = _LINEBREAK.sub(HARD_NL, s)
        s = _ROMAN_RE.sub(lambda m: roman(m.group(1)), s)
        if "\\begin" in s:
            s = _drop_begin_args(s)
        s = _END.sub(HARD_NL, s)
        s = _SPACES.sub(" ", s)
        s = _CMD.sub(lambda m: _WORDS.get(m.group(1), ""), s)
        s = _OTHER_CMD.sub(lambda m: "" if m.group(1) in "/@-" else m.group(1), s)
    else:
        for esc, ph in _ESCAPES.items():
            s = s.replace("\\" + esc, ph)
    s = _SPACES.sub(" ", s)
    if "{" in s or "}" in s:
        s = s.replace("{", "").replace("}", "")
    s = s.replace("---", "—").replace("--", "–").replace("``", "\u201c").replace("''", "\u201d")
    return s


def _drop_begin_args(s: str) -> str:
    """``\\begin{name}`` -> a line break, with its layout arguments (placement, widths) dropped."""
    out: list[str] = []
    pos = 0
    for m in _BEGIN.finditer(s):
        if m.start() < pos:
            continue
        out.append(s[pos : m.start()])
        out.append(HARD_NL)
        j = m.end()
        nopt, nargs = _ENV_ARGS.get(m.group(1), (0, 0))
        p = _PLACEMENT.match(s, j)
        if p:
            j = p.end()
        for _ in range(nopt):
            got = read_optional(s, skip_ws(s, j))
            if got:
                j = got[1]
        for _ in range(nargs):
            got = read_group(s, skip_ws(s, j))
            if got:
                j = got[1]
        pos = j
    out.append(s[pos:])
    return "".join(out)


def _restore(s: str) -> str:
    for ph, ch in _UNESCAPE.items():
        s = s.replace(ph, ch)
    return s


_XSPACE = re.compile(r"\\xspace(?![A-Za-z@])\s*")


def _math_cleanup(s: str) -> str:
    for _ in range(8):  # nested (a math macro's argument holding another): one level per round
        if "\\ensuremath" not in s:
            break
        s = replace_commands(s, _ENSUREMATH, lambda n, o, a: a[0], 1, nopts=0)
    if "\\label" in s:
        s = replace_commands(s, ("label",), lambda *a: "", 1, nopts=0)
    if "\\xspace" in s:  # a text-spacing helper from an \ensuremath-style macro: nothing in math
        s = _XSPACE.sub("", s)
    return s


def _raw_cleanup(s: str, bib: Bibliography | None = None, labels: dict[str, Label] | None = None) -> str:
    """Tables stay LaTeX; citations and references in them are rendered, labels dropped, built-in math resolved."""
    if "\\cite" in s:
        s = render_citations(s, bib or Bibliography())
    if "ref" in s:
        s = render_refs(s, labels or {})
    if "\\label" in s:
        s = replace_commands(s, ("label",), lambda *a: "", 1, nopts=0)
    if "\\ensuremath" not in s:
        return s
    m = re.match(r"\\begin\s*\{[^}]*\}", s)
    e = s.rfind("\\end")
    if m is None or e < m.end():
        return s
    out = []
    for kind, piece in segments(s[m.end() : e]):
        if kind == "text":
            out.append(replace_commands(piece, _ENSUREMATH, lambda n, o, a: "$" + a[0] + "$", 1, nopts=0))
        elif kind == "raw":
            out.append(_raw_cleanup(piece))
        else:
            out.append(_math_cleanup(piece))
    return s[: m.end()] + "".join(out) + s[e:]


_MULTI_SPACE = re.compile(r"  +")
_MANY_NL = re.compile(r"\n{3,}")
_PARA = re.compile(r"\n[ \t]*\n\s*")
_CODE_SLOT = re.compile("\x03(\\d+)\x03")


def _join(parts: list[tuple[str, str]]) -> str:
    out: list[str] = []
    code: list[str] = []
    for kind, piece in parts:
        if kind == "text":
            if "\n" in piece:
                piece = _PARA.sub(HARD_NL + HARD_NL, piece)
            out.append(piece.replace("\n", " "))
        elif kind == "math":
            out.append(piece)
        elif kind == "display":
            out.append(HARD_NL + re.sub(r"\n[ \t]*(?=\n)", "", piece.strip()) + HARD_NL)
        elif kind == "code":  # kept character for character, as a fenced block
            code.append("```\n" + code_body(piece) + "\n```")
            out.append(f"{HARD_NL}{HARD_NL}\x03{len(code) - 1}\x03{HARD_NL}{HARD_NL}")
        elif kind == "verb":
            code.append("`" + code_body(piece) + "`")
            out.append(f"\x03{len(code) - 1}\x03")
        else:
            out.append(HARD_NL + piece.strip() + HARD_NL)
    text = "".join(out)
    if "\t" in text:
        text = text.replace("\t", " ")
    if "  " in text:
        text = _MULTI_SPACE.sub(" ", text)
    text = text.replace(HARD_NL, "\n")
    text = "\n".join(line.strip(" ") for line in text.split("\n"))
    if "\n\n\n" in text:
        text = _MANY_NL.sub("\n\n", text)
    text = _restore(text).strip()
    if code:
        text = _CODE_SLOT.sub(lambda m: code[int(m.group(1))], text)
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
