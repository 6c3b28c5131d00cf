"""Corpus throughput: LaTeX->text and near-dup signatures, per core, against named baselines.

    python bench/corpus.py            # 50 MB of synthetic LaTeX (default)
    python bench/corpus.py --mb 10    # smaller

Inputs are generated from the bundled sample papers (examples/sample_src): each synthetic paper is
a sample paper with its paragraphs reordered, numbers changed and sections repeated to a
realistic size (~40-80 kB of source). Everything runs in one process (= one core).

* LaTeX->text: corpus_tools (assemble: comments, macros, includes; render: text with math kept)
  vs pylatexenc ``LatexNodes2Text().latex_to_text`` on the same documents. pylatexenc is slow, so
  it runs on the first ``--baseline-mb`` MB; both rates are MB of LaTeX source per second.
* Near-dup signatures (112 permutations, 5-word shingles) on the rendered text: corpus_tools'
  numpy MinHasher vs datasketch ``MinHash.update_batch`` and ``MinHash.bulk`` over the same
  shingles (shingling time included for both).

Prints MB/s per core, the ratios, and an extrapolation to the full astro-ph corpus (~250k
papers, ~20 GB of text) on one 64-core node. Needs ``pip install pylatexenc`` for the baseline.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corpus_tools.dedup import MinHasher  # noqa: E402
from corpus_tools.latex import assemble  # noqa: E402
from corpus_tools.render import render  # noqa: E402

CORPUS_GB = 20.0
PAPERS = 250_000
CORES = 64


def sample_sources() -> list[str]:
    """Main .tex of each sample paper with its \\input files inlined as-is (plain text, one file)."""
    out = []
    for folder in sorted((ROOT / "examples" / "sample_src").iterdir()):
        if not folder.is_dir():
            continue
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.tex")}
        for name, data in files.items():
            text = data.decode("utf-8", "replace")
            if "\\documentclass" in text and "letter}" not in text:
                for inc, body in files.items():
                    stem = inc[:-4]
                    text = text.replace(f"\\input{{{stem}}}", body.decode("utf-8", "replace"))
                    text = text.replace(f"\\include{{{stem}}}", body.decode("utf-8", "replace"))
                out.append(text)
    return out


def synth_paper(src: str, rng: random.Random, target: int) -> str:
    """A variant of ``src`` grown to about ``target`` characters."""
    head, sep, tail = src.partition("\\begin{document}")
    body, _, end = tail.rpartition("\\end{document}")
    paras = [p for p in re.split(r"\n\s*\n", body) if p.strip()]
    grown: list[str] = []
    while sum(map(len, grown)) < target:
        block = paras[:]
        rng.shuffle(block)
        grown += [re.sub(r"\d+(\.\d+)?", lambda m: str(round(rng.uniform(0, 500), rng.randint(0, 2))), p) for p in block]
    return head + sep + "\n\n".join(grown) + "\n\\end{document}\n"


def generate(mb: float, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    sources = sample_sources()
    docs, total = [], 0
    while total < mb * 1e6:
        doc = synth_paper(rng.choice(sources), rng, rng.randint(40_000, 80_000))
        docs.append(doc)
        total += len(doc.encode())
    return docs


def mb(docs: list[str]) -> float:
    return sum(len(d.encode()) for d in docs) / 1e6


def timed(fn, items) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = [fn(x) for x in items]
    return time.perf_counter() - t0, out


def ours_latex(src: str) -> str:
    latex, _ = assemble({"main.tex": src.encode()})
    return render(latex).text


def shingles(text: str, k: int = 5) -> list[bytes]:
    w = text.split()
    return [" ".join(w[i : i + k]).encode() for i in range(max(1, len(w) - k + 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="MB of synthetic LaTeX to process (default 50)")
    ap.add_argument("--baseline-mb", type=float, default=5.0, help="MB on which the (slow) baselines run (default 5)")
    args = ap.parse_args()

    docs = generate(args.mb)
    base_docs = docs[: max(1, next((i for i in range(1, len(docs) + 1) if mb(docs[:i]) >= args.baseline_mb), len(docs)))]
    size, base_size = mb(docs), mb(base_docs)
    print(f"inputs: {len(docs)} synthetic papers, {size:.1f} MB of LaTeX (baselines on {len(base_docs)} papers, {base_size:.1f} MB)")

    # ---- LaTeX -> text
    t_ours, texts = timed(ours_latex, docs)
    ours_rate = size / t_ours
    try:
        from pylatexenc.latex2text import LatexNodes2Text

        conv = LatexNodes2Text()
        t_base, _ = timed(conv.latex_to_text, base_docs)
        base_rate = base_size / t_base
        ratio = f"{ours_rate / base_rate:.1f}x"
    except ImportError:
        base_rate, ratio = float("nan"), "n/a (pip install pylatexenc)"
    print("\nLaTeX -> text (MB of source / s / core)")
    print(f"  corpus_tools              {ours_rate:8.2f} MB/s   (target >= 2)")
    print(f"  pylatexenc LatexNodes2Text {base_rate:7.2f} MB/s")
    print(f"  ratio                     {ratio}")

    # ---- near-dup signatures
    from datasketch import MinHash

    text_mb = mb(texts)
    base_texts = texts[: len(base_docs)]
    base_text_mb = mb(base_texts)
    hasher = MinHasher(num_perm=112, shingle_size=5)
    t_sig, _ = timed(hasher.signature, texts)
    sig_rate = text_mb / t_sig

    def ds_update(text: str):
        m = MinHash(num_perm=112)
        m.update_batch(shingles(text))
        return m

    t_ds, _ = timed(ds_update, base_texts)
    t0 = time.perf_counter()
    MinHash.bulk([shingles(t) for t in base_texts], num_perm=112)
    t_bulk = time.perf_counter() - t0
    ds_rate = base_text_mb / t_ds
    bulk_rate = base_text_mb / t_bulk
    best = max(ds_rate, bulk_rate)
    print("\nnear-dup signatures, 112 perms, 5-word shingles (MB of text / s / core)")
    print(f"  corpus_tools MinHasher    {sig_rate:8.2f} MB/s")
    print(f"  datasketch update_batch   {ds_rate:8.2f} MB/s")
    print(f"  datasketch MinHash.bulk   {bulk_rate:8.2f} MB/s")
    print(f"  ratio vs best datasketch  {sig_rate / best:.2f}x   (target >= 1.0)")

    # ---- extrapolation
    src_per_text = size / text_mb  # LaTeX source is larger than the text it yields
    src_gb = CORPUS_GB * src_per_text
    h_latex = src_gb * 1e3 / (ours_rate * CORES) / 3600
    h_sig = CORPUS_GB * 1e3 / (sig_rate * CORES) / 3600
    print(f"\nextrapolation: full astro-ph (~{PAPERS:,} papers, ~{CORPUS_GB:.0f} GB text ~ {src_gb:.0f} GB LaTeX at this sample's "
          f"source/text ratio {src_per_text:.2f}) on one {CORES}-core node:")
    print(f"  LaTeX -> text   {h_latex * 60:7.1f} min")
    print(f"  signatures      {h_sig * 60:7.1f} min")
    print(f"  total CPU steps {(h_latex + h_sig) * 60:7.1f} min (excludes download: arXiv's 1 request / 3 s makes "
          f"{PAPERS:,} e-prints ~{PAPERS * 3 / 86400:.1f} days over HTTP; use the S3 bulk tars)")


if __name__ == "__main__":
    main()
