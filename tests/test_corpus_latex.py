"""LaTeX -> text rules, each on a real-shaped snippet (arXiv conventions: AASTeX, MNRAS, A&A)."""

from __future__ import annotations

import gzip
import io
import re
import tarfile

import pytest

from corpus_tools.extract import extract_paper
from corpus_tools.latex import LatexError, MacroExpander, assemble, collect_macros, decode_tex, find_main, inline_inputs, strip_comments
from corpus_tools.render import cut_bibliography, render


def _text(src: str) -> str:
    user, body = collect_macros(strip_comments(src))
    return render(MacroExpander(user).expand(body)).text


def _doc(body: str, preamble: str = "") -> str:
    return "\\documentclass{aastex631}\n" + preamble + "\n\\begin{document}\n" + body + "\n\\end{document}\n"


def test_comments_are_stripped_but_escaped_percent_kept():
    src = "We find 35\\% of the flux. % 35% of the flux in cluster 7 -- recheck\nNext line\\\\% a comment after a line break\nEnd."
    out = strip_comments(src)
    assert "recheck" not in out and "a comment after" not in out
    assert "35\\% of the flux. Next line" in out
    assert "\\\\End." in out.replace("\n", "")


def test_comment_keeps_paragraph_break_and_comment_env():
    src = "First paragraph.%\n\nSecond paragraph.\n\\begin{comment}\nold text\n\\end{comment}\n\\iffalse hidden \\fi shown"
    out = strip_comments(src)
    assert "First paragraph.\n\nSecond paragraph." in out
    assert "old text" not in out and "hidden" not in out and "shown" in out


def test_main_file_detection_skips_referee_response_and_fragments():
    files = {
        "response_to_referee.tex": "\\documentclass{letter}\\begin{document}Dear Editor\\end{document}",
        "sections/intro.tex": "\\section{Introduction} text",
        "ms.tex": "\\documentclass{aastex631}\n\\begin{document}\\input{sections/intro}\\end{document}",
        "old.tex": "% \\documentclass{article} commented out\n\\section{x}",
    }
    assert find_main(files) == "ms.tex"
    with pytest.raises(LatexError) as err:
        find_main({"reply.tex": "\\documentclass{article}\\begin{document}We thank the referee\\end{document}"})
    assert err.value.reason == "no_main_tex"


def test_inputs_are_inlined_recursively_without_cycles():
    files = {
        "a.tex": "A-start \\input{sub/b} A-end",
        "sub/b.tex": "B-start \\include{c}",
        "c.tex": "C-body \\input{a}",  # cycle back to a: ignored
    }
    out = inline_inputs("root \\input{a.tex} \\input missing-file done", files)
    assert "A-start" in out and "B-start" in out and "C-body" in out and "A-end" in out and "done" in out
    assert out.count("A-start") == 1


def test_user_macros_with_arguments_defaults_def_and_operator():
    src = _doc(
        "Dispersions $\\sig$ and $\\sig[\\star]$, $\\ML[K]{dyn}$, $\\pc{1.5}$, $\\log\\Mdyn$, "
        "$1-\\erf(x)$ and $\\vel{esc}$.",
        "\\newcommand{\\vel}[1]{v_{\\rm #1}}\n\\def\\Mdyn{M_{\\rm dyn}}\n\\def\\pc#1{#1\\,{\\rm pc}}\n"
        "\\DeclareMathOperator{\\erf}{erf}\n\\newcommand{\\sig}[1][\\rm los]{\\sigma_{#1}}\n"
        "\\newcommand{\\ML}[2][V]{(M/L)_{#1}^{\\rm #2}}",
    )
    out = _text(src)
    assert "$\\sigma_{\\rm los}$" in out and "$\\sigma_{\\star}$" in out
    assert "(M/L)_{K}^{\\rm dyn}" in out
    assert "1.5\\,{\\rm pc}" in out
    assert "\\log M_{\\rm dyn}" in out  # no "\logM" glued into one control word
    assert "\\operatorname{erf}" in out and "v_{\\rm esc}" in out
    for leftover in ("sig", "ML", "Mdyn", "vel", "pc", "erf"):
        assert not re.search(r"\\" + leftover + r"(?![A-Za-z])", out), leftover


