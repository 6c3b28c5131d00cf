"""LaTeX source assembly: decoding, main-file detection, ``\\input``/``\\include``, comments, macros.

The output is still LaTeX (one string, comments gone, includes inlined, user and journal macros
expanded); :mod:`corpus_tools.render` turns it into text. Nothing here runs TeX.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from .citations import bbl_to_bibitems, bib_to_bibitems, is_biblatex_bbl
from .macros import BUILTIN_MACROS
from .texparse import read_arg, read_group, read_optional, skip_ws

TEX_SUFFIXES = (".tex", ".ltx", ".latex", "")
#: file names of referee responses / cover letters, never the paper
REFEREE_NAME = re.compile(r"(respon[sc]e|reply|referee|rebuttal|cover[-_ ]?letter|letter[-_ ]?to|changes|answer)", re.I)
_INPUTENC = re.compile(rb"\\usepackage\s*\[([^\]]*)\]\s*\{inputenc\}")
_LATIN = {"latin1": "latin-1", "latin9": "iso8859-15", "ansinew": "cp1252", "cp1252": "cp1252", "applemac": "mac_roman",
          "latin2": "iso8859-2", "cp1250": "cp1250", "utf8": "utf-8", "utf8x": "utf-8", "cp1251": "cp1251",
          "koi8-r": "koi8-r", "koi8-u": "koi8-u", "cp866": "cp866"}


class LatexError(ValueError):
    """The sources cannot be turned into one document; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ------------------------------------------------------------------ decoding


def decode_tex(data: bytes) -> tuple[str, str]:
    """Decode TeX source bytes; returns (text, encoding used), line endings normalised to ``\\n``.

    A UTF-16/UTF-32 byte-order mark (or NUL-interleaved ASCII without one) selects that
    encoding; else UTF-8 (BOM stripped); else the ``inputenc`` option the file declares; else
    cp1252, else latin-1 (which never fails). CRLF and bare CR become LF, so paragraph breaks
    survive. Papers are never dropped for a decode error.
    """
    text, enc = _decode(data)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, enc


_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def _decode(data: bytes) -> tuple[str, str]:
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(enc, "replace"), enc
    head = data[:400]
    if len(head) >= 8 and head.count(0) * 3 >= len(head):  # UTF-16 without a BOM: every other byte NUL
        enc = "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"
        return data.decode(enc, "replace"), enc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    m = _INPUTENC.search(data)
    if m:
        for opt in m.group(1).decode("ascii", "replace").split(","):
            enc = _LATIN.get(opt.strip().lower())
            if enc and enc != "utf-8":
                try:
                    return data.decode(enc), enc
                except UnicodeDecodeError:
                    break
    cyr = _cyrillic_8bit(data)
    if cyr:
        return data.decode(cyr, "replace"), cyr
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


_HIGH_RUN = re.compile(rb"[\xc0-\xff]{3,}")


def _cyrillic_8bit(data: bytes) -> str | None:
    """``koi8-r`` or ``cp1251`` for undeclared 8-bit Russian text (else None).

    Western accents are lone high bytes inside ASCII words; Cyrillic words are runs of them. In
    Russian text lower case dominates: KOI8-R puts it at 0xC0-0xDF, cp1251 at 0xE0-0xFF.
    """
    runs = _HIGH_RUN.findall(data[:200_000])
    if sum(map(len, runs)) < 200:
        return None
    high = sum(1 for b in data[:200_000] if b >= 0x80)
    if sum(map(len, runs)) < 0.6 * high:
        return None
    low = sum(1 for r in runs for b in r if b < 0xE0)
    return "koi8-r" if low > sum(map(len, runs)) - low else "cp1251"


# ------------------------------------------------------------------ comments

_VERB = re.compile(r"\\verb\*?([^A-Za-z\s*])(.*?)\1")
#: environments whose body TeX reads verbatim: never comment-stripped, never macro-expanded
VERBATIM_ENVS = ("verbatim", "verbatim*", "Verbatim", "lstlisting", "minted", "alltt", "BVerbatim", "LVerbatim")
_VERBATIM_BEGIN = re.compile(r"\\begin\s*\{(" + "|".join(re.escape(e) for e in VERBATIM_ENVS) + r")\}")
_COMMENT_BEGIN = re.compile(r"\\begin\s*\{comment\}")
_COMMENT_END = re.compile(r"\\end\s*\{comment\}")
_IF_TOKEN = re.compile(r"\\(if(?!thenelse)[A-Za-z@]*|fi|else)(?![A-Za-z@])")


