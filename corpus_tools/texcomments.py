"""Comments out, verbatim kept: ``%`` comments (not ``\\%``), ``comment`` environments, ``\\iffalse``
blocks; ``\\verb`` and verbatim-like environments protected by placeholders first."""

from __future__ import annotations

import re

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
