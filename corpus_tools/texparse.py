"""Small LaTeX scanning helpers shared by the converter: brace groups, arguments, commands."""

from __future__ import annotations

import functools
import re
from typing import Callable

_CMD_NAME = re.compile(r"\\([A-Za-z@]+|.)")


def skip_ws(text: str, i: int) -> int:
    """Index of the first non-whitespace character at or after ``i``."""
    n = len(text)
    while i < n and text[i] in " \t\r\n":
        i += 1
    return i


#: (text, brace table) of the last text in which a group was found unclosed: later reads in that
#: same text object are lookups, so thousands of unclosed ``{`` cost one scan, not one scan each
_UNCLOSED: list = [None, {}]
#: an optional ``[...]`` argument longer than this is not one (bounds the work of an unclosed ``[``)
MAX_OPTIONAL_CHARS = 8_000
_LAST_CLOSE: list = [None, -1]  # (text, index of its last "]")
_BRACES = re.compile(r"\\.|[{}]", re.S)
_OPTIONAL_PAT = re.compile(r"\\.|[{}\]]", re.S)


def read_group(text: str, i: int) -> tuple[str, int] | None:
    """If ``text[i]`` opens a brace group, return (content, index after the closing brace), else None.

    Escaped braces (``\\{``) do not count. An unclosed group returns None. Linear overall: after
    the first unclosed ``{`` in a text, all its braces are matched once and later reads look up.
    """
    if i >= len(text) or text[i] != "{":
        return None
    if _UNCLOSED[0] is text:
        end = _UNCLOSED[1].get(i)
        return None if end is None else (text[i + 1 : end - 1], end)
    depth = 0
    for m in _BRACES.finditer(text, i):
        tok = m.group(0)
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : m.end() - 1], m.end()
    _UNCLOSED[0], _UNCLOSED[1] = text, _match_braces(text)
    return None


def _match_braces(text: str) -> dict[int, int]:
    """``{index of an opening brace: index after its closing brace}`` for every matched pair."""
    table: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACES.finditer(text):
        tok = m.group(0)
        if tok == "{":
            stack.append(m.start())
        elif tok == "}" and stack:
            table[stack.pop()] = m.end()
    return table


def read_groups(text: str, i: int, most: int) -> tuple[list[str], int]:
    """Read up to ``most`` consecutive brace groups from ``i`` (whitespace between); (contents, index after)."""
    args: list[str] = []
    while len(args) < most:
        got = read_group(text, skip_ws(text, i))
        if got is None:
            break
        args.append(got[0])
        i = got[1]
    return args, i


def read_optional(text: str, i: int) -> tuple[str, int] | None:
    """Read a ``[...]`` optional argument at ``i`` (braces inside balanced, at most
    :data:`MAX_OPTIONAL_CHARS` long), else None."""
    if i >= len(text) or text[i] != "[":
        return None
    if _LAST_CLOSE[0] is not text:
        _LAST_CLOSE[0], _LAST_CLOSE[1] = text, text.rfind("]")
    if i > _LAST_CLOSE[1]:
        return None
    depth_brace = 0
    for m in _OPTIONAL_PAT.finditer(text, i + 1, min(len(text), i + 1 + MAX_OPTIONAL_CHARS)):
        c = m.group(0)
        if c == "{":
            depth_brace += 1
        elif c == "}":
            depth_brace -= 1
        elif c == "]" and depth_brace <= 0:
            return text[i + 1 : m.start()], m.end()
    return None


def read_arg(text: str, i: int) -> tuple[str, int] | None:
    """Read one undelimited TeX argument: a brace group, a control sequence, or one character."""
    i = skip_ws(text, i)
    if i >= len(text):
        return None
    c = text[i]
    if c == "{":
        return read_group(text, i)
    if c == "\\":
        m = _CMD_NAME.match(text, i)
        if m:
            return m.group(0), m.end()
    if c in "}":
        return None
    return c, i + 1


@functools.lru_cache(maxsize=256)
def _command_pattern(names: tuple[str, ...], star: bool) -> re.Pattern:
    alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(r"\\(" + alt + r")(?![A-Za-z@])" + (r"\*?" if star else ""))


