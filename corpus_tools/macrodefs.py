"""Reading a paper's macro definitions (``\\newcommand``, ``\\def``, ``\\let``, ``\\DeclareMathOperator``)
into :class:`Macro` objects, TeX-programming ones marked unsafe."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .macros import BUILTIN_MACROS
from .texparse import read_group, read_optional, skip_ws


@dataclass(frozen=True)
class Macro:
    """A macro definition: number of arguments, optional default of the first, body with #n."""

    nargs: int
    body: str
    default: str | None = None
    #: a TeX-programming macro (``\\@ifnextchar``, ``\\expandafter``, ``\\csname``, conditionals, ...):
    #: its calls are left alone rather than expanded into internals
    unsafe: bool = False


#: bodies that program TeX rather than abbreviate text: expanding them leaves internals in the text
_UNSAFE_BODY = re.compile(
    r"\\(?:expandafter|csname|endcsname|futurelet|afterassignment|aftergroup|noexpand|unexpanded|protected|"
    r"if(?:mmode(?![A-Za-z@]))?[A-Za-z]*|else|fi|or|let|def|gdef|edef|xdef|newcommand|renewcommand|providecommand|"
    r"bgroup|egroup|begingroup|endgroup|global|long|catcode|string|meaning|loop|repeat|newif|setbox|advance|"
    r"multiply|divide|numexpr|dimexpr|the|number|ignorespaces|NewDocumentCommand|DeclareDocumentCommand|"
    r"newenvironment|renewenvironment|@\w*)(?![A-Za-z@])|\\[A-Za-z]+@|#[^1-9#]"
)
#: ``\\ifmmode A\\else B\\fi``, also inside a group with font switches: ``{\\sc \\relax\\ifmmode A\\else B\\fi}\\xspace``
_IFMMODE = re.compile(
    r"^\s*(\{)?\s*(?:\\(?:relax|sc|rm|bf|it|sf|tt|normalfont|upshape)(?![A-Za-z@])\s*)*\\ifmmode(?![A-Za-z@])(.*?)"
    r"\\else(?![A-Za-z@])(.*?)\\fi(?![A-Za-z@])\s*(?(1)\})\s*(\\xspace)?\s*$", re.S)
#: commands the renderer handles itself; a paper's redefinition of them is ignored
PROTECTED_NAMES = frozenset(
    "section subsection subsubsection paragraph chapter caption label ref eqref autoref cref Cref cite citep citet "
    "citealt citealp citeauthor citeyear footnote item begin end par appendix bibliography bibitem title author "
    "maketitle textcolor color input include documentclass usepackage".split()
)


def _classify(name: str, body: str) -> tuple[str, bool]:
    """(body to use, unsafe?) for a definition; ``\\ifmmode A\\else B\\fi`` becomes ``\\ensuremath{A}``."""
    if "\\ifmmode" in body:
        m = _IFMMODE.match(body)
        if m and not _UNSAFE_BODY.search(m.group(2)):
            body = "\\ensuremath{" + m.group(2).strip() + "}" + ("\\xspace" if m.group(4) else "")
    return body, ("@" in name or bool(_UNSAFE_BODY.search(body)))


_DEF_START = re.compile(
    r"\\(newcommand|renewcommand|providecommand|DeclareRobustCommand|DeclareMathOperator|def|gdef|edef|xdef|let)(?![A-Za-z@])(\*?)"
)


def collect_macros(text: str) -> tuple[dict[str, Macro], str]:
    """Find user macro definitions; return them and the text with the definitions removed.

    Handles ``\\newcommand{\\x}[n][default]{body}`` (and renew/provide/robust variants, starred,
    brace-less ``\\newcommand\\x``), ``\\def\\x#1#2{body}``, ``\\DeclareMathOperator(*)`` and
    ``\\let\\x\\y``. Definitions with delimited parameters (``\\def\\x#1.{}``) are removed but
    not expanded.
    """
    macros: dict[str, Macro] = {}
    out: list[str] = []
    pos = 0
    for m in _DEF_START.finditer(text):
        if m.start() < pos:
            continue
        kind = m.group(1)
        j = skip_ws(text, m.end())
        parsed = _parse_definition(kind, m.group(2), text, j, macros)
        if parsed is None:
            continue
        name, macro, end = parsed
        out.append(text[pos : m.start()])
        pos = end
        if macro is None or name in PROTECTED_NAMES:
            continue
        if kind != "let":
            body, unsafe = _classify(name, macro.body)
            macro = Macro(macro.nargs, body, macro.default, unsafe)
        if kind == "providecommand" and name in macros:
            continue
        macros[name] = macro
    out.append(text[pos:])
    return macros, "".join(out)


def _read_name(text: str, j: int) -> tuple[str, int] | None:
    j = skip_ws(text, j)
    if j < len(text) and text[j] == "{":
        got = read_group(text, j)
        if got is None:
            return None
        inner = got[0].strip()
        m = re.fullmatch(r"\\([A-Za-z@]+|.)", inner)
        return (m.group(1), got[1]) if m else None
    m = re.compile(r"\\([A-Za-z@]+|.)").match(text, j)
    return (m.group(1), m.end()) if m else None


def _parse_definition(kind: str, star: str, text: str, j: int, known: dict[str, Macro]) -> tuple[str, Macro | None, int] | None:
    got = _read_name(text, j)
    if got is None:
        return None
    name, j = got
    if kind == "let":
        k = skip_ws(text, j)
        if k < len(text) and text[k] == "=":
            k = skip_ws(text, k + 1)
        target = re.compile(r"\\([A-Za-z@]+|.)").match(text, k)
        if target is None:
            return None
        src = target.group(1)
        macro = known.get(src)
        if macro is None and src in BUILTIN_MACROS:
            nargs, body = BUILTIN_MACROS[src]
            macro = Macro(nargs, body)
        if macro is None:
            macro = Macro(0, "\\" + src)
        return name, (None if src == name else macro), target.end()
    if kind == "DeclareMathOperator":
        body = read_group(text, skip_ws(text, j))
        if body is None:
            return None
        op = r"\operatorname*{" if star else r"\operatorname{"
        return name, Macro(0, op + body[0] + "}"), body[1]
    if kind in ("def", "gdef", "edef", "xdef"):
        k = j
        params = ""
        while k < len(text) and text[k] != "{":
            params += text[k]
            k += 1
            if len(params) > 40:
                return None
        body = read_group(text, k)
        if body is None:
            return None
        p = params.strip()
        if p and not re.fullmatch(r"(#\d)+", p):
            return name, None, body[1]  # delimited parameters: drop the definition, don't expand
        return name, Macro(len(p) // 2, body[0]), body[1]
    # \newcommand family
    k = skip_ws(text, j)
    nargs = 0
    default = None
    opt = read_optional(text, k)
    if opt is not None:
        try:
            nargs = int(opt[0].strip())
        except ValueError:
            return None
        k = skip_ws(text, opt[1])
        opt2 = read_optional(text, k)
        if opt2 is not None:
            default = opt2[0]
            k = skip_ws(text, opt2[1])
    body = read_group(text, k)
    if body is None:
        return None
    return name, Macro(nargs, body[0], default), body[1]
