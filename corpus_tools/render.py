"""Expanded LaTeX -> plain text with math kept as LaTeX source.

Rules (each tested on a real-shaped snippet in tests/test_corpus_latex.py):
body only (preamble dropped), front matter removed (title and abstract come from metadata),
bibliography cut wherever it is (``thebibliography``, ``references``, ``\\bibliography``,
``\\section*{References}`` + ``\\reference`` lines) while later appendices are kept,
sections -> Markdown headings, figures -> their captions, tables kept as LaTeX, citations
removed, ``\\ref`` kept, accents -> Unicode, text-mode markup removed; inline and display math
(``$``, ``$$``, ``\\(``, ``\\[``, equation/align/... environments) are copied verbatim.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .macros import roman
from .texparse import find_env_end, read_group, read_optional, replace_commands, replace_envs, skip_ws

HARD_NL = "\x02"

MATH_ENVS = (
    "equation", "equation*", "align", "align*", "eqnarray", "eqnarray*", "gather", "gather*", "multline", "multline*",
    "flalign", "flalign*", "alignat", "alignat*", "displaymath", "math", "dmath", "dmath*", "subequations",
)
RAW_ENVS = (
    "table", "table*", "tabular", "tabular*", "tabularx", "deluxetable", "deluxetable*", "longtable", "longtable*",
    "verbatim", "lstlisting", "planotable", "splittabular",
)
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
)
_FRONT_NARGS = {"newenvironment": 3, "renewenvironment": 3, "setlength": 2, "addtolength": 2, "setcounter": 2,
                "addtocounter": 2, "markboth": 2, "settowidth": 2, "fontsize": 2, "resizebox": 2, "rotatebox": 1,
                "newtheorem": 2}
_UNWRAP = (
    "textbf", "textit", "textsl", "textsc", "textrm", "texttt", "textsf", "textup", "textnormal", "emph", "underline",
    "mbox", "hbox", "fbox", "makebox", "framebox", "text", "uline", "textmd", "em", "bf", "it", "url", "nolinkurl",
    "MakeUppercase", "uppercase", "lowercase", "textsuperscript", "textsubscript", "object", "dataset", "anchor",
    "acronym", "ac", "acs", "acl", "gls", "texorpdfstring",
)
_CITE = ("cite", "citep", "citet", "citealt", "citealp", "citeauthor", "citeyear", "citeyearpar", "Cite", "Citep",
         "Citet", "parencite", "textcite", "autocite", "nocite", "citenum", "citetext")
_REF = ("ref", "eqref", "autoref", "cref", "Cref", "pageref", "vref", "Ref", "nameref", "fref", "Fref")

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
    "times": "×", "approx": "≈", "odot": "⊙", "textpm": "±", "texttimes": "×", "farcs": "″", "farcm": "′", "fdg": "°",
    "acknowledgments": HARD_NL * 2 + "# Acknowledgments" + HARD_NL * 2,
    "acknowledgements": HARD_NL * 2 + "# Acknowledgements" + HARD_NL * 2,
    "item": HARD_NL + "- ", "noindent": "", "indent": "",
}

_ESCAPES = {"%": "\ue000", "&": "\ue001", "#": "\ue002", "_": "\ue003", "$": "\ue004", "{": "\ue005", "}": "\ue006"}
_UNESCAPE = {v: k for k, v in _ESCAPES.items()}


@dataclass
class Rendered:
    """Result of rendering: body text plus title/abstract found in the source (fallbacks)."""

    text: str
    title: str | None
    abstract: str | None


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


# ------------------------------------------------------------------ segmentation

_SEG = re.compile(
    r"\\[\\$%&#_{}]|\$\$|\$|\\\(|\\\[|\\begin\s*\{(" + "|".join(re.escape(e) for e in MATH_ENVS + RAW_ENVS) + r")\}"
)
_DOLLAR = re.compile(r"\\.|\$", re.S)
_DDOLLAR = re.compile(r"\\.|\$\$", re.S)


def segments(text: str) -> list[tuple[str, str]]:
    """Split into ("text" | "math" | "display" | "raw", source) pieces; escapes like ``\\$`` stay text."""
    out: list[tuple[str, str]] = []
    pos = 0
    i = 0
    n = len(text)
    while i < n:
        m = _SEG.search(text, i)
        if m is None:
            break
        tok = m.group(0)
        if tok[0] == "\\" and len(tok) == 2 and tok[1] in "\\$%&#_{}":
            i = m.end()
            continue
        start = m.start()
        end: int | None
        kind = "math"
        if tok == "$$":
            end = _find(_DDOLLAR, "$$", text, m.end())
            kind = "display"
        elif tok == "$":
            end = _find(_DOLLAR, "$", text, m.end())
        elif tok == "\\(":
            k = text.find("\\)", m.end())
            end = None if k < 0 else k + 2
        elif tok == "\\[":
            k = text.find("\\]", m.end())
            end = None if k < 0 else k + 2
            kind = "display"
        else:
            env = m.group(1)
            end = find_env_end(text, env, m.end())
            kind = "raw" if env in RAW_ENVS else "display"
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


def _find(pat: re.Pattern, tok: str, text: str, i: int) -> int | None:
    """End of the closing ``tok``; None if unclosed or if the math would span a paragraph break."""
    for m in pat.finditer(text, i):
        if m.group(0) == tok:
            return None if _PARBREAK.search(text, i, m.start()) else m.end()
    return None


_PARBREAK = re.compile(r"\n[ \t]*\n")


# ------------------------------------------------------------------ whole-body structure


def _section(appendix: bool):
    def handler(name: str, opts: list, args: list[str]) -> str:
        title = args[0].strip()
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


def _front_matter(text: str) -> tuple[str, str | None, str | None]:
    """Remove title/author/abstract blocks; return (text, title, abstract) as found."""
    title = None
    abstract = None
    m = re.search(r"\\title\s*", text)
    if m:
        j = skip_ws(text, m.end())
        opt = read_optional(text, j)
        got = read_group(text, skip_ws(text, opt[1]) if opt else j)
        if got:
            title = got[0]
    m = re.search(r"\\begin\s*\{abstract\}", text)
    if m:
        end = find_env_end(text, "abstract", m.end())
        if end is not None:
            abstract = text[m.end() : text.rfind("\\end", m.end(), end)]
    else:
        m = re.search(r"\\abstract\s*(?=\{)", text)
        if m:  # A&A: \abstract{context}{aims}{methods}{results}{conclusions}
            j = m.end()
            parts = []
            while len(parts) < 5:
                got = read_group(text, skip_ws(text, j))
                if got is None:
                    break
                parts.append(got[0])
                j = got[1]
            abstract = " ".join(p.strip() for p in parts if p.strip())
            text = text[: m.start()] + text[j:]
    text = replace_envs(text, DROP_ENVS, lambda n, b: HARD_NL)
    text = replace_commands(text, _FRONT_MATTER, lambda *a: "", lambda n: _FRONT_NARGS.get(n, 1), nopts=2)
    return text, title, abstract


def _structure(text: str) -> str:
    """Section headings, figures, citations, footnotes, lists, formatting (math-safe rewrites)."""
    text = replace_envs(text, FIGURE_ENVS, _figure)
    head, sep, tail = text.partition("\\appendix")
    if not sep:
        m = re.search(r"\\begin\s*\{appendix(?:es)?\}", text)
        if m:
            head, sep, tail = text[: m.start()], "x", text[m.end() :]
    names = tuple(_SECTION_LEVEL)
    head = replace_commands(head, names, _section(False), 1, nopts=1)
    if sep:
        tail = replace_commands(tail, names, _section(True), 1, nopts=1)
        text = head + HARD_NL + tail
    else:
        text = head
    text = replace_commands(text, _CITE, lambda *a: "\ue020", 1, nopts=2)
    text = re.sub(r"[\s~]*\ue020(?:\s*[,;]\s*\ue020)*", "", text)  # "law \citep{x}." -> "law."
    text = text.replace("(\ue020)", "").replace("\ue020", "")
    text = replace_commands(text, ("footnote", "footnotetext"), lambda n, o, a: f" ({a[0].strip()})", 1)
    text = replace_commands(text, ("href",), lambda n, o, a: a[1], 2)
    text = replace_commands(text, ("textsc",), lambda n, o, a: a[0].upper() if "\\" not in a[0] and "$" not in a[0] else a[0], 1)
    text = replace_commands(text, _UNWRAP, lambda n, o, a: a[0], 1, nopts=2)
    text = replace_commands(text, ("caption", "tablecaption", "tablenotetext", "tablecomments"), lambda n, o, a: a[0], 1)
    return text


# ------------------------------------------------------------------ per-segment cleanup

_ENSUREMATH = ("ensuremath",)
_ACCENT_RE = re.compile(r"\\([\'`^\"~=.])\s*(?:\{\s*(\\?[A-Za-z])\s*\}|(\\?[A-Za-z]))|\\([uvHckrdb])\s*\{\s*(\\?[A-Za-z])\s*\}")
_LINEBREAK = re.compile(r"\\\\\*?(?:\s*\[[^\]]*\])?")
_ROMAN_RE = re.compile(r"\\romannumeral\s*\{?\s*(\d+)\s*\}?")
_SPACES = re.compile(r"\\[,;:> ]|\\!|~")
_BEGIN_END = re.compile(r"\\(?:begin|end)\s*\{[^{}]*\}(?:\s*\{[^{}]*\})?")
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
        s = replace_commands(s, _REF, lambda n, o, a: f"\ue010{n}\ue011{a[0]}\ue012", 1)
        s = _BEGIN_END.sub(HARD_NL, s)
        s = _SPACES.sub(" ", s)
        s = _CMD.sub(lambda m: _SYMBOLS.get(m.group(1), ""), s)
        s = _OTHER_CMD.sub(lambda m: "" if m.group(1) in "/@-" else m.group(1), s)
    else:
        for esc, ph in _ESCAPES.items():
            s = s.replace("\\" + esc, ph)
    s = _SPACES.sub(" ", s)
    if "{" in s or "}" in s:
        s = s.replace("{", "").replace("}", "")
    if "\ue010" in s:
        s = s.replace("\ue010", "\\").replace("\ue011", "{").replace("\ue012", "}")
    s = s.replace("---", "—").replace("--", "–").replace("``", "\u201c").replace("''", "\u201d")
    return s


def _restore(s: str) -> str:
    for ph, ch in _UNESCAPE.items():
        s = s.replace(ph, ch)
    return s


def _math_cleanup(s: str) -> str:
    if "\\ensuremath" in s:
        s = replace_commands(s, _ENSUREMATH, lambda n, o, a: a[0], 1, nopts=0)
    return s


def _raw_cleanup(s: str) -> str:
    """Tables stay LaTeX; only \\ensuremath from built-in macros is resolved (by math mode)."""
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


def _join(parts: list[tuple[str, str]]) -> str:
    out: list[str] = []
    for kind, piece in parts:
        if kind == "text":
            if "\n" in piece:
                piece = _PARA.sub(HARD_NL + HARD_NL, piece)
            out.append(piece.replace("\n", " "))
        elif kind == "math":
            out.append(piece)
        elif kind == "display":
            out.append(HARD_NL + re.sub(r"\n[ \t]*(?=\n)", "", piece.strip()) + HARD_NL)
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
    return _restore(text).strip()


# ------------------------------------------------------------------ entry point

_DOC_BEGIN = re.compile(r"\\begin\s*\{document\}")
_DOC_END = re.compile(r"\\end\s*\{document\}")


def render(src: str) -> Rendered:
    """Turn assembled (comment-free, macro-expanded) LaTeX into text; see the module doc for rules."""
    m = _DOC_BEGIN.search(src)
    preamble, body = (src[: m.start()], src[m.end() :]) if m else ("", src)
    e = _DOC_END.search(body)
    if e:
        body = body[: e.start()]
    body = cut_bibliography(body)
    body, title, abstract = _front_matter(body)
    if title is None or abstract is None:
        _, t2, a2 = _front_matter(preamble)
        title = title or t2
        abstract = abstract or a2
    body = _structure(body)
    parts: list[tuple[str, str]] = []
    for kind, piece in _with_ensuremath(segments(body)):
        if kind == "text":
            parts.append((kind, _text_cleanup(piece)))
        elif kind == "raw":
            parts.append((kind, _raw_cleanup(piece)))
        else:
            parts.append((kind, _math_cleanup(piece)))
    return Rendered(_join(parts), _inline(title), _inline(abstract))


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


def _inline(fragment: str | None) -> str | None:
    """Render a short fragment (title, abstract) to one line of text."""
    if fragment is None:
        return None
    parts = [(k, _text_cleanup(p) if k == "text" else _math_cleanup(p)) for k, p in _with_ensuremath(segments(_structure(fragment)))]
    return re.sub(r"\s+", " ", _join(parts)).strip() or None
