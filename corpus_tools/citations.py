"""Citations: read the e-print's bibliography and render ``\\cite``-family commands as text.

Sources of bibliography data, in the order LaTeX itself would use them:

* ``thebibliography`` lists (hand-written, or a natbib ``.bbl`` that :mod:`corpus_tools.latex`
  inlines where ``\\bibliography{...}`` stands), with the label forms the astro styles write:
  ``\\bibitem[{Smith {et~al.}(2020)Smith, Jones, \\& Lee}]{smith20}`` (aasjournal/aa/plainnat),
  ``\\bibitem[\\protect\\citeauthoryear{Smith, Jones \\& Lee}{Smith et~al.}{2020}]{smith20}``
  (mnras), ``\\bibitem[Smi20]{smith20}`` (alpha) and bare ``\\bibitem{smith20}`` (numeric);
* biblatex ``.bbl`` files (``\\entry{key}{article}{}`` ... ``\\endentry``) and ``.bib`` files,
  which :func:`bbl_to_bibitems` / :func:`bib_to_bibitems` turn into the natbib form above.

Rendering follows natbib's author-year conventions with the astro punctuation (no comma
between author and year): ``\\citet`` -> "Smith et al. (2020)", ``\\citep`` -> "(Smith et al.
2020; Lee 2019)", ``\\citep[see][p.~3]{a}`` -> "(see Smith et al. 2020, p. 3)"; numeric lists
give "[12]" / "[3, 7]". A key found nowhere becomes :data:`UNKNOWN` ("[?]", after LaTeX's "?"),
never the bare key and never nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .texparse import read_group, read_groups, read_optional, replace_commands, skip_ws

#: what an unknown citation key renders as
UNKNOWN = "[?]"

CITE_COMMANDS = (
    "cite", "citep", "citet", "citealt", "citealp", "citeauthor", "citeyear", "citeyearpar", "citetalias", "citepalias",
    "Cite", "Citep", "Citet", "Citealt", "Citealp", "Citeauthor", "parencite", "Parencite", "textcite", "Textcite",
    "autocite", "Autocite", "footcite", "citenum", "citetext", "nocite", "citeasnoun", "shortcite", "citeNP",
)


@dataclass(frozen=True)
class Entry:
    """One bibliography entry: its position (1-based), author-year parts or a printed label."""

    number: int
    short: str | None = None
    year: str | None = None
    label: str | None = None


@dataclass
class Bibliography:
    """Entries by key, whether the list is author-year, and ``\\defcitealias`` aliases."""

    entries: dict[str, Entry] = field(default_factory=dict)
    author_year: bool = False
    aliases: dict[str, str] = field(default_factory=dict)
    biblatex: bool = False


# ------------------------------------------------------------------ reading thebibliography

_BIBITEM = re.compile(r"\\bibitem(?![A-Za-z@])\s*")
_CITEAUTHORYEAR = re.compile(r"\\(?:protect\s*)?\\citeauthoryear\s*")


def _strip_braces(s: str) -> str:
    s = s.strip()
    while s.startswith("{") and s.endswith("}"):
        got = read_group(s, 0)
        if got is None or got[1] != len(s):
            break
        s = got[0].strip()
    return s


def parse_label(label: str) -> tuple[str | None, str | None]:
    """(short authors, year) from a natbib ``\\bibitem`` label, or (None, None) when it is not author-year."""
    label = _strip_braces(label)
    m = _CITEAUTHORYEAR.match(label)
    if m:
        args, _ = read_groups(label, m.end(), 3)
        if len(args) == 3:
            return args[1].strip(), args[2].strip()
        if len(args) == 2:
            return args[0].strip(), args[1].strip()
        return None, None
    depth = 0
    for i, c in enumerate(label):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "(" and depth == 0:
            close = label.find(")", i)
            if close < 0:
                return None, None
            short, year = label[:i].strip(), label[i + 1 : close].strip()
            if short and year:
                return short, year
            return None, None
    return None, None


def read_bibitems(text: str, bib: Bibliography | None = None) -> Bibliography:
    """Collect every ``\\bibitem`` of ``text`` (all bibliography lists, in order) into ``bib``."""
    bib = bib or Bibliography()
    n_ay = 0
    for m in _BIBITEM.finditer(text):
        j = m.end()
        opt = read_optional(text, j)
        if opt is not None:
            j = skip_ws(text, opt[1])
        key = read_group(text, j)
        if key is None:
            continue
        k = key[0].strip()
        if not k or k in bib.entries:
            continue
        number = len(bib.entries) + 1
        if opt is not None:
            short, year = parse_label(opt[0])
            if short is not None:
                n_ay += 1
                bib.entries[k] = Entry(number, short, year)
            else:
                bib.entries[k] = Entry(number, label=_strip_braces(opt[0]))
        else:
            bib.entries[k] = Entry(number)
    if bib.entries:
        bib.author_year = n_ay * 2 >= len(bib.entries)
    return bib


_ALIAS = re.compile(r"\\defcitealias\s*")


def read_aliases(text: str, bib: Bibliography) -> None:
    """``\\defcitealias{key}{Paper I}`` definitions (anywhere in the source)."""
    for m in _ALIAS.finditer(text):
        a = read_group(text, skip_ws(text, m.end()))
        if a is None:
            continue
        b = read_group(text, skip_ws(text, a[1]))
        if b is not None:
            bib.aliases[a[0].strip()] = b[0].strip()


# ------------------------------------------------------------------ .bib and biblatex .bbl -> \bibitem lines


def _split_depth0(s: str, sep: re.Pattern) -> list[str]:
    """Split on ``sep`` matches outside braces."""
    out, depth, last = [], 0, 0
    i = 0
    while i < len(s):
        c = s[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0:
            m = sep.match(s, i)
            if m and m.end() > i:
                out.append(s[last:i])
                last = i = m.end()
                continue
        i += 1
    out.append(s[last:])
    return out


_AND = re.compile(r"\s+and\s+", re.I)
_COMMA = re.compile(r",")
_SPACE = re.compile(r"\s+")


def family_name(name: str) -> str:
    """Family name of one BibTeX name ("Smith, John", "John Smith", "{van der Berg}, A.")."""
    parts = _split_depth0(name.strip(), _COMMA)
    if len(parts) > 1:
        return parts[0].strip()
    words = [w for w in _split_depth0(name.strip(), _SPACE) if w]
    return words[-1] if words else name.strip()


def short_authors(families: list[str], etal: bool = False) -> str:
    """"Smith", "Smith \\& Lee", "Smith et al." (the AAS/MNRAS short form)."""
    if not families:
        return "Anonymous"
    if len(families) >= 3 or (etal and families):
        return f"{families[0]} et al."
    if len(families) == 2:
        return f"{families[0]} \\& {families[1]}"
    return families[0]


_BIB_ENTRY = re.compile(r"@([A-Za-z]+)\s*([{(])")
_FIELD = re.compile(r"\s*,?\s*([A-Za-z][\w\-:.]*)\s*=\s*")


def bib_to_bibitems(bib_text: str) -> str:
    """A ``.bib`` file as natbib ``\\bibitem[{Short(Year)}]{key}`` lines (author and year only)."""
    lines: list[str] = []
    for m in _BIB_ENTRY.finditer(bib_text):
        kind = m.group(1).lower()
        if kind in ("string", "comment", "preamble"):
            continue
        start = m.end() - 1
        got = read_group(bib_text, start) if m.group(2) == "{" else None
        if got is None:
            continue
        body = got[0]
        key, _, rest = body.partition(",")
        fields: dict[str, str] = {}
        j = 0
        while j < len(rest):
            f = _FIELD.match(rest, j)
            if f is None:
                break
            j = f.end()
            if j < len(rest) and rest[j] == "{":
                val = read_group(rest, j)
                if val is None:
                    break
                fields[f.group(1).lower()], j = val[0], val[1]
            elif j < len(rest) and rest[j] == '"':
                end = rest.find('"', j + 1)
                if end < 0:
                    break
                fields[f.group(1).lower()], j = rest[j + 1 : end], end + 1
            else:
                v = re.match(r"[^,}]*", rest[j:])
                fields[f.group(1).lower()] = v.group(0).strip() if v else ""
                j += len(v.group(0)) if v else 1
        names = [n for n in _split_depth0(fields.get("author") or fields.get("editor") or "", _AND) if n.strip()]
        etal = any(n.strip().lower() == "others" for n in names)
        families = [family_name(n) for n in names if n.strip().lower() != "others"]
        year = fields.get("year") or (fields.get("date") or "")[:4] or "n.d."
        lines.append(f"\\bibitem[{{{short_authors(families, etal)}({year.strip()})}}]{{{key.strip()}}}")
    return "\n".join(lines)


_BBL_ENTRY = re.compile(r"\\entry\s*\{([^{}]*)\}.*?\\endentry", re.S)
_BBL_FAMILY = re.compile(r"family=\{((?:[^{}]|\{[^{}]*\})*)\}")
_BBL_NAMES = re.compile(r"\\name\s*\{(author|editor)\}\s*\{(\d+)\}")
_BBL_FIELD = re.compile(r"\\field\s*\{(year|labelyear|extradate|extrayear)\}\s*\{([^{}]*)\}")


def is_biblatex_bbl(text: str) -> bool:
    """True for a biblatex ``.bbl`` (``\\entry``/``\\endentry`` records, not ``\\bibitem``)."""
    return "\\endentry" in text and "\\entry" in text


def bbl_to_bibitems(bbl: str) -> str:
    """A biblatex ``.bbl`` as natbib ``\\bibitem`` lines (family names of the first author list, year)."""
    lines: list[str] = []
    for m in _BBL_ENTRY.finditer(bbl):
        body = m.group(0)
        n = _BBL_NAMES.search(body)
        families = []
        count = 0
        if n:
            count = int(n.group(2))
            families = _BBL_FAMILY.findall(body, n.end())[: max(count, 1)]
        fields = dict(_BBL_FIELD.findall(body))
        year = fields.get("year") or fields.get("labelyear") or "n.d."
        extra = fields.get("extradate") or fields.get("extrayear")
        if extra and extra.isdigit() and 0 < int(extra) <= 26:
            year += "abcdefghijklmnopqrstuvwxyz"[int(extra) - 1]
        short = short_authors(families, etal=count >= 3)
        lines.append(f"\\bibitem[{{{short}({year})}}]{{{m.group(1).strip()}}}")
    return "\n".join(lines)


# ------------------------------------------------------------------ rendering


def _cap(s: str) -> str:
    for i, c in enumerate(s):
        if c.isalpha():
            return s[:i] + c.upper() + s[i + 1 :]
    return s


def cite_text(name: str, opts: list[str | None], keys_arg: str, bib: Bibliography) -> str:
    """Text LaTeX (natbib/biblatex) prints for one citation command."""
    if name == "nocite":
        return ""
    if name == "citetext":
        return f"({keys_arg})"
    keys = [k.strip() for k in keys_arg.split(",") if k.strip()]
    pre, post = "", ""
    if len(opts) == 1:
        post = (opts[0] or "").strip()
    elif len(opts) >= 2:
        pre, post = (opts[0] or "").strip(), (opts[1] or "").strip()
    base = name.lower()
    cap = name[0].isupper()
    if base in ("citetalias", "citepalias"):
        items = [bib.aliases.get(k, UNKNOWN) for k in keys]
        out = "; ".join(items)
        return f"({out})" if base == "citepalias" else out
    entries = [bib.entries.get(k) for k in keys]
    if base in ("parencite", "autocite", "footcite"):
        base = "citep"
    elif base == "textcite" or base == "citeasnoun":
        base = "citet"
    elif base in ("cite", "shortcite", "citenp"):
        base = "citealt" if bib.biblatex else "citet"
    author_year = bib.author_year and any(e is not None and e.short for e in entries)
    if base == "citenum" or not author_year:
        labels = [UNKNOWN if e is None else (e.label or str(e.number)) for e in entries]
        nums = ", ".join(lbl.strip("[]") if lbl != UNKNOWN else "?" for lbl in labels)
        if base == "citenum":
            return nums
        if base == "citeauthor":
            return ", ".join((e.short if e is not None and e.short else UNKNOWN) for e in entries)
        body = f"[{nums}" + (f", {post}" if post else "") + "]"
        if pre:
            body = f"[{pre} {body[1:]}"
        return body

    def short(e: Entry | None, i: int) -> str:
        s = e.short if e is not None and e.short else "?"
        return _cap(s) if cap and i == 0 else s

    def year(e: Entry | None) -> str:
        return (e.year or "?") if e is not None else "?"

    known = [(i, e) for i, e in enumerate(entries) if e is not None and e.short]
    unknown = [UNKNOWN] * (len(entries) - len(known))
    if base == "citeauthor":
        return ", ".join([short(e, i) for i, e in known] + unknown)
    if base in ("citeyear", "citeyearpar"):
        out = ", ".join([year(e) for _, e in known] + unknown)
        return f"({out})" if base == "citeyearpar" else out
    if base == "citet":
        items = [f"{short(e, i)} ({year(e)})" for i, e in known] + unknown
        if post and known:
            last = items[len(known) - 1]
            items[len(known) - 1] = last[:-1] + f", {post})"
        return (pre + " " if pre else "") + "; ".join(items)
    items = [f"{short(e, i)} {year(e)}" for i, e in known] + unknown
    body = "; ".join(items)
    if pre:
        body = f"{pre} {body}"
    if post:
        body = f"{body}, {post}"
    if base == "citep":
        return f"({body})" if known else body
    return body  # citealt, citealp


def render_citations(text: str, bib: Bibliography) -> str:
    """Replace every citation command in (prose) ``text`` by the text LaTeX prints for it."""
    if "cite" not in text.lower():
        return text
    return replace_commands(text, CITE_COMMANDS, lambda n, o, a: cite_text(n, o, a[0], bib), 1, nopts=2)
