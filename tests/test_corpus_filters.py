"""Paper-tuned filters, MinHash near-dup, exact dedup, n-gram decontamination."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash

from corpus_tools.decontam import BenchmarkFormatError, NgramIndex, load_benchmark_texts, source_match
from corpus_tools.dedup import MinHasher, as_minhash, dedup, exact_key, shingle_hashes
from corpus_tools.filters import FilterConfig, check, non_text_ratio, prose_of, stopword_ratio

PROSE = ("We measure the molecular-gas depletion time in radial annuli of nearby disc galaxies, and we find that it "
         "is nearly constant with radius except in the centres of barred galaxies where it drops by a factor of two. ")
MATH = "$\\Sigma_{\\rm SFR} = 5.4\\times10^{-42}\\,\\frac{L({\\rm H}\\alpha)}{A_{\\rm ann}}$ "


def test_math_heavy_paper_passes_but_would_fail_generic_rules():
    text = "".join(f"{PROSE}(part {i})\n\\begin{{equation}}\n{MATH * 30}\n\\end{{equation}}\n" for i in range(8))
    reason, stats = check(text, FilterConfig(min_chars=500))
    assert reason is None, stats
    assert check(text, FilterConfig(min_chars=500, max_non_text_ratio=0.01))[0] is None
    assert "frac" not in prose_of(text)
    # the same statistic on the raw text (what a generic web filter sees) punishes the math
    assert non_text_ratio(text) > 0.05 > non_text_ratio(prose_of(text))


def test_each_rule_rejects_with_its_reason():
    cfg = FilterConfig(min_chars=200, max_chars=5_000)
    assert check("short", cfg)[0] == "too_short"
    assert check(PROSE * 40, cfg)[0] == "too_long"
    german = "Wir messen die Verarmungszeit des molekularen Gases in radialen Ringen naher Scheibengalaxien. " * 6
    assert check(german, cfg)[0] == "language"
    assert check(german, FilterConfig(min_chars=200, languages=()))[0] is None  # language filter off
    assert check(PROSE + "\ufffd" * 20 + PROSE, cfg)[0] == "bad_encoding"
    garbage = PROSE + " ".join(["\\foo{@@^^##}"] * 60)
    assert check(garbage, FilterConfig(min_chars=200, max_non_text_ratio=0.2))[0] == "non_text"
    repeated = "\n".join([PROSE] * 6)
    assert check(repeated, cfg)[0] == "repeated_lines"


def test_stopword_ratio_of_english_science():
    assert 0.25 < stopword_ratio(PROSE) < 0.6


def test_minhash_estimates_jaccard_like_datasketch():
    words = [f"w{i}" for i in range(400)]
    a = " ".join(words)
    b = " ".join(words[:300] + [f"x{i}" for i in range(100)])
    mh = MinHasher(num_perm=256, shingle_size=5)
    est = as_minhash(mh.signature(a), mh.seed).jaccard(as_minhash(mh.signature(b), mh.seed))
    sh = lambda t: {" ".join(t.split()[i : i + 5]) for i in range(len(t.split()) - 4)}  # noqa: E731
    true = len(sh(a) & sh(b)) / len(sh(a) | sh(b))
    m1, m2 = MinHash(num_perm=256), MinHash(num_perm=256)
    m1.update_batch([s.encode() for s in sh(a)])
    m2.update_batch([s.encode() for s in sh(b)])
    assert abs(est - true) < 0.1 and abs(m1.jaccard(m2) - true) < 0.1
    assert np.array_equal(mh.signature(a), MinHasher(num_perm=256, shingle_size=5).signature(a))  # deterministic


@pytest.mark.parametrize("seed", [1, 7])
def test_signatures_are_datasketch_affine32_minhashes_of_the_same_shingles(seed):
    """The label ``scheme="affine32"`` is true: datasketch's own MinHash fed the same shingle hashes agrees bit for bit."""
    text = " ".join(f"w{i % 997}" for i in range(5000)) + " Ångström dust (SED) fits, 2.5 kpc."
    shingles = shingle_hashes(text, 5)
    assert len(shingles) > 2 * 2048  # several blocks of the vectorised loop
    ref = MinHash(num_perm=112, seed=seed, hashfunc=int)  # scheme affine32 is datasketch's default
    ref.update_batch(shingles.tolist())
    ours = MinHasher(num_perm=112, shingle_size=5, seed=seed)
    sig = ours.signature(text)
    assert sig.dtype == np.uint32 and np.array_equal(sig, ref.hashvalues)
    assert as_minhash(sig, seed) == LeanMinHash(ref) and as_minhash(sig, seed).jaccard(ref) == 1.0
    empty = MinHash(num_perm=112, seed=seed)
    assert np.array_equal(ours.signature(""), empty.hashvalues)


