"""The bundled sample corpus (examples/) is well formed and in sync with its sources.

Offline, standard library + pytest only (the arxiv-client check is skipped when
the ``arxiv`` package is not installed).
"""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
BUILD = EXAMPLES / "build_sample_corpus.py"
CORPUS = EXAMPLES / "sample_corpus"
MCQ = EXAMPLES / "mcq" / "astro_mcq_sample.json"
ASTROMLAB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "astromlab1_public_mcq.json"

ATOM = {"atom": "http://www.w3.org/2005/Atom",
        "arxiv": "http://arxiv.org/schemas/atom",
        "opensearch": "http://a9.com/-/spec/opensearch/1.1/"}
OAI = {"oai": "http://www.openarchives.org/OAI/2.0/", "ax": "http://arxiv.org/OAI/arXiv/"}
MCQ_FIELDS = ["question", "A", "B", "C", "D", "answer", "explanation", "topic", "id"]


# --------------------------------------------------------------------------- helpers

@functools.lru_cache(maxsize=None)
def metadata() -> tuple[dict, ...]:
    lines = (CORPUS / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line) for line in lines if line.strip())


@functools.lru_cache(maxsize=None)
def specimens() -> dict:
    return json.loads((CORPUS / "specimens.json").read_text(encoding="utf-8"))


def by_role(role: str) -> list[dict]:
    ids = specimens()["roles"][role]
    return [m for m in metadata() if m["id"] in ids]


def record(arxiv_id: str) -> dict:
    return next(m for m in metadata() if m["id"] == arxiv_id)


def eprint_bytes(rec: dict) -> bytes:
    return (CORPUS / rec["eprint"]).read_bytes()


def tar_members(rec: dict) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(eprint_bytes(rec))), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def source_text(rec: dict) -> str:
    """All LaTeX of a paper's e-print (latin-1 never fails; fine for word matching)."""
    raw = eprint_bytes(rec)
    if rec["eprint_format"] == "tar.gz":
        return "\n".join(b.decode("latin-1") for n, b in sorted(tar_members(rec).items())
                         if n.endswith((".tex", ".bbl")))
    if rec["eprint_format"] == "tex.gz":
        return gzip.decompress(raw).decode("latin-1")
    return ""


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def run_build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BUILD), *args], capture_output=True, text=True,
                          timeout=60)


# --------------------------------------------------------------------------- build

