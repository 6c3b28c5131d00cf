"""Expanding user and built-in journal macros at their call sites, within a growth budget."""

from __future__ import annotations

import re

from .macrodefs import Macro
from .macros import BUILTIN_MACROS
from .texerror import LatexError
from .texparse import read_arg, read_optional, skip_ws


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
