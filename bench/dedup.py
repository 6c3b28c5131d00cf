"""Near-duplicate detection: signature speed and Jaccard accuracy of corpus_tools' MinHasher.

    python bench/dedup.py              # 8 MB of synthetic text, 400 document pairs (default)
    python bench/dedup.py --mb 2 --pairs 100

Inputs are synthetic papers made of the words of the bundled LaTeX sources (examples/sample_src)
in random spans, ~6-12 k words each. Everything runs in one process (= one core).

* speed: ``MinHasher.signature`` (shingling included) vs datasketch ``MinHash.update_batch`` over
  the same 5-word shingles (112 permutations), best of ``--rounds`` alternated rounds, MB of
  text per second;
* accuracy: pairs of documents with a known share of words replaced; the exact Jaccard
  similarity of their shingle sets against the estimate (share of equal signature slots): mean
  absolute error, bias and the ratio to the MinHash standard error sqrt(J(1-J)/num_perm);
* decisions: ``corpus_tools.dedup.dedup`` at threshold 0.8 on each pair: share of pairs with exact
  J >= 0.85 found (recall) and share with J <= 0.75 wrongly called duplicates.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corpus_tools.dedup import MinHasher, dedup  # noqa: E402
from corpus_tools.hashing import ngram_hashes, word_hashes, words  # noqa: E402

NUM_PERM, SHINGLE, THRESHOLD = 112, 5, 0.8


def vocabulary() -> list[str]:
    """Words of the bundled LaTeX sources, in order (a realistic word-length distribution)."""
    text = " ".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted((ROOT / "examples" / "sample_src").rglob("*.tex")))
    return re.findall(r"[A-Za-z][A-Za-z0-9]*", text)


def synth_doc(vocab: list[str], rng: random.Random) -> list[str]:
    """A document of random 20-200-word spans of the vocabulary stream."""
    out: list[str] = []
    target = rng.randint(6_000, 12_000)
    while len(out) < target:
        start = rng.randrange(len(vocab) - 200)
        out += vocab[start : start + rng.randint(20, 200)]
    return out


def mutate(doc: list[str], share: float, vocab: list[str], rng: random.Random) -> list[str]:
    """``doc`` with ``share`` of its words replaced by random words."""
    out = doc[:]
    for i in rng.sample(range(len(out)), int(share * len(out))):
        out[i] = rng.choice(vocab) + "x"
    return out


def exact_jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' shingle-hash sets (64-bit hashes: no collisions in practice)."""
    sa = np.unique(ngram_hashes(word_hashes(words(a)), SHINGLE))
    sb = np.unique(ngram_hashes(word_hashes(words(b)), SHINGLE))
    inter = len(np.intersect1d(sa, sb, assume_unique=True))
    return inter / (len(sa) + len(sb) - inter)


def shingles(text: str) -> list[bytes]:
    w = words(text)
    return [b" ".join(w[i : i + SHINGLE]) for i in range(max(1, len(w) - SHINGLE + 1))]


def speed(texts: list[str], rounds: int) -> tuple[float, float]:
    """(ours, datasketch update_batch) in MB of text per second, best of alternated rounds."""
    from datasketch import MinHash

    hasher = MinHasher(NUM_PERM, SHINGLE, 1)
    size = sum(len(t.encode()) for t in texts) / 1e6

    def ds(text: str) -> None:
        MinHash(num_perm=NUM_PERM, seed=1).update_batch(shingles(text))

    best_ours = best_ds = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for t in texts:
            hasher.signature(t)
        best_ours = min(best_ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for t in texts:
            ds(t)
        best_ds = min(best_ds, time.perf_counter() - t0)
    return size / best_ours, size / best_ds


def accuracy(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Estimate-vs-exact Jaccard statistics and dedup decisions over the pairs."""
    hasher = MinHasher(NUM_PERM, SHINGLE, 1)
    errors, ratios, found, missed, false_pos, negatives = [], [], 0, 0, 0, 0
    for a, b in pairs:
        true = exact_jaccard(a, b)
        sa, sb = hasher.signature(a), hasher.signature(b)
        est = float(np.mean(sa == sb))
        errors.append(est - true)
        sd = (true * (1 - true) / NUM_PERM) ** 0.5
        if sd > 0:
            ratios.append(abs(est - true) / sd)
        dup = any(r == "near_duplicate" for _, r, _ in dedup([("a", "ka", sa), ("b", "kb", sb)], False, True, NUM_PERM, THRESHOLD, 1))
        if true >= 0.85:
            found += dup
            missed += not dup
        elif true <= 0.75:
            negatives += 1
            false_pos += dup
    err = np.asarray(errors)
    return {"mae": float(np.mean(np.abs(err))), "bias": float(np.mean(err)), "mae_over_se": float(np.mean(ratios)),
            "recall": found / max(1, found + missed), "false_positive": false_pos / max(1, negatives),
            "n_pos": found + missed, "n_neg": negatives}


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=8.0, help="MB of synthetic text for the speed rounds (default 8)")
    ap.add_argument("--pairs", type=int, default=400, help="document pairs for the accuracy part (default 400)")
    ap.add_argument("--rounds", type=int, default=3, help="alternated speed rounds; the best counts (default 3)")
    args = ap.parse_args(argv)
    rng = random.Random(0)
    vocab = vocabulary()
    texts: list[str] = []
    while sum(map(len, texts)) < args.mb * 1e6:
        texts.append(" ".join(synth_doc(vocab, rng)))
    ours, ds = speed(texts, args.rounds)
    pairs = []
    for i in range(args.pairs):
        doc = synth_doc(vocab, rng)
        share = [0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2][i % 7]
        pairs.append((" ".join(doc), " ".join(mutate(doc, share, vocab, rng))))
    acc = accuracy(pairs)
    print(f"speed ({len(texts)} docs, {sum(map(len, texts)) / 1e6:.1f} MB, {NUM_PERM} perms, {SHINGLE}-word shingles, MB/s/core)")
    print(f"  corpus_tools MinHasher   {ours:8.2f}")
    print(f"  datasketch update_batch  {ds:8.2f}")
    print(f"  ratio                    {ours / ds:8.2f}x")
    print(f"accuracy ({len(pairs)} pairs, exact Jaccard of shingle sets vs estimate)")
    print(f"  mean abs error           {acc['mae']:.4f}  ({acc['mae_over_se']:.2f} x the MinHash standard error)")
    print(f"  bias                     {acc['bias']:+.4f}")
    print(f"  recall at J >= 0.85      {acc['recall']:.3f}  ({acc['n_pos']} pairs)")
    print(f"  false dup at J <= 0.75   {acc['false_positive']:.3f}  ({acc['n_neg']} pairs)")
    return {"ours_mb_s": ours, "datasketch_mb_s": ds, **acc}


if __name__ == "__main__":
    main()
