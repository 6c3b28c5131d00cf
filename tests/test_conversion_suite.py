"""The conversion suite (tests/conversion/cases.yaml) as tests: every case must pass on our converter.

Each case is a real-shaped arXiv construct packed as an e-print and run through the corpus
stage's own path (``extract_guarded``); ``bench/latex_suite.py`` prints the same cases' pass
rates per class for pylatexenc and pandoc next to ours.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conversion.suite import check, load_cases, ours  # noqa: E402

from corpus_tools.eprint import Limits  # noqa: E402
from corpus_tools.filters import FilterConfig, check as filter_check  # noqa: E402
from corpus_tools.process import extract_guarded  # noqa: E402

CASES = load_cases()
ISSUE_CLASSES = {"packages_fallback", "code", "math", "tex_programming", "colour", "citations", "references",
                 "line_endings", "junk", "bounded_work", "encodings"}
RULE_CLASSES = {"includes", "comments", "macros", "appendix", "bibliography", "main_file"}


def test_suite_size_and_classes():
    classes = {c.cls for c in CASES}
    assert len(CASES) >= 150
    assert ISSUE_CLASSES | RULE_CLASSES <= classes
    for cls in classes:
        assert sum(c.cls == cls for c in CASES) >= 5, cls


@pytest.mark.parametrize("case", CASES, ids=[f"{c.cls}/{c.id}" for c in CASES])
def test_case(case):
    text, reason, fallback = ours(case)
    fails = check(case, text, reason, fallback)
    assert not fails, f"{fails}\n--- output ---\n{text[:2000]}"


def test_checker_rejects_wrong_output():
    """The checks are not vacuous: a wrong output fails each kind of check."""
    by_id = {c.id: c for c in CASES}
    assert check(by_id["citet-aasjournal-bbl"], "As shown by , the relation is tight.", None)
    assert check(by_id["textcolor-purple"], "Results. purpleWe also detect CO(2–1). Next.", None)
    assert check(by_id["text-in-subscript"], "Photometric redshifts $z_phot$ agree with $z_spec$.", None)
    assert check(by_id["include-without-extension"], "End. Power-law fits to the profiles. Start.", None)
    assert check(by_id["input-diamond-capped"], "text", None)
    assert check(by_id["lstlisting-indentation"], "def schechter(L, phi, Lstar, alpha): return phi", None)
    assert check(by_id["crlf-paragraphs"], "First paragraph about dust.\r\n\r\nSecond paragraph about gas.", None)


def test_nul_interleaved_text_counts_as_bad_characters():
    text = "Some paper text about galaxies. " * 100
    assert filter_check(text, FilterConfig())[0] is None
    utf16_as_bytes = text.encode("utf-16-le").decode("latin-1")
    reason, stats = filter_check(utf16_as_bytes, FilterConfig())
    assert reason == "bad_encoding" and stats["bad_char_ratio"] > 0.4


def test_any_exception_rejects_only_that_paper(monkeypatch):
    import corpus_tools.process as process

    def boom(*a, **k):
        raise KeyError("unexpected parser state")

    monkeypatch.setattr(process, "extract_paper", boom)
    res = extract_guarded({"id": "2401.00001"}, b"\\documentclass{article}", Limits(), "arxiv")
    assert res.doc is None and res.reason == "unparsable" and "KeyError" in res.detail


def test_time_budget_rejects_with_timeout(monkeypatch):
    import time

    import corpus_tools.process as process

    def slow(*a, **k):
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(process, "extract_paper", slow)
    res = extract_guarded({"id": "2401.00002"}, b"x", Limits(), "arxiv", budget_s=0.2)
    assert res.doc is None and res.reason == "timeout"
    monkeypatch.undo()
    res = extract_guarded({"id": "2401.00003"}, None, Limits(), "arxiv", budget_s=0.2)  # real path afterwards
    assert res.reason == "eprint_missing"