def protect_verbatim(text: str, store: list[str]) -> str:
    """Replace ``\\verb|..|`` and verbatim-like environments by ``\\x00V<n>\\x00`` placeholders (kept in ``store``)."""
    if "\\verb" in text:
        def _keep(m: re.Match) -> str:
            store.append(m.group(0))
            return f"\x00V{len(store) - 1}\x00"
        text = _VERB.sub(_keep, text)
    if "\\begin" not in text or _VERBATIM_BEGIN.search(text) is None:
        return text
    out: list[str] = []
    pos = 0
    while True:
        m = _VERBATIM_BEGIN.search(text, pos)
        if m is None:
            break
        end = text.find("\\end{" + m.group(1) + "}", m.end())
        if end < 0:
            break
        end += len(m.group(1)) + 6
        out.append(text[pos : m.start()])
        store.append(text[m.start() : end])
        out.append(f"\x00V{len(store) - 1}\x00")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def restore_verbatim(text: str, store: list[str]) -> str:
    """Undo :func:`protect_verbatim`."""
    if not store or "\x00V" not in text:
        return text
    return re.sub(r"\x00V(\d+)\x00", lambda m: store[int(m.group(1))], text)


def strip_comments(text: str) -> str:
    """Remove ``%`` comments (keeping ``\\%`` and ``\\\\%`` line breaks), comment envs and ``\\iffalse`` blocks.

    A comment line that ends a paragraph keeps the paragraph break. ``\\verb`` and verbatim-like
    environments are left as they are. Every scan is linear: thousands of unclosed
    ``\\begin{comment}``/``\\iffalse`` cost one pass, and an unclosed one keeps the text after it.
    """
    verbs: list[str] = []
    text = protect_verbatim(text, verbs)
    if "%" in text:
        text = _strip_percent_comments(text)
    if "comment" in text:
        text = _drop_comment_envs(text)
    if "\\iffalse" in text:
        text = _drop_iffalse(text)
    return restore_verbatim(text, verbs)


def _drop_comment_envs(text: str) -> str:
    out: list[str] = []
    pos = 0
    while True:
        m = _COMMENT_BEGIN.search(text, pos)
        if m is None:
            break
        e = _COMMENT_END.search(text, m.end())
        if e is None:  # unclosed: keep the text, drop the opener
            out.append(text[pos : m.start()])
            pos = m.end()
            break
        out.append(text[pos : m.start()])
        pos = e.end()
    out.append(text[pos:])
    return "".join(out)


def _drop_iffalse(text: str) -> str:
    """Drop ``\\iffalse ... \\fi`` (nested conditionals counted; ``\\else`` branch kept)."""
    out: list[str] = []
    pos = 0
    tokens = _IF_TOKEN.finditer(text)
    for m in tokens:
        if m.group(1) != "iffalse":
            continue
        out.append(text[pos : m.start()])
        depth = 1
        resume = None
        for t in tokens:
            name = t.group(1)
            if name == "fi":
                depth -= 1
                if depth == 0:
                    resume = t
                    break
            elif name == "else":
                if depth == 1:
                    resume = t  # keep the else branch; its \\fi is left for the renderer to drop
                    break
            else:
                depth += 1
        if resume is None:  # unclosed: keep what follows (never drop readable text)
            pos = m.end()
            break
        pos = resume.end()
    out.append(text[pos:])
    return "".join(out)


# ------------------------------------------------------------------ main file + includes

_DOCCLASS = re.compile(r"^[^%\n]*\\document(?:class|style)\b", re.M)
_BEGIN_DOC = re.compile(r"\\begin\s*\{document\}")
_LETTER_CLASS = re.compile(r"\\documentclass\s*(?:\[[^\]]*\])?\s*\{letter\}")


def _strip_percent_comments(text: str) -> str:
    """Drop from each unescaped % to the end of its line, plus the newline and the next line's indent
    (TeX's rule), unless the next line is blank (then the paragraph break stays)."""
    out: list[str] = []
    pos = 0
    i = text.find("%")
    n = len(text)
    while i >= 0:
        k = i - 1
        while k >= 0 and text[k] == "\\":
            k -= 1
        if (i - 1 - k) % 2 == 1:  # \% (odd backslashes): a literal percent sign
            i = text.find("%", i + 1)
            continue
        out.append(text[pos:i])
        eol = text.find("\n", i)
        if eol < 0:
            pos = n
            break
        j = eol + 1
        while j < n and text[j] in " \t":
            j += 1
        pos = eol if (j >= n or text[j] == "\n") else j
        i = text.find("%", pos)
    out.append(text[pos:])
    return "".join(out)


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


