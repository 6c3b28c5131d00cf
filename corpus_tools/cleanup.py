"""Per-segment cleanup: prose rewrites (markup, accents, spacing, citations, references), math kept
as source (only ``\\label``, ``\\ensuremath`` and ``\\xspace`` go), raw LaTeX (tables); segments joined."""

from __future__ import annotations

import re
import unicodedata

from .citations import Bibliography, render_citations
from .macros import roman
from .refs import Label, render_refs
from .segments import code_body, segments
from .textrules import _ACCENTS, _ENV_ARGS, _ESCAPES, _UNESCAPE, _WORDS, HARD_NL
from .texparse import read_group, read_optional, replace_commands, skip_ws

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
