"""Held-out perplexity / bits per byte: the metric against plain forward passes, windows, batching, cache, text sets."""

from __future__ import annotations

import json
import math

import pytest

from eval.modeling import load_model
from eval.perplexity import (
    PerplexitySettings,
    TextSet,
    document_ids,
    evaluate_perplexity,
    iter_scores,
    load_text_set,
    windows,
)

TEXT = "The Tully-Fisher relation links a spiral galaxy's rotation velocity to its luminosity: Ω ≈ 220 km/s."
LONG = (
    "Cepheid variables pulsate with periods that scale with their luminosity, which makes them standard candles. "
    "Type Ia supernovae extend the distance ladder to redshifts where the expansion history can be measured. "
) * 3


@pytest.fixture(scope="module")
def lm(tiny_base):
    return load_model(str(tiny_base), "float32")


def _token_logprobs_full(lm, ids):
    """-ln p of ids[1:] from one plain forward pass over the whole sequence (the reference)."""
    import torch

    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return [-float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)]


def test_bits_per_byte_equals_a_hand_computed_value(lm):
    ids = document_ids(lm.tokenizer, TEXT)
    assert ids[0] == lm.tokenizer.bos_token_id and len(ids) > 10
    nll = sum(_token_logprobs_full(lm, ids))
    n_bytes = len(TEXT.encode("utf-8"))
    assert n_bytes > len(TEXT)  # the Greek letter and the apostrophe are multi-byte: bytes, not characters
    expected_bpb = nll / math.log(2) / n_bytes
    [[row]] = list(iter_scores(lm, [(0, "t", TEXT)], PerplexitySettings(window=256)))
    assert row["tokens"] == len(ids) - 1 and row["bytes"] == n_bytes
    assert row["bpb"] == pytest.approx(expected_bpb, rel=1e-5)
    assert row["nll"] == pytest.approx(nll, rel=1e-5)
    # a random-weight model is near uniform over the vocabulary: about log2(vocab) bits per token
    bits_per_token = row["nll"] / math.log(2) / row["tokens"]
    assert abs(bits_per_token - math.log2(len(lm.tokenizer))) < 1.5


def test_windows_score_every_token_once():
    for n, window, stride in [(1, 8, 4), (2, 8, 4), (8, 8, 4), (9, 8, 4), (50, 8, 3), (50, 8, 7), (50, 8, 1), (31, 16, 8)]:
        spans = windows(n, window, stride)
        scored = [p for _, end, first in spans for p in range(first, end)]
        assert scored == list(range(1, n)), (n, window, stride)
        for start, end, first in spans:
            assert end - start <= window and start < first  # every scored token has context
            if start > 0:
                assert first - start >= window - stride  # at least window - stride tokens of context


def test_sliding_window_equals_per_token_forward_passes(lm):
    """stride 1: token t is predicted from exactly the window-1 tokens before it; check each by hand."""
    import torch

    ids = document_ids(lm.tokenizer, LONG)
    window = 12
    assert len(ids) > 4 * window
    expected = 0.0
    for t in range(1, len(ids)):
        ctx = ids[max(0, t + 1 - window) : t + 1]
        with torch.no_grad():
            logits = lm.model(torch.tensor([ctx])).logits[0, -2].float()
        expected -= float(torch.log_softmax(logits, -1)[ids[t]])
    rows = [r for batch in iter_scores(lm, [(0, "long", LONG)], PerplexitySettings(window=window, stride=1, batch_size=7)) for r in batch]
    assert len(rows) == 1 and rows[0]["tokens"] == len(ids) - 1
    assert rows[0]["nll"] == pytest.approx(expected, rel=1e-5)
    # with a window longer than the text, every token sees its whole prefix: one plain forward pass
    full = sum(_token_logprobs_full(lm, ids))
    [[whole]] = list(iter_scores(lm, [(0, "long", LONG)], PerplexitySettings(window=len(ids) + 1)))
    assert whole["nll"] == pytest.approx(full, rel=1e-5)
    assert whole["nll"] != pytest.approx(rows[0]["nll"], rel=1e-6)  # less context: a different value