def test_build_outputs_are_in_sync_with_sources():
    proc = run_build("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_flags_tampered_missing_and_stale_files(tmp_path):
    out = tmp_path / "corpus"
    shutil.copytree(CORPUS, out)
    (out / "metadata.jsonl").write_text("{}\n", encoding="utf-8")
    (out / "eprints" / "2401.00417").unlink()
    (out / "eprints" / "9999.99999").write_bytes(b"junk")
    proc = run_build("--check", "--out", str(out))
    assert proc.returncode == 1
    assert "differs: metadata.jsonl" in proc.stderr
    assert "missing: eprints/2401.00417" in proc.stderr
    assert "stale): eprints/9999.99999" in proc.stderr


def test_build_is_byte_for_byte_reproducible(tmp_path):
    for name in ("a", "b"):
        proc = run_build("--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == len(metadata()) + 5
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    # gzip headers carry no timestamp and no file name
    for rel in files_a:
        data = (tmp_path / "a" / rel).read_bytes()
        if data[:2] == b"\x1f\x8b":
            assert data[4:8] == b"\0\0\0\0", rel    # MTIME
            assert data[3] & 0x08 == 0, rel         # FNAME flag


def test_examples_folder_is_small():
    total = sum(p.stat().st_size for p in EXAMPLES.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 1_000_000, total


# --------------------------------------------------------------------------- metadata and e-prints

def test_metadata_records_are_complete():
    recs = metadata()
    assert len(recs) == 20
    assert len({r["id"] for r in recs}) == len(recs)
    new_style = re.compile(r"^\d{4}\.\d{4,5}$")
    old_style = re.compile(r"^astro-ph/\d{7}$")
    for r in recs:
        assert new_style.match(r["id"]) or old_style.match(r["id"]), r["id"]
        assert r["title"] and r["abstract"] and r["authors"]
        assert all(isinstance(a, str) and a for a in r["authors"])
        assert r["primary_category"] == r["categories"][0]
        assert r["primary_category"].startswith("astro-ph")
        assert datetime.fromisoformat(r["submitted"].replace("Z", "+00:00")) <= \
            datetime.fromisoformat(r["updated"].replace("Z", "+00:00"))
        assert (r["version"] > 1) == (r["submitted"] != r["updated"]), r["id"]
        assert r["license"] is None or r["license"].startswith("http://"), r["id"]
        assert r["eprint"] == "eprints/" + r["id"].replace("/", "_")
    assert sum(bool(old_style.match(r["id"])) for r in recs) >= 2


def test_eprint_files_match_metadata_one_to_one():
    on_disk = sorted(p.name for p in (CORPUS / "eprints").iterdir())
    assert on_disk == sorted(r["id"].replace("/", "_") for r in metadata())
    # served like https://arxiv.org/e-print/<id>: no extension tells the format
    assert not any(name.endswith((".gz", ".tar", ".tgz", ".pdf", ".tex")) for name in on_disk)


@pytest.mark.parametrize("rec", metadata(), ids=lambda r: r["id"])
def test_eprint_type_matches_metadata_by_magic_bytes(rec):
    raw = eprint_bytes(rec)
    fmt = rec["eprint_format"]
    if fmt == "pdf":
        assert raw.startswith(b"%PDF-") and raw.rstrip().endswith(b"%%EOF")
        return
    assert raw[:2] == b"\x1f\x8b", "not gzip"
    inner = gzip.decompress(raw)
    is_tar = inner[257:262] == b"ustar"
    if fmt == "tar.gz":
        assert is_tar
        assert any(n.endswith(".tex") for n in tar_members(rec))
    else:
        assert fmt == "tex.gz"
        assert not is_tar
        assert b"\\documentclass" in inner and b"\\begin{document}" in inner


def test_format_mix_covers_all_arxiv_eprint_kinds():
    formats = [r["eprint_format"] for r in metadata()]
    assert formats.count("pdf") == 1
    assert formats.count("tar.gz") >= 2
    assert formats.count("tex.gz") >= 10


def test_tar_members_are_safe_regular_files():
    for rec in (r for r in metadata() if r["eprint_format"] == "tar.gz"):
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(eprint_bytes(rec)))) as tar:
            for m in tar.getmembers():
                p = PurePosixPath(m.name)
                assert m.isfile(), (rec["id"], m.name)
                assert not p.is_absolute() and ".." not in p.parts, (rec["id"], m.name)
                assert m.uid == 0 and m.gid == 0 and m.mode == 0o644


def test_multi_file_paper_layout():
    rec = record(specimens()["roles"]["multi_file"][0])
    members = tar_members(rec)
    assert set(members) == {"main.tex", "macros.tex", "sections/intro.tex", "results.tex",
                            "main.bbl", "figures/sfr_profile.png"}
    main = members["main.tex"].decode("utf-8")
    for needle in (r"\documentclass", r"\begin{document}", r"\input{macros}",
                   r"\input{sections/intro}", r"\include{results}", r"\appendix",
                   r"\bibliography{refs}"):
        assert needle in main, needle
    # the appendix comes after the bibliography, as in MNRAS papers
    assert main.index(r"\appendix") > main.index(r"\bibliography{refs}")
    assert r"\begin{thebibliography}" in members["main.bbl"].decode("utf-8")
    assert members["figures/sfr_profile.png"].startswith(b"\x89PNG\r\n\x1a\n")
    assert r"\documentclass" not in members["results.tex"].decode("utf-8")


def test_referee_response_sits_beside_the_real_main_file():
    rec = by_role("referee_response")[0]
    members = {n: b.decode("utf-8") for n, b in tar_members(rec).items()}
    mains = [n for n, t in members.items() if r"\documentclass" in t and r"\begin{document}" in t]
    assert sorted(mains) == ["ms.tex", "response_to_referee.tex"]
    assert r"\begin{abstract}" in members["ms.tex"]
    assert r"\begin{abstract}" not in members["response_to_referee.tex"]
    assert "referee" in members["response_to_referee.tex"].lower()


def test_latin1_paper_is_not_utf8():
    rec = by_role("latin1")[0]
    assert rec["eprint_format"] == "tex.gz"
    raw = gzip.decompress(eprint_bytes(rec))
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("latin-1")
    for name in ("Lefèvre", "Müller", "Åsa Lindström"):
        assert name in text
    assert "Lefèvre" in " ".join(rec["authors"])  # metadata itself is proper UTF-8


def test_heavy_macro_paper_uses_undefined_journal_macros_and_defines_its_own():
    text = source_text(by_role("heavy_macros")[0])
    code = "\n".join(re.sub(r"(?<!\\)%.*", "", line) for line in text.splitlines())
    for macro in (r"\msun", r"\kms", r"\apj", r"\mnras", r"\aap", r"\lsun", r"\sim"):
        assert re.search(re.escape(macro) + r"(?![A-Za-z])", code), macro
        assert not re.search(r"\\(newcommand|renewcommand|def)\s*\{?" + re.escape(macro) + r"(?![A-Za-z])",
                             code), f"{macro} must not be defined"
    assert r"\newcommand{\vel}[1]{v_{\rm #1}}" in text
    assert r"\def\Mstar{M_\star}" in text
    assert r"\DeclareMathOperator{\erf}{erf}" in text
    assert re.search(r"\\newcommand\{\\\w+\}\[\d\]\[[^\]]*\]", text), "optional-argument macro"
    assert re.search(r"\d\\%", text), r"\% in text"
    comment_lines = [l for l in text.splitlines() if l.lstrip().startswith("%")]
    assert any(r"\msun" in l for l in comment_lines)
    assert any(not l.lstrip().startswith("%") and re.search(r"(?<!\\)%", l)
               for l in text.splitlines()), "a comment after text on the same line"


def test_withdrawn_paper():
    rec = by_role("withdrawn")[0]
    assert "withdrawn" in rec["comment"].lower()
    assert rec["version"] >= 2
    assert "withdrawn by the author" in source_text(rec)
    assert len(gzip.decompress(eprint_bytes(rec))) < 400


def test_araa_review_is_marked_by_journal_and_doi():
    rec = by_role("araa_review")[0]
    assert rec["journal_ref"].startswith("Annu. Rev. Astron. Astrophys.")
    assert rec["doi"].startswith(specimens()["benchmark_source_doi_prefix"] + "-")
    others = [r for r in metadata() if r["id"] != rec["id"]]
    assert not any((r["doi"] or "").startswith("10.1146/") for r in others)


def test_aas_style_reference_list():
    text = source_text(by_role("aas_references")[0])
    assert r"\section*{References}" in text
    assert text.count(r"\reference") >= 2
    assert "thebibliography" not in text


def test_near_duplicates_are_near_but_not_exact():
    a, b = by_role("near_duplicate")
    ta, tb = source_text(a), source_text(b)
    assert ta != tb
    sa, sb = ngrams(words(ta), 5), ngrams(words(tb), 5)
    assert 0.75 <= len(sa & sb) / len(sa | sb) < 0.99
    # ... and no other pair of papers comes anywhere close
    shingles = {r["id"]: ngrams(words(source_text(r)), 5) for r in metadata()
                if r["eprint_format"] != "pdf"}
    pair = {a["id"], b["id"]}
    for i, x in enumerate(sorted(shingles)):
        for y in sorted(shingles)[i + 1:]:
            if {x, y} != pair:
                j = len(shingles[x] & shingles[y]) / len(shingles[x] | shingles[y])
                assert j < 0.2, (x, y, j)


# --------------------------------------------------------------------------- API and OAI-PMH responses

def test_atom_feed_lists_every_paper():
    root = ET.parse(CORPUS / "arxiv_api_feed.atom").getroot()
    assert root.tag == "{http://www.w3.org/2005/Atom}feed"
    assert int(root.findtext("opensearch:totalResults", namespaces=ATOM)) == len(metadata())
    assert root.findtext("opensearch:startIndex", namespaces=ATOM) == "0"
    entries = root.findall("atom:entry", ATOM)
    ids = [re.sub(r"v\d+$", "", e.findtext("atom:id", namespaces=ATOM).split("/abs/", 1)[1])
           for e in entries]
    assert ids == [r["id"] for r in metadata()]
    for e, rec in zip(entries, metadata()):
        assert e.findtext("atom:id", namespaces=ATOM) == f"http://arxiv.org/abs/{rec['id']}v{rec['version']}"
        assert e.findtext("atom:published", namespaces=ATOM) == rec["submitted"]
        assert e.findtext("atom:updated", namespaces=ATOM) == rec["updated"]
        assert " ".join(e.findtext("atom:title", namespaces=ATOM).split()) == rec["title"]
        assert " ".join(e.findtext("atom:summary", namespaces=ATOM).split()) == rec["abstract"]
        assert [a.findtext("atom:name", namespaces=ATOM) for a in e.findall("atom:author", ATOM)] \
            == rec["authors"]
        assert e.find("arxiv:primary_category", ATOM).get("term") == rec["primary_category"]
        assert [c.get("term") for c in e.findall("atom:category", ATOM)] == rec["categories"]
        assert e.findtext("arxiv:doi", namespaces=ATOM) == rec["doi"]
        assert e.findtext("arxiv:journal_ref", namespaces=ATOM) == rec["journal_ref"]
        assert e.findtext("arxiv:comment", namespaces=ATOM) == rec["comment"]
        pdf = [l.get("href") for l in e.findall("atom:link", ATOM) if l.get("title") == "pdf"]
        assert pdf == [f"http://arxiv.org/pdf/{rec['id']}v{rec['version']}"]


def _oai_page(n: int) -> ET.Element:
    return ET.parse(CORPUS / f"oai_pmh_listrecords_page{n}.xml").getroot()


def test_oai_pmh_pages_split_by_resumption_token():
    p1, p2 = _oai_page(1), _oai_page(2)
    req1 = p1.find("oai:request", OAI)
    assert req1.get("verb") == "ListRecords" and req1.get("metadataPrefix") == "arXiv"
    assert req1.get("set") == "physics:astro-ph"
    t1 = p1.find("oai:ListRecords/oai:resumptionToken", OAI)
    t2 = p2.find("oai:ListRecords/oai:resumptionToken", OAI)
    assert t1.get("cursor") == "0" and t1.get("completeListSize") == str(len(metadata()))
    assert (t1.text or "").strip(), "page 1 must carry a token"
    assert not (t2.text or "").strip(), "the last page has an empty token"
    assert p2.find("oai:request", OAI).get("resumptionToken") == t1.text
    n1 = len(p1.findall("oai:ListRecords/oai:record", OAI))
    assert t2.get("cursor") == str(n1)


def test_oai_pmh_records_match_metadata():
    recs = []
    for n in (1, 2):
        recs += _oai_page(n).findall("oai:ListRecords/oai:record", OAI)
    assert len(recs) == len(metadata())
    for r, m in zip(recs, metadata()):
        assert r.findtext("oai:header/oai:identifier", namespaces=OAI) == f"oai:arXiv.org:{m['id']}"
        assert "physics:astro-ph" in [s.text for s in r.findall("oai:header/oai:setSpec", OAI)]
        ax = r.find("oai:metadata/ax:arXiv", OAI)
        assert ax.findtext("ax:id", namespaces=OAI) == m["id"]
        assert ax.findtext("ax:created", namespaces=OAI) == m["submitted"][:10]
        assert ax.findtext("ax:updated", namespaces=OAI) == (m["updated"][:10] if m["version"] > 1 else None)
        names = []
        for a in ax.findall("ax:authors/ax:author", OAI):
            fore = a.findtext("ax:forenames", namespaces=OAI)
            key = a.findtext("ax:keyname", namespaces=OAI)
            names.append(f"{fore} {key}" if fore else key)
        assert names == m["authors"]
        assert ax.findtext("ax:categories", namespaces=OAI).split() == m["categories"]
        assert " ".join(ax.findtext("ax:title", namespaces=OAI).split()) == m["title"]
        assert " ".join(ax.findtext("ax:abstract", namespaces=OAI).split()) == m["abstract"]
        assert ax.findtext("ax:doi", namespaces=OAI) == m["doi"]
        assert ax.findtext("ax:journal-ref", namespaces=OAI) == m["journal_ref"]
        assert ax.findtext("ax:comments", namespaces=OAI) == m["comment"]
        assert ax.findtext("ax:license", namespaces=OAI) == m["license"]


def test_arxiv_client_parses_the_feed_from_a_local_server():
    arxiv = pytest.importorskip("arxiv", reason="the `arxiv` package is not installed")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # every query gets the recorded response
            self.path = "/arxiv_api_feed.atom"
            return super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(CORPUS)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = arxiv.Client(page_size=100, delay_seconds=0, num_retries=0)
        client.query_url_format = f"http://127.0.0.1:{server.server_address[1]}/api/query?{{}}"
        results = list(client.results(arxiv.Search(query="cat:astro-ph*", max_results=None)))
    finally:
        server.shutdown()
        server.server_close()
    assert [r.get_short_id() for r in results] == [f"{m['id']}v{m['version']}" for m in metadata()]
    for r, m in zip(results, metadata()):
        assert r.title == m["title"]
        assert [a.name for a in r.authors] == m["authors"]
        assert (r.doi, r.journal_ref, r.comment) == (m["doi"], m["journal_ref"], m["comment"])
        assert r.categories == m["categories"] and r.primary_category == m["primary_category"]
        assert r.pdf_url == f"http://arxiv.org/pdf/{m['id']}v{m['version']}"


# --------------------------------------------------------------------------- MCQ sample

def test_mcq_sample_is_balanced_and_well_formed():
    rows = json.loads(MCQ.read_text(encoding="utf-8"))
    assert len(rows) == 40
    assert all(list(r) == MCQ_FIELDS for r in rows)
    assert len({r["id"] for r in rows}) == 40
    assert all(re.fullmatch(r"sample-\d{3}", r["id"]) for r in rows)
    counts = {k: sum(r["answer"] == k for r in rows) for k in "ABCD"}
    assert counts == {"A": 10, "B": 10, "C": 10, "D": 10}
    assert {r["topic"] for r in rows} == {"GA", "CO", "EP", "HE", "IM", "SR"}
    for r in rows:
        opts = [r[k] for k in "ABCD"]
        assert len(set(opts)) == 4 and all(o.strip() for o in opts), r["id"]
        assert r["question"].strip() and r["explanation"].strip()
    # the right answer must not give itself away by being the longest option
    longest = sum(max("ABCD", key=lambda k: len(r[k])) == r["answer"] for r in rows)
    assert longest <= 12, longest


# --------------------------------------------------------------------------- benchmark contamination specimen

@pytest.fixture(scope="module")
def astromlab():
    if not ASTROMLAB.is_file():
        pytest.skip(f"AstroMLab-1 public file not found at {ASTROMLAB}")
    return json.loads(ASTROMLAB.read_text(encoding="utf-8"))


def test_planted_passage_shares_a_13_gram_with_the_benchmark(astromlab):
    (plant,) = specimens()["planted_benchmark"]
    assert plant["file"] == ASTROMLAB.name
    q = astromlab[plant["index"]]
    bench = ngrams(words(" ".join(q[k] for k in ("question", "A", "B", "C", "D"))), 13)
    paper = ngrams(words(source_text(record(plant["id"]))), 13)
    shared = bench & paper
    # question text plus one option, verbatim: far more than a single window
    assert len(shared) >= 30, len(shared)
    for field in plant["fields"]:
        assert " ".join(words(q[field])) in " ".join(words(source_text(record(plant["id"]))))


def test_no_other_sample_text_overlaps_the_benchmark(astromlab):
    bench: set[tuple[str, ...]] = set()
    for q in astromlab:
        bench |= ngrams(words(" ".join(q[k] for k in ("question", "A", "B", "C", "D"))), 13)
    planted = {p["id"] for p in specimens()["planted_benchmark"]}
    for rec in metadata():
        if rec["id"] in planted:
            continue
        text = " ".join([source_text(rec), rec["title"], rec["abstract"]])
        assert not ngrams(words(text), 13) & bench, rec["id"]
    for row in json.loads(MCQ.read_text(encoding="utf-8")):
        text = " ".join(row[k] for k in ("question", "A", "B", "C", "D", "explanation"))
        assert not ngrams(words(text), 13) & bench, row["id"]