_USEPACKAGE = re.compile(r"\\usepackage\s*(?:\[[^\]]*\])?\s*\{([^}]*)\}")
_INPUT = re.compile(r"\\(input|include|subfile|import)\b\s*(\{[^{}]*\}(\{[^{}]*\})?|[^\s{}\\]+)")


#: the assembled paper (main file with every include inlined) may not exceed this many characters;
#: an ``\\input`` diamond (each file including the next one twice) otherwise grows exponentially
MAX_ASSEMBLED_CHARS = 32_000_000


def inline_inputs(main: str, files: dict[str, str], max_depth: int = 20, max_chars: int = MAX_ASSEMBLED_CHARS) -> str:
    """Inline ``\\input``/``\\include``/``\\subfile``/``\\import`` recursively (paths relative to the root).

    Missing files are dropped silently (TeX would fail; the rest of the paper is still useful);
    include cycles and depths beyond ``max_depth`` stop the recursion. More than ``max_chars``
    characters inlined in total raises :class:`LatexError` ``too_large``.
    """
    lookup = {posixpath.normpath(n): n for n in files}
    stripped: dict[str, str] = {}
    total = [len(main)]

    def resolve(target: str) -> str | None:
        target = target.strip().strip('"')
        for cand in (target, target + ".tex", target + ".ltx"):
            key = posixpath.normpath(cand.lstrip("./") if cand.startswith("./") else cand)
            if key in lookup:
                return lookup[key]
        return None

    def expand(text: str, depth: int, stack: tuple[str, ...]) -> str:
        if "\\in" not in text and "\\subfile" not in text and "\\import" not in text:
            return text

        def repl(m: re.Match) -> str:
            arg = m.group(2)
            if arg.startswith("{"):
                parts = re.findall(r"\{([^{}]*)\}", arg)
                target = posixpath.join(*parts) if m.group(1) == "import" and len(parts) == 2 else parts[0]
            else:
                target = arg
            name = resolve(target)
            if name is None or name in stack or depth >= max_depth:
                return ""
            if name not in stripped:
                stripped[name] = strip_comments(files[name])
            body = stripped[name]
            total[0] += len(body)
            if total[0] > max_chars:
                raise LatexError("too_large", f"includes assemble to more than {max_chars} characters")
            return "\n" + expand(body, depth + 1, stack + (name,)) + "\n"

        return _INPUT.sub(repl, text)

    return expand(main, 0, ())


# ------------------------------------------------------------------ macros


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


class MacroExpander:
    """Expands user macros (which win) and the built-in journal/astro table in one pass.

    Each call site's body is expanded recursively up to ``max_depth``; output larger than
    ``max_growth`` times the input stops expansion (a macro bomb), raising :class:`LatexError`.
    """

    def __init__(self, user: dict[str, Macro], builtins: bool = True, max_depth: int = 16, max_growth: int = 20):
        table: dict[str, Macro] = {}
        if builtins:
            table.update(_BUILTIN_EXPANDED)
        table.update(user)
        self.table = table
        #: macros whose body calls themselves (``\\renewcommand{\\vec}[1]{\\vec{\\mathbf{#1}}}``, the table's
        #: ``\\ensuremath{\\farcs}``-style entries): that inner call is left as the call, not expanded 16 deep
        self.self_calling = frozenset(n for n, m in table.items() if re.search(r"\\" + re.escape(n) + r"(?![A-Za-z@])", m.body))
        self.max_depth = max_depth
        self.max_growth = max_growth
        self.pattern = _ANY_CS if table else None
        self._budget = 0

    def expand(self, text: str) -> str:
        """Return ``text`` with every known macro expanded."""
        if self.pattern is None:
            return text
        self._budget = max(1_000_000, len(text) * self.max_growth)
        return self._expand(text, 0)

    def _expand(self, text: str, depth: int, active: frozenset[str] = frozenset()) -> str:
        pattern = self.pattern
        table = self.table
        out: list[str] = []
        pos = 0
        search = 0
        size = 0
        while True:
            m = pattern.search(text, search)
            if m is None:
                break
            search = m.end()
            name = m.group(1)
            macro = table.get(name)
            if macro is None or macro.unsafe or name in active:  # a body calling itself: left as the call
                continue
            j = m.end()
            args: list[str] = []
            if macro.default is not None:
                k = skip_ws(text, j)
                opt = read_optional(text, k)
                if opt is not None:
                    args.append(opt[0])
                    j = opt[1]
                else:
                    args.append(macro.default)
            ok = True
            while len(args) < macro.nargs:
                got = read_arg(text, j)
                if got is None:
                    ok = False
                    break
                args.append(got[0])
                j = got[1]
            if not ok:
                continue
            body = macro.body
            if macro.nargs:
                body = re.sub(r"#(\d)", lambda a: args[int(a.group(1)) - 1] if 0 < int(a.group(1)) <= len(args) else "", body)
            if depth < self.max_depth and "\\" in body:
                body = self._expand(body, depth + 1, active | {name} if name in self.self_calling else active)
            # a macro ending in a control word swallows the following space; keep words apart
            if body and re.search(r"\\[A-Za-z@]+$", body) and j < len(text) and text[j].isalpha():
                body += " "
            out.append(text[pos : m.start()])
            # a control word right before a body that starts with a letter: keep them apart (\log\Mdyn)
            if body[:1].isalpha() and _ENDS_CONTROL_WORD.search(text, max(0, m.start() - 64), m.start()):
                body = " " + body
            out.append(body)
            size += len(body) + (m.start() - pos)
            if size > self._budget:
                raise LatexError("macro_bomb", f"expansion exceeded {self._budget} characters")
            pos = search = j
        out.append(text[pos:])
        return "".join(out)