def test_builtin_journal_and_astro_macros_are_expanded_by_mode():
    out = _text(_doc("A mass of $10^{12}\\,\\msun$, a speed of 8\\kms, and a star of 2\\msun; see \\apj and \\aap."))
    assert "$10^{12}\\,M_\\odot$" in out  # inside math: bare
    assert "8${\\rm km\\,s^{-1}}$" in out  # in text: wrapped in $...$
    assert "2$M_\\odot$" in out
    assert "ApJ" in out and "A&A" in out
    assert "\\msun" not in out and "\\kms" not in out


def test_user_definition_beats_builtin_and_macro_bomb_is_stopped():
    out = _text(_doc("$\\msun$", "\\newcommand{\\msun}{M_{\\rm sun}}"))
    assert "M_{\\rm sun}" in out and "\\odot" not in out
    user, body = collect_macros("\\def\\a{\\b\\b\\b\\b}\\def\\b{\\c\\c\\c\\c}\\def\\c{\\d\\d\\d\\d}\\def\\d{xxxxxxxxxx}" + "\\a" * 20000)
    with pytest.raises(LatexError) as err:
        MacroExpander(user, max_growth=5).expand(body)
    assert err.value.reason == "macro_bomb"


def test_math_is_kept_verbatim():
    eq = "\\begin{equation}\n\\Sigma = 5.4\\times10^{-42}\\,\\frac{L}{A} \\quad [{\\rm M_\\odot\\,yr^{-1}}],\n\\end{equation}"
    out = _text(_doc("The density is\n" + eq + "\nwhere $A_{\\rm ann}$ is the area and \\(x\\) and \\[y=1\\]."))
    assert eq in out
    assert "$A_{\\rm ann}$" in out and "\\(x\\)" in out and "\\[y=1\\]" in out


def test_bibliography_cut_everywhere_appendix_kept():
    body = ("\\section{Results}\nText \\citep{A2019}.\n\\bibliographystyle{mnras}\n\\bibliography{refs}\n"
            "\\begin{thebibliography}{}\n\\bibitem[A(2019)]{A2019} Author A., 2019, MNRAS, 1, 2\n\\end{thebibliography}\n"
            "\\appendix\n\\section{Inclination corrections}\nAppendix text stays.")
    out = _text(_doc(body))
    assert "Author A., 2019" not in out and "refs" not in out and "mnras" not in out
    assert "# Appendix: Inclination corrections" in out and "Appendix text stays." in out
    assert "Text (A 2019)." in out  # citation rendered from the bibitem label, not deleted


def test_aas_reference_list_is_cut():
    body = ("\\section{Discussion}\nA slope near $-1.3$.\n\\acknowledgments\nWe thank the night assistants.\n"
            "\\section*{References}\n\\reference{} Kessel, R. 1999, \\apj, 522, 82\n\\reference{} Moreno, L. 2003, \\aj, 125, 1500\n")
    out = _text(_doc(body))
    assert "Kessel" not in out and "Moreno" not in out
    assert "We thank the night assistants." in out and "# Acknowledgments" in out


