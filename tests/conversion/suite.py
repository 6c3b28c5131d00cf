"""The LaTeX -> text conversion suite: cases of real-shaped arXiv constructs with binary checks.

In the spirit of olmOCR-Bench (unit tests per document instead of edit distance), each case in
``cases.yaml`` is a small e-print (a body snippet wrapped in a journal document, or a set of
files) plus checks on the converted text:

``contains`` / ``not_contains``  substrings (whitespace-collapsed on both sides)
``exact``                         substrings compared character for character (code, line breaks)
``math``                          math source that must come out verbatim (whitespace-collapsed)
``order``                         substrings that must appear in this order
``reason``                        the paper must be rejected with this reason (bounded work)
``fallback``                      the paper must be kept and the fallback recorded

Optional case fields: ``preamble``, ``class`` (document class, default aastex631), ``files``
(other members of the e-print), ``main`` (its file name, default ms.tex), ``encoding`` /
``newline`` (how the main file is written), ``repeat`` ([snippet, count] pairs appended to the
body), ``gzip_members`` (empty gzip members before the paper), ``single`` (a gzipped lone .tex).

Converters take the e-print's files and return (text, rejection reason or None): ours runs the
corpus stage's real path (:func:`corpus_tools.process.extract_guarded` on the packed e-print);
pylatexenc and pandoc get the main file as the baselines they are.
"""

from __future__ import annotations

import gzip
import io
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

CASES_FILE = Path(__file__).with_name("cases.yaml")
CHECKS = ("contains", "not_contains", "exact", "math", "order", "reason", "fallback")


@dataclass
class Case:
    """One suite case: its id, class, e-print files and checks."""

    id: str
    cls: str
    files: dict[str, bytes]
    main: str
    checks: dict[str, Any]
    gzip_members: int = 0
    single: bool = False
    raw: dict[str, Any] = field(default_factory=dict)


def _wrap(body: str, preamble: str, doc_class: str) -> str:
    return f"\\documentclass{{{doc_class}}}\n{preamble}\n\\begin{{document}}\n{body}\n\\end{{document}}\n"


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    """Read ``cases.yaml`` (a list of classes, each with its cases) into :class:`Case` objects."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    cases: list[Case] = []
    seen: set[str] = set()
    for group in data:
        cls = group["class"]
        for raw in group["cases"]:
            cid = raw["id"]
            if cid in seen:
                raise ValueError(f"duplicate case id {cid!r}")
            seen.add(cid)
            checks = {k: raw[k] for k in CHECKS if k in raw}
            if not checks:
                raise ValueError(f"case {cid!r} checks nothing")
            main = raw.get("main", "ms.tex")
            body = raw.get("tex", "")
            for snippet, count in raw.get("repeat", []):
                body += snippet * int(count)
            src = body if "\\documentclass" in body else _wrap(body, raw.get("preamble", ""), raw.get("class", "aastex631"))
            if raw.get("newline") == "crlf":
                src = src.replace("\n", "\r\n")
            elif raw.get("newline") == "cr":
                src = src.replace("\n", "\r")
            enc = raw.get("encoding", "utf-8")
            data_main = src.encode("utf-16") if enc == "utf-16" else src.encode(enc)
            files = {main: data_main}
            for name, text in (raw.get("files") or {}).items():
                files[name] = text.encode("utf-8")
            cases.append(Case(cid, cls, files, main, checks, int(raw.get("gzip_members", 0)), bool(raw.get("single")), raw))
    return cases


def pack(case: Case) -> bytes:
    """The case as arXiv would serve it: a gzipped tar (or a gzipped lone .tex), optional empty members first."""
    if case.single:
        blob = gzip.compress(case.files[case.main])
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in case.files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        blob = buf.getvalue()
    if case.gzip_members:
        blob = gzip.compress(b"") * case.gzip_members + blob
    return blob


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def check(case: Case, text: str, reason: str | None, fallback: str | None = None) -> list[str]:
    """Failed checks of ``case`` on a converter's output (empty list = pass)."""
    fails: list[str] = []
    flat = _norm(text)
    c = case.checks
    if "reason" in c:
        if reason != c["reason"]:
            fails.append(f"reason: wanted {c['reason']!r}, got {reason!r}")
        return fails
    if reason is not None:
        return [f"paper rejected ({reason})"]
    if c.get("fallback") and not fallback:
        fails.append("fallback: not recorded")
    for s in c.get("contains", []):
        if _norm(s) not in flat:
            fails.append(f"contains: {s!r}")
    for s in c.get("not_contains", []):
        if (_norm(s) in flat) if _norm(s) else (s in text):
            fails.append(f"not_contains: {s!r}")
    for s in c.get("exact", []):
        if s not in text:
            fails.append(f"exact: {s!r}")
    for s in c.get("math", []):
        if _norm(s) not in flat:
            fails.append(f"math: {s!r}")
    if "order" in c:
        pos = 0
        for s in c["order"]:
            k = flat.find(_norm(s), pos)
            if k < 0:
                fails.append(f"order: {s!r} missing or out of order")
                break
            pos = k + len(_norm(s))
    return fails


# ------------------------------------------------------------------ converters

Converter = Callable[[Case], tuple[str, "str | None", "str | None"]]


def ours(case: Case) -> tuple[str, str | None, str | None]:
    """corpus_tools on the packed e-print: (text, rejection reason, recorded fallback)."""
    from corpus_tools.eprint import Limits
    from corpus_tools.process import extract_guarded

    res = extract_guarded({"id": case.id}, pack(case), Limits(), "arxiv")
    if res.doc is None:
        return "", res.reason, None
    return res.doc["text"], None, res.info.get("fallback")


def _main_text(case: Case) -> str:
    data = case.files[case.main]
    for enc in ("utf-8", "utf-16"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def pylatexenc(case: Case) -> tuple[str, str | None, str | None]:
    """pylatexenc ``LatexNodes2Text(math_mode='verbatim')`` on the main file; a crash counts as a lost paper."""
    from pylatexenc.latex2text import LatexNodes2Text

    try:
        return LatexNodes2Text(math_mode="verbatim").latex_to_text(_main_text(case)), None, None
    except Exception as exc:  # noqa: BLE001 - a crash is the baseline's result
        return "", f"crash: {type(exc).__name__}", None


def pandoc_available() -> bool:
    """True when a ``pandoc`` binary is on PATH."""
    return shutil.which("pandoc") is not None


def pandoc(case: Case) -> tuple[str, str | None, str | None]:
    """Debian's ``pandoc -f latex -t plain`` on the main file, with the other files beside it."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in case.files.items():
            p = Path(tmp, name)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        try:
            proc = subprocess.run(["pandoc", "-f", "latex", "-t", "plain", "--wrap=none", case.main], cwd=tmp,
                                  capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            return "", "timeout", None
        if proc.returncode != 0:
            return "", f"pandoc exit {proc.returncode}", None
        return proc.stdout.decode("utf-8", "replace"), None, None
