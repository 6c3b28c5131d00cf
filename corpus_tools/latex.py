"""LaTeX source assembly: decoding, main-file detection, ``\\input``/``\\include``, comments, macros.

The output is still LaTeX (one string, comments gone, includes inlined, user and journal macros
expanded); :mod:`corpus_tools.render` turns it into text. Nothing here runs TeX.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from .macros import BUILTIN_MACROS
from .texparse import read_arg, read_group, read_optional, skip_ws

TEX_SUFFIXES = (".tex", ".ltx", ".latex", "")
#: file names of referee responses / cover letters, never the paper
REFEREE_NAME = re.compile(r"(respon[sc]e|reply|referee|rebuttal|cover[-_ ]?letter|letter[-_ ]?to|changes|answer)", re.I)
_INPUTENC = re.compile(rb"\\usepackage\s*\[([^\]]*)\]\s*\{inputenc\}")
_LATIN = {"latin1": "latin-1", "latin9": "iso8859-15", "ansinew": "cp1252", "cp1252": "cp1252", "applemac": "mac_roman",
          "latin2": "iso8859-2", "cp1250": "cp1250", "utf8": "utf-8", "utf8x": "utf-8"}


class LatexError(ValueError):
    """The sources cannot be turned into one document; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ------------------------------------------------------------------ decoding


def decode_tex(data: bytes) -> tuple[str, str]:
    """Decode TeX source bytes; returns (text, encoding used).

    UTF-8 first (BOM stripped); else the ``inputenc`` option the file declares; else cp1252,
    else latin-1 (which never fails). Papers are never dropped for a decode error.
    """
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
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


# ------------------------------------------------------------------ comments

_COMMENT_ENV = re.compile(r"\\begin\s*\{comment\}.*?\\end\s*\{comment\}", re.S)
_IFFALSE = re.compile(r"\\iffalse\b.*?\\fi\b", re.S)
_VERB = re.compile(r"\\verb\*?([^A-Za-z\s])(.*?)\1")


def strip_comments(text: str) -> str:
    """Remove ``%`` comments (keeping ``\\%`` and ``\\\\%`` line breaks), comment envs and ``\\iffalse`` blocks.

    A comment line that ends a paragraph keeps the paragraph break.
    """
    # protect \verb|...%...| so its % is not a comment
    verbs: list[str] = []
    if "\\verb" in text:
        def _keep(m: re.Match) -> str:
            verbs.append(m.group(0))
            return f"\x00V{len(verbs) - 1}\x00"
        text = _VERB.sub(_keep, text)
    if "%" in text:
        text = _strip_percent_comments(text)
    text = _COMMENT_ENV.sub("", text)
    if "\\iffalse" in text:
        text = _IFFALSE.sub("", text)
    if verbs:
        text = re.sub(r"\x00V(\d+)\x00", lambda m: verbs[int(m.group(1))], text)
    return text


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


def inline_inputs(main: str, files: dict[str, str], max_depth: int = 20) -> str:
    """Inline ``\\input``/``\\include``/``\\subfile``/``\\import`` recursively (paths relative to the root).

    Missing files are dropped silently (TeX would fail; the rest of the paper is still useful);
    include cycles and depths beyond ``max_depth`` stop the recursion.
    """
    lookup = {posixpath.normpath(n): n for n in files}

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
            body = strip_comments(files[name])
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
        if macro is None:
            continue
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
            table.update({k: Macro(n, b) for k, (n, b) in BUILTIN_MACROS.items()})
        table.update(user)
        self.table = table
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

    def _expand(self, text: str, depth: int) -> str:
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
            macro = table.get(m.group(1))
            if macro is None:
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
                body = self._expand(body, depth + 1)
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


def assemble(files: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    """Decode every TeX file, pick the main one, inline its inputs, strip comments, expand macros.

    Returns the expanded LaTeX of the whole paper and info (main file, encoding).
    """
    texts: dict[str, str] = {}
    encodings: dict[str, str] = {}
    for name, data in files.items():
        if is_tex_name(name) or name.endswith((".sty", ".def", ".cls", ".bbl")):
            texts[name], encodings[name] = decode_tex(data)
    if not texts:
        raise LatexError("no_tex", "the e-print holds no TeX source")
    main = find_main(texts)
    src = inline_inputs(strip_comments(texts[main]), {n: t for n, t in texts.items() if n != main})
    # macro definitions in the paper's own .sty files (\usepackage{mymacros})
    local_sty = {posixpath.splitext(posixpath.basename(n))[0]: t for n, t in texts.items() if n.endswith(".sty")}
    if local_sty:
        used = {p.strip() for group in _USEPACKAGE.findall(src) for p in group.split(",")}
        defs = "".join(strip_comments(local_sty[p]) + "\n" for p in sorted(used & set(local_sty)))
        src = defs + src
    user, src = collect_macros(src)
    src = MacroExpander(user).expand(src)
    return src, {"main_file": main, "encoding": encodings[main]}
