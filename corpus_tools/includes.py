"""``\\input`` / ``\\include`` / ``\\subfile`` / ``\\import`` inlined recursively, with a cap on the assembled size."""

from __future__ import annotations

import posixpath
import re

from .texcomments import strip_comments
from .texerror import LatexError

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
