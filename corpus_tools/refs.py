"""Cross-references: number labels the way LaTeX does and render ``\\ref``-family commands.

:func:`number_labels` walks the body once, keeping LaTeX's counters (sections, appendix letters,
figures, tables, equations incl. ``align`` rows and ``subequations``, enumerate items) and the
"current label" that ``\\label`` captures (scoped to the float/equation it sits in, as TeX's
grouping does). :func:`render_refs` then prints ``\\ref`` -> "3", ``\\eqref`` -> "(3)",
``\\autoref`` -> "Figure 2" (hyperref's names), ``\\cref``/``\\Cref`` -> "fig. 2"/"Figure 2"
(cleveref's names), ``\\nameref`` -> the section title. A label never defined prints
:data:`UNKNOWN` ("[?]"), never the raw key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .texparse import read_group, read_optional, replace_commands, skip_ws

UNKNOWN = "[?]"

REF_COMMANDS = ("ref", "eqref", "autoref", "Autoref", "cref", "Cref", "crefrange", "Crefrange", "pageref", "vref", "Vref",
                "Ref", "nameref", "fref", "Fref", "cpageref", "labelcref", "subref")

_NUMBERED_MULTI = ("align", "eqnarray", "gather", "flalign", "alignat")
_SINGLE = ("equation", "multline", "dmath")
_FLOATS = {"figure": "figure", "figure*": "figure", "wrapfigure": "figure", "SCfigure": "figure",
           "table": "table", "table*": "table", "deluxetable": "table", "deluxetable*": "table", "longtable": "table",
           "wraptable": "table", "planotable": "table"}
_LISTS = ("enumerate", "itemize", "description")
_ENVS = _NUMBERED_MULTI + _SINGLE + tuple(_FLOATS) + _LISTS + ("subequations", "appendix", "appendices")
_TOKEN = re.compile(
    r"\\(section|subsection|subsubsection|chapter)(?![A-Za-z@])(\*?)"
    r"|\\(appendix)(?![A-Za-z@])"
    r"|\\(begin|end)\s*\{(" + "|".join(re.escape(e) for e in _ENVS) + r")\}"
    r"|\\(caption|tablecaption)(?![A-Za-z@])"
    r"|\\label\s*\{([^{}]*)\}"
    r"|(\\\\)"
    r"|\\(nonumber|notag)(?![A-Za-z@])"
    r"|\\(item)(?![A-Za-z@])"
)


@dataclass(frozen=True)
class Label:
    """What a label points at: its kind (section, figure, equation, ...), printed number, title."""

    kind: str
    number: str
    title: str = ""


def _letters(n: int) -> str:
    s = ""
    while n > 0:
        n, r = divmod(n - 1, 26)
        s = chr(65 + r) + s
    return s


def number_labels(body: str) -> dict[str, Label]:
    """``{label key: Label}`` for every ``\\label`` in ``body`` (one linear scan)."""
    labels: dict[str, Label] = {}
    sec = [0, 0, 0]
    appendix = False
    fig = tab = eq = 0
    current = Label("section", "", "")
    stack: list[tuple[str, Label]] = []
    lists: list[list] = []  # [env, item count]
    sub_parent: int | None = None
    sub_count = 0
    multi: dict | None = None  # {"pending": [...], "nonumber": bool}

    def next_eq() -> str:
        nonlocal eq, sub_count
        if sub_parent is not None:
            sub_count += 1
            return f"{sub_parent}{_letters(sub_count).lower()}"
        eq += 1
        return str(eq)

    def end_row() -> None:
        nonlocal current
        assert multi is not None
        if not multi["nonumber"]:
            current = Label("equation", next_eq())
        for key in multi["pending"]:
            labels[key] = current
        multi["pending"] = []
        multi["nonumber"] = False

    for m in _TOKEN.finditer(body):
        if m.group(1):  # sectioning
            if m.group(2):
                continue
            level = {"chapter": 0, "section": 0, "subsection": 1, "subsubsection": 2}[m.group(1)]
            sec[level] += 1
            for k in range(level + 1, 3):
                sec[k] = 0
            head = _letters(sec[0]) if appendix else str(sec[0])
            number = ".".join([head] + [str(x) for x in sec[1 : level + 1]])
            j = skip_ws(body, m.end())
            opt = read_optional(body, j)
            got = read_group(body, skip_ws(body, opt[1]) if opt else j)
            title = re.sub(r"\s+", " ", got[0]).strip() if got else ""
            kind = ("appendix" if appendix else "section") if level == 0 else ("subsection" if level == 1 else "subsubsection")
            current = Label(kind, number, title)
        elif m.group(3) or (m.group(4) == "begin" and m.group(5) in ("appendix", "appendices")):
            appendix = True
            sec = [0, 0, 0]
        elif m.group(4):
            env = m.group(5)
            if env in ("appendix", "appendices"):
                continue
            if m.group(4) == "begin":
                stack.append((env, current))
                if env in _LISTS:
                    lists.append([env, 0])
                elif env == "subequations":
                    sub_parent = int(next_eq()) if sub_parent is None else sub_parent
                    sub_count = 0
                    current = Label("equation", str(sub_parent))
                elif env in _SINGLE:
                    current = Label("equation", next_eq())
                elif env in _NUMBERED_MULTI:
                    multi = {"pending": [], "nonumber": False}
            else:
                if env in _NUMBERED_MULTI and multi is not None:
                    end_row()
                    multi = None
                if env in _LISTS and lists:
                    lists.pop()
                if env == "subequations":
                    sub_parent = None
                while stack:
                    top, saved = stack.pop()
                    if top == env:
                        current = saved
                        break
        elif m.group(6):
            kind = _FLOATS.get(stack[-1][0] if stack else "", "figure")
            for top, _ in reversed(stack):
                if top in _FLOATS:
                    kind = _FLOATS[top]
                    break
            if kind == "table":
                tab += 1
                current = Label("table", str(tab))
            else:
                fig += 1
                current = Label("figure", str(fig))
        elif m.group(7) is not None:
            key = m.group(7).strip()
            if multi is not None:
                multi["pending"].append(key)
            else:
                labels.setdefault(key, current)
        elif m.group(8):
            if multi is not None:
                end_row()
        elif m.group(9):
            if multi is not None:
                multi["nonumber"] = True
        elif m.group(10):
            if lists and lists[-1][0] == "enumerate":
                lists[-1][1] += 1
                current = Label("item", str(lists[-1][1]))
    return labels


_AUTOREF = {"section": "section", "subsection": "subsection", "subsubsection": "subsubsection", "appendix": "Appendix",
            "figure": "Figure", "table": "Table", "equation": "Equation", "item": "item"}
_CREF = {"section": ("section", "sections"), "subsection": ("section", "sections"), "subsubsection": ("section", "sections"),
         "appendix": ("appendix", "appendices"), "figure": ("fig.", "figs."), "table": ("table", "tables"),
         "equation": ("eq.", "eqs."), "item": ("item", "items")}
_CCREF = {"section": ("Section", "Sections"), "subsection": ("Section", "Sections"), "subsubsection": ("Section", "Sections"),
          "appendix": ("Appendix", "Appendices"), "figure": ("Figure", "Figures"), "table": ("Table", "Tables"),
          "equation": ("Equation", "Equations"), "item": ("Item", "Items")}


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cref(keys: list[str], labels: dict[str, Label], names: dict[str, tuple[str, str]]) -> str:
    groups: list[tuple[str, list[str]]] = []
    for k in keys:
        lab = labels.get(k)
        if lab is None:
            groups.append(("", [UNKNOWN]))
            continue
        num = f"({lab.number})" if lab.kind == "equation" else lab.number
        if groups and groups[-1][0] == lab.kind:
            groups[-1][1].append(num)
        else:
            groups.append((lab.kind, [num]))
    parts = []
    for kind, nums in groups:
        if not kind:
            parts.append(nums[0])
            continue
        one, many = names.get(kind, (kind, kind + "s"))
        parts.append(f"{one if len(nums) == 1 else many} {_and(nums)}")
    return _and(parts) if parts else UNKNOWN


def ref_text(name: str, key_arg: str, labels: dict[str, Label]) -> str:
    """Text LaTeX prints for one reference command."""
    keys = [k.strip() for k in key_arg.split(",") if k.strip()]
    if not keys:
        return UNKNOWN
    if name == "cref":
        return _cref(keys, labels, _CREF)
    if name == "labelcref":
        return _and([labels[k].number if k in labels else UNKNOWN for k in keys])
    if name in ("Cref", "Fref"):
        return _cref(keys, labels, _CCREF)
    if name in ("crefrange", "Crefrange") and len(keys) >= 1:
        return _cref(keys[:1], labels, _CREF if name == "crefrange" else _CCREF)
    if name in ("pageref", "cpageref"):
        return UNKNOWN
    lab = labels.get(keys[0])
    if lab is None:
        return UNKNOWN
    if name == "eqref":
        return f"({lab.number})"
    if name in ("autoref", "Autoref", "fref"):
        word = _AUTOREF.get(lab.kind, "")
        if name == "Autoref":
            word = word[:1].upper() + word[1:]
        return f"{word} {lab.number}".strip()
    if name == "nameref":
        return lab.title or lab.number
    return lab.number


def render_refs(text: str, labels: dict[str, Label]) -> str:
    """Replace every reference command in (prose) ``text`` by what LaTeX prints."""
    if "ref" not in text:
        return text
    return replace_commands(text, REF_COMMANDS, lambda n, o, a: ref_text(n, a[0], labels),
                            lambda n: 2 if n in ("crefrange", "Crefrange") else 1, nopts=0)