def test_sections_figures_tables_and_markup():
    body = ("\\section{Data and method}\\label{sec:data}\nWe use \\textbf{bold} and \\emph{emphasis} and {\\it italic} text~here.\n"
            "\\begin{figure}\\centering\\includegraphics[width=\\columnwidth]{fig.png}\n"
            "\\caption{Median $t$ versus radius.}\\label{fig:a}\\end{figure}\n"
            "\\begin{table}\\caption{Fits.}\\begin{tabular}{lc}\\hline A & $1\\pm2$ \\\\ \\hline\\end{tabular}\\end{table}\n"
            "See Figure~\\ref{fig:a}.\\footnote{A footnote.} He\\,\\textsc{i} 10833\\,\\AA\\ in Lefèvre's and M\\\"uller's data.")
    out = _text(_doc(body))
    assert "# Data and method" in out
    assert "We use bold and emphasis and italic text here." in out
    assert "Figure: Median $t$ versus radius." in out and "includegraphics" not in out
    assert "\\begin{tabular}{lc}" in out and "A & $1\\pm2$" in out  # tables stay LaTeX
    assert "See Figure 1." in out and "fig:a" not in out and "(A footnote.)" in out
    assert "He I 10833 Å" in out and "Müller" in out and "Lefèvre" in out
    assert "\\label" not in out and "sec:data" not in out


def test_latin1_fallback_and_declared_inputenc():
    raw = "\\usepackage[latin1]{inputenc} Ren\xe9e Lef\xe8vre, Sternwartestra\xdfe".encode("latin-1")
    text, enc = decode_tex(raw)
    assert enc == "latin-1" and "Renée Lefèvre" in text and "Sternwartestraße" in text
    text, enc = decode_tex("Åsa Lindström".encode("utf-8"))
    assert enc == "utf-8" and text == "Åsa Lindström"
    text, enc = decode_tex(b"caf\xe9 \x93quoted\x94")  # undeclared: cp1252, never dropped
    assert enc == "cp1252" and text == "café “quoted”"


def _targz(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_referee_response_never_in_text_and_metadata_prepended():
    files = {
        "ms.tex": _doc("\\title{Helium}\\begin{abstract}Source abstract.\\end{abstract}\\section{Intro}The paper body."),
        "response_to_referee.tex": "\\documentclass{letter}\\begin{document}We thank the referee for a careful report.\\end{document}",
    }
    meta = {"id": "2405.03321", "title": "Metastable  helium\n absorption", "abstract": "  Metadata abstract. ", "categories": ["astro-ph.EP"],
            "submitted": "2024-05-06T10:00:00Z"}
    res = extract_paper(meta, _targz(files))
    assert res.doc is not None, res
    text = res.doc["text"]
    assert text.startswith("Metastable helium absorption\n\nMetadata abstract.\n\n")
    assert "The paper body." in text and "thank the referee" not in text and "Source abstract" not in text
    assert res.doc["date"] == "2024-05-06" and res.doc["n_chars"] == len(text)


def test_single_gzipped_tex_and_abstract_fallback_from_source():
    data = gzip.compress(_doc("\\title{T}\\begin{abstract}From the source.\\end{abstract}\\section{Intro}Body.").encode())
    res = extract_paper({"id": "2401.00417", "title": "Meta title", "abstract": None}, data)
    assert res.doc is not None and "From the source." in res.doc["text"] and res.doc["abstract"] == "From the source."


def test_pdf_only_and_withdrawn_are_rejected_with_reasons():
    assert extract_paper({"id": "x"}, b"%PDF-1.4 ...").reason == "pdf_only"
    stub = gzip.compress(_doc("This paper has been withdrawn by the author(s) due to an error.").encode())
    assert extract_paper({"id": "y"}, stub).reason == "withdrawn"
    assert extract_paper({"id": "z", "comment": "This paper has been withdrawn by the author"}, b"").reason == "withdrawn"


def test_local_sty_macros_are_used():
    files = {"main.tex": _doc("Mass $\\Mbh$.", "\\usepackage{mymacros}").encode(), "mymacros.sty": b"\\newcommand{\\Mbh}{M_{\\bullet}}"}
    latex, info = assemble(files)
    assert "M_{\\bullet}" in render(latex).text and info["main_file"] == "main.tex"


def test_cut_bibliography_keeps_text_after_references_section():
    body = "Intro.\n\\section*{References}\nRef A.\nRef B.\n\\section{Appendix material}\nKept."
    out = cut_bibliography(body)
    assert "Ref A." not in out and "Kept." in out and "Intro." in out