def test_dedup_keeps_first_of_exact_and_near_clusters():
    base = " ".join(f"word{i}" for i in range(300))
    near = base.replace("word150", "changed").replace("word10 ", "changed ")
    other = " ".join(f"other{i}" for i in range(300))
    mh = MinHasher()
    items = [("a", exact_key(base), mh.signature(base)), ("b", exact_key(base.upper() + " ."), mh.signature(base)),
             ("c", exact_key(near), mh.signature(near)), ("d", exact_key(other), mh.signature(other))]
    out = {i: (r, o) for i, r, o in dedup(items, exact=True, near=True, num_perm=112, threshold=0.8)}
    assert out == {"a": (None, None), "b": ("exact_duplicate", "a"), "c": ("near_duplicate", "a"), "d": (None, None)}
    out = {i: r for i, r, _ in dedup(items, exact=False, near=False, num_perm=112, threshold=0.8)}
    assert set(out.values()) == {None}


def test_ngram_decontamination_on_question_plus_options(tmp_path):
    items = [{"question": "How can integral field spectroscopy be used to distinguish between excitation sources in galaxies?",
              "A": "By combining spatial information, velocity maps and emission-line ratios.", "B": "b", "C": "c", "D": "d"}]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(items))
    index = NgramIndex.from_texts(load_benchmark_texts(path), 13)
    copied = "In this paper we ask: how can integral field spectroscopy be used to distinguish between excitation sources in galaxies? We answer."
    paraphrase = "Integral field spectroscopy can separate excitation sources in galaxies by combining maps."
    assert index.overlap(copied) > 0 and index.overlap(paraphrase) == 0
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text("\n".join(json.dumps(i) for i in items))
    assert load_benchmark_texts(jsonl) == load_benchmark_texts(path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    with pytest.raises(BenchmarkFormatError):
        load_benchmark_texts(bad)


def test_source_match_by_doi_prefix_and_journal_ref():
    prefixes, refs = ["10.1146/annurev-astro"], ["Annu. Rev. Astron. Astrophys", "ARA&A"]
    assert source_match({"doi": "10.1146/annurev-astro-000123-000456"}, prefixes, refs)
    assert source_match({"journal_ref": "ARA&A 62 (2024) 1-38"}, prefixes, refs)
    assert source_match({"doi": "10.1051/0004-6361/201299999", "journal_ref": "A&A 543, L7 (2012)"}, prefixes, refs) is None


def test_real_astromlab1_file_loads(astromlab1_public):
    texts = load_benchmark_texts(astromlab1_public)
    assert len(texts) == 3846 and all(texts)


def test_decontamination_and_eval_read_the_same_questions(tmp_path, astromlab1_public):
    from eval.data import BenchmarkError, load_benchmark

    assert len(load_benchmark_texts(astromlab1_public)) == len(load_benchmark(astromlab1_public))
    # one JSON rule for both readers: an object holding two lists is ambiguous for eval and for decontamination
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"dev": [{"question": "q1"}], "test": [{"question": "q2"}]}))
    with pytest.raises(BenchmarkError):
        load_benchmark(two)
    with pytest.raises(BenchmarkFormatError, match="expected a JSON list of questions"):
        load_benchmark_texts(two)
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes('{"question": "Caf\u00e9 au lait?"}\n'.encode("latin-1"))
    with pytest.raises(BenchmarkFormatError, match="latin1.jsonl"):
        load_benchmark_texts(latin)
