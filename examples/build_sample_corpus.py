#!/usr/bin/env python3
"""Build the bundled sample arXiv corpus from ``examples/sample_src/``.

The sources are plain files, one folder per paper (``sample_src/<paper-key>/``,
where the paper key is the arXiv id with ``/`` replaced by ``_``), plus
``sample_src/catalog.json`` with the arXiv metadata of every paper. This script
turns them into the formats arXiv really serves, under ``sample_corpus/``:

``eprints/<paper-key>``
    What ``https://arxiv.org/e-print/<id>`` returns, with no file extension:
    a gzipped tar for multi-file papers (``eprint_format`` ``tar.gz``), a gzip
    of the lone ``.tex`` for single-file papers (``tex.gz``) and the raw PDF
    for PDF-only submissions (``pdf``). Consumers must sniff magic bytes.
``metadata.jsonl``
    One JSON record per paper (id, title, abstract, authors, categories, ...).
``arxiv_api_feed.atom``
    An arXiv API (``/api/query``) Atom response listing every paper.
``oai_pmh_listrecords_page1.xml``, ``oai_pmh_listrecords_page2.xml``
    An OAI-PMH ``ListRecords`` response (``metadataPrefix=arXiv``,
    ``set=physics:astro-ph``) split over two pages by a resumption token.
``specimens.json``
    Which paper plays which test role (withdrawn, latin-1, near duplicate...).

The build is deterministic: sorted tar members, fixed owners, modes and
mtimes, gzip headers with mtime 0 and no file name, fixed feed timestamps.
Running it twice gives byte-identical files.

Usage::

    python examples/build_sample_corpus.py            # (re)write sample_corpus/
    python examples/build_sample_corpus.py --check    # exit 1 if out of sync

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import textwrap
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
DEFAULT_SRC = HERE / "sample_src"
DEFAULT_OUT = HERE / "sample_corpus"

EPRINT_FORMATS = ("tar.gz", "tex.gz", "pdf")

# Fixed timestamps of the "responses", so that the build is reproducible.
FEED_UPDATED = "2025-03-01T00:00:00-05:00"
OAI_RESPONSE_DATE = "2025-03-01T12:00:00Z"
OAI_BASE_URL = "https://oaipmh.arxiv.org/oai"
OAI_PAGE_SIZE = 10
OAI_RESUMPTION_TOKEN = "4185721|11"  # opaque to clients, like arXiv's own tokens
API_MAX_RESULTS = 100

ATOM_SCHEME = "http://arxiv.org/schemas/atom"

CATALOG_KEYS = (
    "id", "roles", "eprint_format", "title", "authors", "abstract", "categories",
    "primary_category", "submitted", "updated", "version", "doi", "journal_ref",
    "comment", "license",
)


class BuildError(Exception):
    """The sources are inconsistent; the message says what to fix."""


def paper_key(arxiv_id: str) -> str:
    """File-system key of a paper: the arXiv id with ``/`` replaced by ``_``."""
    return arxiv_id.replace("/", "_")


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def _full_name(author: dict) -> str:
    fore = author.get("forenames")
    return f"{fore} {author['keyname']}" if fore else author["keyname"]


# --------------------------------------------------------------------------- sources

def load_catalog(src: Path) -> list[dict]:
    path = src / "catalog.json"
    papers = json.loads(path.read_text(encoding="utf-8"))
    seen: set[str] = set()
    for p in papers:
        missing = [k for k in CATALOG_KEYS if k not in p]
        if missing:
            raise BuildError(f"{path}: paper {p.get('id')!r} lacks {missing}")
        if p["id"] in seen:
            raise BuildError(f"{path}: duplicate id {p['id']!r}")
        seen.add(p["id"])
        if p["eprint_format"] not in EPRINT_FORMATS:
            raise BuildError(f"{p['id']}: eprint_format must be one of {EPRINT_FORMATS}")
        if p["primary_category"] != p["categories"][0]:
            raise BuildError(f"{p['id']}: primary_category must be the first category")
    # Chronological, like an OAI-PMH harvest or a submittedDate-sorted API query.
    return sorted(papers, key=lambda p: (p["submitted"], p["id"]))


def source_files(folder: Path) -> list[tuple[str, bytes]]:
    """All regular files below ``folder`` as (posix relative path, bytes), sorted."""
    if not folder.is_dir():
        raise BuildError(f"missing source folder {folder}")
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # editor droppings, .DS_Store ...
        if path.is_symlink():
            raise BuildError(f"{path}: symlinks are not allowed in sample sources")
        if path.is_file():
            out.append((rel, path.read_bytes()))
    if not out:
        raise BuildError(f"{folder} is empty")
    return sorted(out)


# --------------------------------------------------------------------------- e-prints

def gzip_bytes(data: bytes) -> bytes:
    """gzip with a reproducible header: mtime 0, no original file name."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def tar_bytes(files: list[tuple[str, bytes]], mtime: int) -> bytes:
    """A plain ustar archive with fixed owner, mode and mtime for every member."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_eprint(paper: dict, src: Path) -> bytes:
    files = source_files(src / paper_key(paper["id"]))
    fmt = paper["eprint_format"]
    if fmt == "tar.gz":
        if len(files) < 2:
            raise BuildError(f"{paper['id']}: a tar.gz e-print needs several files")
        return gzip_bytes(tar_bytes(files, _epoch(paper["updated"])))
    if fmt == "tex.gz":
        if len(files) != 1 or not files[0][0].endswith(".tex"):
            raise BuildError(f"{paper['id']}: a tex.gz e-print is exactly one .tex file")
        return gzip_bytes(files[0][1])
    # pdf
    if len(files) != 1 or not files[0][1].startswith(b"%PDF-"):
        raise BuildError(f"{paper['id']}: a pdf e-print is exactly one PDF file")
    return files[0][1]


# --------------------------------------------------------------------------- metadata

def metadata_record(p: dict) -> dict:
    return {
        "id": p["id"],
        "title": p["title"],
        "abstract": p["abstract"],
        "authors": [_full_name(a) for a in p["authors"]],
        "categories": list(p["categories"]),
        "primary_category": p["primary_category"],
        "submitted": p["submitted"],
        "updated": p["updated"],
        "version": p["version"],
        "doi": p["doi"],
        "journal_ref": p["journal_ref"],
        "comment": p["comment"],
        "license": p["license"],
        "eprint_format": p["eprint_format"],
        "eprint": f"eprints/{paper_key(p['id'])}",
    }


def build_metadata(papers: list[dict]) -> bytes:
    lines = [json.dumps(metadata_record(p), ensure_ascii=False) for p in papers]
    return ("\n".join(lines) + "\n").encode("utf-8")


def build_specimens(papers: list[dict]) -> bytes:
    roles: dict[str, list[str]] = {}
    planted = []
    for p in papers:
        for role in p["roles"]:
            roles.setdefault(role, []).append(p["id"])
        if "planted_benchmark" in p:
            planted.append({"id": p["id"], **p["planted_benchmark"]})
    doc = {
        "roles": dict(sorted(roles.items())),
        "planted_benchmark": planted,
        "benchmark_source_doi_prefix": "10.1146/annurev-astro",
    }
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- arXiv API (Atom)

def _wrap_title(title: str) -> str:
    # arXiv keeps submitters' line breaks; long titles arrive wrapped and indented.
    return "\n  ".join(textwrap.wrap(title, 70, break_long_words=False, break_on_hyphens=False))


def _wrap_abstract(abstract: str) -> str:
    # Abstracts arrive with two leading spaces, hard-wrapped, and a final newline.
    body = textwrap.fill(abstract, 80, break_long_words=False, break_on_hyphens=False)
    return "  " + body + "\n"


def build_atom(papers: list[dict]) -> bytes:
    query = f"search_query=cat:astro-ph*&id_list=&start=0&max_results={API_MAX_RESULTS}"
    self_href = ("http://arxiv.org/api/query?search_query%3Dcat%3Aastro-ph*%26id_list%3D"
                 f"%26start%3D0%26max_results%3D{API_MAX_RESULTS}")
    digest = hashlib.sha1("\n".join(p["id"] for p in papers).encode()).digest()
    feed_id = "http://arxiv.org/api/" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" '
        'xmlns:arxiv="http://arxiv.org/schemas/atom">',
        f'  <link href={quoteattr(self_href)} rel="self" type="application/atom+xml"/>',
        f'  <title type="html">ArXiv Query: {escape(query)}</title>',
        f"  <id>{feed_id}</id>",
        f"  <updated>{FEED_UPDATED}</updated>",
        f"  <opensearch:totalResults>{len(papers)}</opensearch:totalResults>",
        "  <opensearch:startIndex>0</opensearch:startIndex>",
        f"  <opensearch:itemsPerPage>{API_MAX_RESULTS}</opensearch:itemsPerPage>",
    ]
    for p in papers:
        vid = f"{p['id']}v{p['version']}"
        out.append("  <entry>")
        out.append(f"    <id>http://arxiv.org/abs/{vid}</id>")
        out.append(f"    <updated>{p['updated']}</updated>")
        out.append(f"    <published>{p['submitted']}</published>")
        out.append(f"    <title>{escape(_wrap_title(p['title']))}</title>")
        out.append(f"    <summary>{escape(_wrap_abstract(p['abstract']))}</summary>")
        for a in p["authors"]:
            out.append("    <author>")
            out.append(f"      <name>{escape(_full_name(a))}</name>")
            out.append("    </author>")
        if p["doi"]:
            out.append(f"    <arxiv:doi>{escape(p['doi'])}</arxiv:doi>")
            out.append(f'    <link title="doi" href={quoteattr("http://dx.doi.org/" + p["doi"])} '
                       'rel="related"/>')
        if p["comment"]:
            out.append(f"    <arxiv:comment>{escape(p['comment'])}</arxiv:comment>")
        if p["journal_ref"]:
            out.append(f"    <arxiv:journal_ref>{escape(p['journal_ref'])}</arxiv:journal_ref>")
        out.append(f'    <link href="http://arxiv.org/abs/{vid}" rel="alternate" type="text/html"/>')
        out.append(f'    <link title="pdf" href="http://arxiv.org/pdf/{vid}" rel="related" '
                   'type="application/pdf"/>')
        out.append(f'    <arxiv:primary_category term={quoteattr(p["primary_category"])} '
                   f'scheme="{ATOM_SCHEME}"/>')
        for c in p["categories"]:
            out.append(f'    <category term={quoteattr(c)} scheme="{ATOM_SCHEME}"/>')
        out.append("  </entry>")
    out.append("</feed>")
    return ("\n".join(out) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- OAI-PMH

def _set_specs(categories: list[str]) -> list[str]:
    specs: list[str] = []
    for c in categories:
        archive = c.split(".")[0]
        if archive == "astro-ph" or archive in ("gr-qc", "nucl-th", "nucl-ex", "quant-ph") \
                or archive.startswith("hep-") or archive.startswith("cond-mat"):
            spec = f"physics:{archive}"
        elif archive == "physics":
            spec = "physics:physics"
        else:
            spec = archive  # cs, math, stat, ...
        if spec not in specs:
            specs.append(spec)
    return specs


def _oai_record(p: dict) -> list[str]:
    datestamp = p["updated"][:10]
    lines = [
        "<record>",
        "<header>",
        f" <identifier>oai:arXiv.org:{p['id']}</identifier>",
        f" <datestamp>{datestamp}</datestamp>",
    ]
    lines += [f" <setSpec>{s}</setSpec>" for s in _set_specs(p["categories"])]
    lines += [
        "</header>",
        "<metadata>",
        ' <arXiv xmlns="http://arxiv.org/OAI/arXiv/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://arxiv.org/OAI/arXiv/ http://arxiv.org/OAI/arXiv.xsd">',
        f" <id>{p['id']}</id>",
        f" <created>{p['submitted'][:10]}</created>",
    ]
    if p["version"] > 1:
        lines.append(f" <updated>{p['updated'][:10]}</updated>")
    lines.append(" <authors>")
    for a in p["authors"]:
        fore = f"<forenames>{escape(a['forenames'])}</forenames>" if a.get("forenames") else ""
        lines.append(f"  <author><keyname>{escape(a['keyname'])}</keyname>{fore}</author>")
    lines.append(" </authors>")
    lines.append(f" <title>{escape(_wrap_title(p['title']))}</title>")
    lines.append(f" <categories>{' '.join(p['categories'])}</categories>")
    if p["comment"]:
        lines.append(f" <comments>{escape(p['comment'])}</comments>")
    if p["journal_ref"]:
        lines.append(f" <journal-ref>{escape(p['journal_ref'])}</journal-ref>")
    if p["doi"]:
        lines.append(f" <doi>{escape(p['doi'])}</doi>")
    if p["license"]:
        lines.append(f" <license>{escape(p['license'])}</license>")
    lines.append(f" <abstract>{escape(_wrap_abstract(p['abstract']))}</abstract>")
    lines += [" </arXiv>", "</metadata>", "</record>"]
    return lines


def build_oai_pages(papers: list[dict]) -> list[bytes]:
    pages = [papers[i:i + OAI_PAGE_SIZE] for i in range(0, len(papers), OAI_PAGE_SIZE)]
    if len(pages) != 2:
        raise BuildError(f"expected the OAI-PMH sample to span 2 pages, got {len(pages)}")
    out = []
    for n, page in enumerate(pages):
        cursor = n * OAI_PAGE_SIZE
        if n == 0:
            request = (f'<request verb="ListRecords" metadataPrefix="arXiv" '
                       f'set="physics:astro-ph">{OAI_BASE_URL}</request>')
        else:
            request = (f'<request verb="ListRecords" resumptionToken='
                       f'{quoteattr(OAI_RESUMPTION_TOKEN)}>{OAI_BASE_URL}</request>')
        last = n == len(pages) - 1
        token = "" if last else escape(OAI_RESUMPTION_TOKEN)
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="http://www.openarchives.org/OAI/2.0/ '
            'http://www.openarchives.org/OAI/2.0/OAI-PMH.xsd">',
            f"<responseDate>{OAI_RESPONSE_DATE}</responseDate>",
            request,
            "<ListRecords>",
        ]
        for p in page:
            lines += _oai_record(p)
        lines.append(f'<resumptionToken cursor="{cursor}" completeListSize="{len(papers)}">'
                     f"{token}</resumptionToken>")
        lines += ["</ListRecords>", "</OAI-PMH>"]
        out.append(("\n".join(lines) + "\n").encode("utf-8"))
    return out


# --------------------------------------------------------------------------- build / check

def build(src: Path) -> dict[str, bytes]:
    """Everything the corpus folder should contain, as {relative path: bytes}."""
    papers = load_catalog(src)
    keys = {paper_key(p["id"]) for p in papers}
    extra = sorted(d.name for d in src.iterdir() if d.is_dir() and d.name not in keys)
    if extra:
        raise BuildError(f"source folders without a catalog entry: {extra}")
    files = {f"eprints/{paper_key(p['id'])}": build_eprint(p, src) for p in papers}
    files["metadata.jsonl"] = build_metadata(papers)
    files["specimens.json"] = build_specimens(papers)
    files["arxiv_api_feed.atom"] = build_atom(papers)
    page1, page2 = build_oai_pages(papers)
    files["oai_pmh_listrecords_page1.xml"] = page1
    files["oai_pmh_listrecords_page2.xml"] = page2
    return files


def existing_files(out: Path) -> dict[str, Path]:
    if not out.is_dir():
        return {}
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}


def _same_payload(a: bytes, b: bytes) -> bool:
    """True if both are gzip streams with identical decompressed content.

    A different zlib build (e.g. zlib-ng) may compress the same bytes
    differently; the e-print is still in sync if what it contains is identical.
    """
    if not (a[:2] == b[:2] == b"\x1f\x8b"):
        return False
    try:
        return gzip.decompress(a) == gzip.decompress(b)
    except (OSError, EOFError):
        return False


def check(files: dict[str, bytes], out: Path) -> list[str]:
    problems = []
    have = existing_files(out)
    for rel, data in files.items():
        if rel not in have:
            problems.append(f"missing: {rel}")
        else:
            old = have[rel].read_bytes()
            if old != data and not _same_payload(old, data):
                problems.append(f"differs: {rel}")
    for rel in have:
        if rel not in files:
            problems.append(f"not produced by the build (stale): {rel}")
    return problems


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(files: dict[str, bytes], out: Path) -> tuple[int, list[str]]:
    changed = 0
    for rel, data in files.items():
        path = out / rel
        if path.is_file() and path.read_bytes() == data:
            continue
        _write_atomic(path, data)
        changed += 1
    removed = []
    for rel, path in existing_files(out).items():
        # Only e-prints of papers that left the catalog are removed automatically.
        if rel not in files and rel.startswith("eprints/"):
            path.unlink()
            removed.append(rel)
    return changed, removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="sample sources (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus folder (default: %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if the corpus folder differs from a fresh build")
    args = ap.parse_args(argv)
    try:
        files = build(args.src)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        problems = check(files, args.out)
        if problems:
            print(f"{args.out} is out of sync with {args.src}:", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            print("run: python examples/build_sample_corpus.py", file=sys.stderr)
            return 1
        print(f"{args.out}: in sync ({len(files)} files)")
        return 0
    changed, removed = write(files, args.out)
    total = sum(len(b) for b in files.values())
    print(f"wrote {changed} of {len(files)} files ({total} bytes) to {args.out}"
          + (f"; removed {removed}" if removed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