def test_batching_and_padding_do_not_change_values(lm):
    docs = [(i, f"d{i}", text) for i, text in enumerate([TEXT, LONG, "Short.", LONG[:150]])]
    one = {r["id"]: r for b in iter_scores(lm, docs, PerplexitySettings(window=24, stride=10, batch_size=1)) for r in b}
    many = {r["id"]: r for b in iter_scores(lm, docs, PerplexitySettings(window=24, stride=10, batch_size=5)) for r in b}
    assert set(one) == set(many) == {"d0", "d1", "d2", "d3"}
    for k in one:
        assert many[k]["tokens"] == one[k]["tokens"]
        assert many[k]["nll"] == pytest.approx(one[k]["nll"], rel=1e-4), k


def test_settings_are_checked():
    with pytest.raises(ValueError, match="stride 8 must be between 1 and the window - 1"):
        PerplexitySettings(window=8, stride=8)
    assert PerplexitySettings(window=256).effective_stride == 128


def _set(docs):
    from eval.perplexity import _content_fingerprint

    return TextSet("s", docs, _content_fingerprint(docs), "test", len(docs))


def test_report_keeps_documents_and_resumes_from_the_cache(lm, tiny_base, tmp_path):
    settings = PerplexitySettings(window=32, stride=16, batch_size=2)
    docs = [("a", TEXT), ("b", LONG), ("c", LONG[:200])]
    calls = []
    with pytest.raises(RuntimeError, match="stop"):
        def stop(k):
            calls.append(k)
            raise RuntimeError("stop")
        evaluate_perplexity(str(tiny_base), _set(docs), tmp_path / "out", settings, store_dir=tmp_path / "cache", on_batch=stop)
    stored = [json.loads(line) for line in next((tmp_path / "cache").glob("ppl-*.jsonl")).read_text().splitlines()[1:]]
    assert 0 < len(stored) < 3  # the first batch finished a document before the stop
    report = evaluate_perplexity(str(tiny_base), _set(docs), tmp_path / "out", settings, store_dir=tmp_path / "cache")
    assert report["from_cache"] == len(stored) and report["scored_now"] == 3 - len(stored)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [d["id"] for d in saved["documents"]] == ["a", "b", "c"]
    total_bits = sum(d["nll"] for d in saved["documents"]) / math.log(2)
    assert saved["bits_per_byte"] == pytest.approx(total_bits / sum(len(t.encode()) for _, t in docs))
    assert saved["perplexity"] == pytest.approx(math.exp(sum(d["nll"] for d in saved["documents"]) / saved["tokens"]))
    fresh = {r["id"]: r for b in iter_scores(lm, [(i, d, t) for i, (d, t) in enumerate(docs)], settings) for r in b}
    for d in saved["documents"]:
        assert d["nll"] == pytest.approx(fresh[d["id"]]["nll"], rel=1e-5)
    again = evaluate_perplexity(str(tiny_base), _set(docs), tmp_path / "out", settings, store_dir=tmp_path / "cache")
    assert again["scored_now"] == 0 and again["bits_per_byte"] == saved["bits_per_byte"]
    changed = evaluate_perplexity(str(tiny_base), _set(docs), tmp_path / "out", PerplexitySettings(window=32, stride=8),
                                  store_dir=tmp_path / "cache")
    assert changed["scored_now"] == 3  # another stride is another cache entry
    assert (tmp_path / "out" / "report.md").read_text().count("| b |") == 1


def test_local_text_sets_jsonl_parquet_and_clear_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "x1", "body": "Galaxies."}, {"id": "x2", "body": "  "}, {"id": "x3", "body": "Quasars shine."}]
    (tmp_path / "set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = load_text_set("gen", str(tmp_path / "set.jsonl"), text_field="body")
    assert s.docs == [("x1", "Galaxies."), ("x3", "Quasars shine.")] and s.n_total == 2  # blank text skipped
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([{"text": "A star."}, {"text": "A planet."}]), folder / "part-0.parquet")
    p = load_text_set("pq", str(folder), limit=1)
    assert p.docs == [("0", "A star.")] and p.n_total == 2
    assert load_text_set("pq", str(folder)).fingerprint == p.fingerprint  # limit does not change the content key
    with pytest.raises(ValueError, match=r"eval.perplexity_sets\[gen\].*no text field 'text' \(fields: id, body\)"):
        load_text_set("gen", str(tmp_path / "set.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"eval.perplexity_sets\[gone\].*no such file"):
        load_text_set("gone", str(tmp_path / "missing.jsonl"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"expected .jsonl/.json/.parquet files.*\.txt"):
        load_text_set("txt", str(tmp_path / "notes.txt"))