def replace_commands(
    text: str,
    names: list[str] | tuple[str, ...],
    handler: Callable[[str, list[str | None], list[str]], str],
    nargs: int | Callable[[str], int],
    nopts: int = 1,
    star: bool = True,
) -> str:
    """Replace ``\\name*[opt]...{arg}...`` by ``handler(name, opts, args)``.

    ``nargs`` is the number of mandatory brace arguments (or a function of the name). Up to
    ``nopts`` optional ``[...]`` arguments are read before (and between) them. A command whose
    arguments are missing is left unchanged.
    """
    if not names:
        return text
    pat = _command_pattern(tuple(names), star)
    if pat.search(text) is None:
        return text
    out: list[str] = []
    pos = 0
    while True:
        m = pat.search(text, pos)
        if m is None:
            break
        name = m.group(1)
        want = nargs(name) if callable(nargs) else nargs
        j = m.end()
        opts: list[str | None] = []
        args: list[str] = []
        ok = True
        for _ in range(nopts):
            k = skip_ws(text, j)
            got = read_optional(text, k)
            if got is None:
                break
            opts.append(got[0])
            j = got[1]
        for _ in range(want):
            k = skip_ws(text, j)
            got = read_group(text, k)
            if got is None:
                ok = False
                break
            args.append(got[0])
            j = got[1]
            if len(opts) < nopts:
                k = skip_ws(text, j)
                extra = read_optional(text, k) if want > 1 else None
                if extra is not None:
                    opts.append(extra[0])
                    j = extra[1]
        if not ok:
            out.append(text[pos : m.end()])
            pos = m.end()
            continue
        out.append(text[pos : m.start()])
        out.append(handler(name, opts, args))
        pos = j
    out.append(text[pos:])
    return "".join(out)


def find_env_end(text: str, name: str, start: int) -> int | None:
    """Index just after the ``\\end{name}`` matching an environment whose body starts at ``start``."""
    pat = _env_end_pattern(name)
    depth = 1
    for m in pat.finditer(text, start):
        depth += 1 if m.group(1) == "begin" else -1
        if depth == 0:
            return m.end()
    return None


@functools.lru_cache(maxsize=64)
def _env_pattern(names: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"\\begin\s*\{(" + "|".join(re.escape(n) for n in names) + r")\}")


@functools.lru_cache(maxsize=256)
def _env_end_pattern(name: str) -> re.Pattern:
    return re.compile(r"\\(begin|end)\s*\{" + re.escape(name) + r"\}")


@functools.lru_cache(maxsize=64)
def _env_token_pattern(names: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"\\(begin|end)\s*\{(" + "|".join(re.escape(n) for n in names) + r")\}")


def pair_envs(text: str, names: tuple[str, ...]) -> dict[int, tuple[str, int, int, int]]:
    """Match every ``\\begin{name}`` to its ``\\end{name}`` in one linear pass (a stack per name).

    Returns ``{begin index: (name, body start, body end, index after \\end{...})}`` for matched
    pairs only; a stray ``\\end`` is ignored and an unclosed ``\\begin`` is absent. Scanning the
    text once keeps thousands of unclosed environments linear instead of quadratic.
    """
    stacks: dict[str, list[tuple[int, int]]] = {}
    pairs: dict[int, tuple[str, int, int, int]] = {}
    for m in _env_token_pattern(names).finditer(text):
        name = m.group(2)
        stack = stacks.setdefault(name, [])
        if m.group(1) == "begin":
            stack.append((m.start(), m.end()))
        elif stack:
            start, body = stack.pop()
            pairs[start] = (name, body, m.start(), m.end())
    return pairs


def replace_envs(text: str, names: tuple[str, ...], handler: Callable[[str, str], str]) -> str:
    """Replace whole environments ``\\begin{name}...\\end{name}`` by ``handler(name, body)``.

    An environment without its ``\\end`` runs to the end of the text (as TeX would read it).
    """
    if "\\begin" not in text:
        return text
    pat = _env_pattern(names)
    if pat.search(text) is None:
        return text
    pairs = pair_envs(text, names)
    out: list[str] = []
    pos = 0
    while True:
        m = pat.search(text, pos)
        if m is None:
            break
        got = pairs.get(m.start())
        out.append(text[pos : m.start()])
        if got is None:
            out.append(handler(m.group(1), text[m.end() :]))
            pos = len(text)
            break
        name, body, body_end, end = got
        out.append(handler(name, text[body:body_end]))
        pos = end
    out.append(text[pos:])
    return "".join(out)