# every control sequence; "\\\\" (a line break) is consumed as a unit so "\\\\msun" is not a macro call
_ANY_CS = re.compile(r"\\([A-Za-z@]+|[^A-Za-z@\s])")
_ENDS_CONTROL_WORD = re.compile(r"\\[A-Za-z@]+$")


#: built-ins the expander handles (math shorthands in ``\\ensuremath``, argument macros); plain text
#: shorthands (``\\apj``, ``\\AA``, ``\\etal``) are left to the renderer, which applies them in prose only
_BUILTIN_EXPANDED = {k: Macro(n, b) for k, (n, b) in BUILTIN_MACROS.items() if n or b.startswith("\\ensuremath")}

#: packages and classes from CTAN / the journals that e-prints bundle; their definitions are not the paper's macros
STANDARD_PACKAGES = frozenset(
    """aastex aastex6 aastex61 aastex62 aastex63 aastex631 aastex7 aasjournal aaspp4 emulateapj emulateapj5 mnras mn2e
    aa aa-package revtex4 revtex4-1 revtex4-2 elsarticle natbib hyperref graphicx graphics color xcolor amsmath amssymb
    amsthm amsfonts url ulem soul changes lineno float subfigure subcaption caption deluxetable longtable
    multirow booktabs tabularx array geometry fancyhdr setspace times txfonts newtxtext newtxmath mathptmx
    epsfig epsf psfig apjfonts pdflscape lscape rotating wrapfig sidecap placeins afterpage bm xspace
    siunitx tikz pgf pgfplots listings minted fancyvrb verbatim comment enumitem microtype cleveref
    varioref algorithm algorithmic algorithmicx algpseudocode todonotes marginnote framed mdframed tcolorbox
    orcidlink academicons fontawesome natbib_aa biblatex xr xr-hyperref threeparttable etoolbox xstring
    ifthen calc keyval kvoptions""".split()
)
#: a local package bigger than this that declares itself with ``\\ProvidesPackage`` is treated as a library
LIBRARY_STY_CHARS = 40_000
_PROVIDES = re.compile(r"\\Provides(?:Package|Class|File)\s*\{")
_BIBLIOGRAPHY_CMD = re.compile(r"\\bibliography\s*\{([^{}]*)\}")
_ADDBIBRESOURCE = re.compile(r"\\(?:addbibresource|bibliography)\s*(?:\[[^\]]*\])?\s*\{([^{}]*)\}")
_PRINTBIB = re.compile(r"\\printbibliography\b")
_END_DOCUMENT = re.compile(r"\\end\s*\{document\}")


def is_library_sty(name: str, text: str) -> bool:
    """True for a bundled standard package/class (its definitions are not the paper's macros)."""
    stem = posixpath.splitext(posixpath.basename(name))[0].lower()
    if name.endswith(".cls") or stem in STANDARD_PACKAGES:
        return True
    return len(text) > LIBRARY_STY_CHARS and bool(_PROVIDES.search(text))


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
