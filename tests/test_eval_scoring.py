"""Scorers on the tiny model: letter token handling, batching, choices, generate, resumable runs."""

from __future__ import annotations

import json

import pytest

from eval.api import evaluate_checkpoint
from eval.choices import iter_choices
from eval.data import load_benchmark
from eval.evaluator import EvalSettings, evaluate
from eval.generate import BackendNotAvailable, extract_answer, iter_generate, strip_thinking
from eval.modeling import load_model
from eval.prompts import choices_prompt, generate_prompt, letter_prompt
from eval.report import read_submission
from eval.packing import Costs, first_fit, packs, plan
from eval.prefix import SharedPrefix, common_prefix
from eval.scoring import ScoringError, encode_pairs, iter_letter, letter_requests
from eval.store import ScoreStore
from test_eval_support import letter_sensitive_model, make_rows, read_jsonl, write_json


@pytest.fixture(scope="module")
def lm(tiny_instruct, tmp_path_factory):
    return load_model(str(letter_sensitive_model(tiny_instruct, tmp_path_factory.mktemp("sensitive") / "model")))


@pytest.fixture
def bench(tmp_path):
    return write_json(tmp_path / "bench.json", make_rows(16))


def _char_tokenizer():
    """A byte-level tokenizer without merges: " A" is two tokens, "Ġ" + "A" (like SentencePiece's "▁A")."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok), vocab


def test_letter_tokens_single_and_split(lm, bench):
    questions = load_benchmark(bench)
    # the tiny tokenizer has " A" as one token ("ĠA"): the prompt is scored as is
    req = letter_requests(lm.tokenizer, questions[:1])[0]
    prompt_ids = lm.tokenizer(letter_prompt(questions[0]))["input_ids"]
    assert req.input_ids == prompt_ids
    assert lm.tokenizer.convert_ids_to_tokens(req.targets) == ["ĠA", "ĠB", "ĠC", "ĠD"]
    # a tokenizer that splits " A" into "Ġ" + "A": the shared "Ġ" joins the prompt, targets are the bare letters
    tok, vocab = _char_tokenizer()
    req = letter_requests(tok, questions[:1])[0]
    assert req.input_ids[-1] == vocab["Ġ"]
    assert req.targets == [vocab[x] for x in "ABCD"]
    assert req.input_ids[:-1] == tok(letter_prompt(questions[0]))["input_ids"]


def test_letter_needs_single_token_letters(lm, bench, monkeypatch):
    import eval.scoring as scoring

    questions = load_benchmark(bench)[:1]
    monkeypatch.setattr(scoring, "LETTERS", ("A1", "B", "C", "D"))
    with pytest.raises(ScoringError, match="question 0: the answer letters are not single distinct tokens.*--method choices"):
        letter_requests(lm.tokenizer, questions)


def test_batched_scores_equal_unbatched_and_are_deterministic(lm, bench):
    questions = load_benchmark(bench)

    def scores(method, batch_size):
        it = iter_letter if method == "letter" else iter_choices
        return {r["index"]: r for rows in it(lm, questions, batch_size) for r in rows}

    for method in ("letter", "choices"):
        one, many = scores(method, 1), scores(method, 8)
        assert sorted(one) == list(range(16))
        for i in one:
            assert one[i]["scores"] == pytest.approx(many[i]["scores"], abs=1e-4), (method, i)
        assert scores(method, 8) == many  # same batches, bit-identical
    preds = {"ABCD"[max(range(4), key=lambda k: r["scores"][k])] for r in scores("letter", 8).values()}
    assert len(preds) >= 2, "the letter-sensitive tiny model should not give one letter to everything"


def test_common_prefix_leaves_a_token_to_score():
    assert common_prefix([[1, 2, 3, 9], [1, 2, 3, 4, 5], [1, 2, 7]]) == 2
    assert common_prefix([[1, 2], [1, 2, 3]]) == 1  # the shorter prompt keeps its last token
    assert common_prefix([[5, 6, 7]]) == 2
    assert common_prefix([[1, 2], [3, 4]]) == 0
    assert common_prefix([]) == 0


@pytest.fixture
def prefixes_built(monkeypatch):
    """The length of every SharedPrefix built while the test runs."""
    built = []
    original = SharedPrefix.__init__

    def spy(self, lm_, ids):
        built.append(len(ids))
        original(self, lm_, ids)

    monkeypatch.setattr(SharedPrefix, "__init__", spy)
    return built


def test_letter_shared_prefix_reuse_gives_identical_predictions(lm, bench, prefixes_built):
    """The instruction prefix run once and reused: same argmax as full forwards, same scores up to rounding."""
    questions = load_benchmark(bench)
    reqs = letter_requests(lm.tokenizer, questions)
    shared = common_prefix([r.input_ids for r in reqs])
    assert shared >= SharedPrefix.MIN_TOKENS, "the tiny prompts share the preamble: the reuse path must be taken"
    built = prefixes_built

    def scores(batch_size, reuse, packed=True):
        return {r["index"]: r["scores"] for rows in iter_letter(lm, questions, batch_size, reuse, packed) for r in rows}

    full = scores(8, False, packed=False)  # lm-eval's layout: every prompt in full, one padded row each
    assert built == []
    for batch_size in (1, 3, 16):
        reused = scores(batch_size, True)
        assert built[-1] == shared
        assert sorted(reused) == sorted(full)
        for i in full:
            assert reused[i] == pytest.approx(full[i], abs=1e-4), (batch_size, i)
            assert max(range(4), key=lambda k: reused[i][k]) == max(range(4), key=lambda k: full[i][k]), (batch_size, i)
    # one question: nothing to share, the plain forward, same scores
    n_built = len(built)
    assert next(iter_letter(lm, questions[:1], 4))[0]["scores"] == pytest.approx(full[0], abs=1e-4)
    assert len(built) == n_built


def _choices(lm, questions, batch_size, **kwargs):
    return {r["index"]: r for rows in iter_choices(lm, questions, batch_size, **kwargs) for r in rows}


def _letter(lm, questions, batch_size, **kwargs):
    return {r["index"]: r for rows in iter_letter(lm, questions, batch_size, **kwargs) for r in rows}


@pytest.fixture
def forward_rows(lm):
    """The number of rows of every forward of ``lm.model`` while the test runs."""
    rows = []
    handle = lm.model.register_forward_pre_hook(lambda _m, _a, kw: rows.append(kw["input_ids"].shape[0]), with_kwargs=True)
    yield rows
    handle.remove()


def _assert_same(packed, plain, tol=1e-4):
    """Same scores (float tolerance), same predictions (raw and, for `choices`, length-normalised)."""
    assert sorted(packed) == sorted(plain)
    for i in plain:
        assert packed[i]["scores"] == pytest.approx(plain[i]["scores"], abs=tol, rel=1e-5), i
        assert argmax4(packed[i]["scores"]) == argmax4(plain[i]["scores"]), i
        assert packed[i].get("prediction_norm") == plain[i].get("prediction_norm"), i


def argmax4(values):
    return max(range(4), key=lambda k: (values[k], -k))


def test_choices_one_context_forward_equals_per_option_forwards(lm, bench, prefixes_built, forward_rows):
    """One piece per question (context once, four continuations masked apart, prefix KV reused) = four full forwards."""
    questions = load_benchmark(bench)
    assert packs(lm)
    plain = _choices(lm, questions, 4, packed=False)
    assert forward_rows == [16] * 4 and prefixes_built == []  # the reference: 4 padded rows per question, no prefix
    contexts = [ctx for ctx, _ in encode_pairs(lm.tokenizer, [(choices_prompt(q), []) for q in questions])]
    for batch_size in (1, 3, 16):
        forward_rows.clear()
        _assert_same(_choices(lm, questions, batch_size), plain)
        assert prefixes_built[-1] == common_prefix(contexts) >= SharedPrefix.MIN_TOKENS
        # the prefix forward (1 row), then one forward per batch with at most one row per question: never four
        batches = [min(batch_size, len(questions) - i) for i in range(0, len(questions), batch_size)]
        assert forward_rows[0] == 1 and len(forward_rows) == 1 + len(batches)
        assert all(rows <= n for rows, n in zip(forward_rows[1:], batches))
    forward_rows.clear()
    _assert_same(_choices(lm, questions, 5, reuse_prefix=False), plain)
    assert len(forward_rows) == 4 and len(prefixes_built) == 3
    assert len({argmax4(r["scores"]) for r in plain.values()}) >= 2, "predictions should vary, or agreement proves little"


@pytest.fixture
def mixed(tmp_path):
    """Questions of very different lengths: short prompts fit several to a packed row."""
    rows = make_rows(12)
    for i, row in enumerate(rows):
        row["question"] += " Recall the observations of the last decade and what they imply." * (3 * (i % 4 == 0))
        row["A"] += " and the related effects" * (i % 3)
    return load_benchmark(write_json(tmp_path / "mixed.json", rows))


def test_packed_rows_hold_several_questions_and_score_each_as_alone(lm, mixed, forward_rows):
    for score in (_letter, _choices):
        plain = score(lm, mixed, 12, packed=False, reuse_prefix=False)
        forward_rows.clear()
        _assert_same(score(lm, mixed, 12), plain)
        assert forward_rows[0] == 1 and forward_rows[1] < len(mixed), (score.__name__, forward_rows)  # prefix, packed rows
        _assert_same(score(lm, mixed, 5), plain)


def test_first_fit_packs_longest_first_within_the_width():
    assert first_fit([5, 2, 9, 3, 4], 9) == [[2], [0, 4], [3, 1]]
    assert first_fit([3, 3, 3], 9) == [[0, 1, 2]]
    assert first_fit([], 4) == []


def test_plan_widens_rows_only_where_attention_is_cheap():
    lengths, scored = [100, 60, 50, 40, 30], [1] * 5

    def padding(p):
        return len(p.rows) * p.width - sum(lengths)

    # attention-heavy (the tiny model): wider rows would attend over many masked keys, so rows stay as wide as the longest
    narrow = plan(lengths, scored, 10, Costs(token=1e5, pair=1e4, head=1e3))
    assert narrow.width == 100 and narrow.rows == first_fit(lengths, 100) == [[0], [1, 3], [2, 4]]
    assert narrow.keep == 2 and padding(narrow) == 20
    # matmul-heavy (a wide model): one row holds every piece, no padding
    wide = plan(lengths, scored, 10, Costs(token=2e9, pair=1e4, head=5e8))
    assert wide.rows == [[0, 1, 2, 3, 4]] and wide.width == 280 and padding(wide) == 0 and wide.keep == 5


def test_packed_scoring_on_eager_attention(tiny_instruct, mixed):
    lm = load_model(str(tiny_instruct), attn_implementation="eager")
    assert packs(lm)
    for score in (_letter, _choices):
        _assert_same(score(lm, mixed, 6), score(lm, mixed, 6, packed=False, reuse_prefix=False))


def test_plain_rows_where_the_kernel_takes_no_mask():
    from types import SimpleNamespace

    fake = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2")))
    assert not packs(fake)


def _merging_tokenizer():
    """Byte-level BPE over the whole string (no pre-split) with the merge ":" + "Ġ": the context "...Answer:"
    and the continuation " option" tokenize differently alone and together (lm-eval's encode_pair case)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merges = [(":", "Ġ"), ("Ġ", "d"), ("e", "s"), ("Ġ", "t"), ("Ġt", "h")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<pad>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def test_choices_exact_where_the_context_boundary_merges(bench):
    """encode_pairs is lm-eval's own _encode_pair, and the shared-context rows score ctx_ids + cont_ids as it does."""
    import torch
    from types import SimpleNamespace

    from lm_eval.api.model import TemplateLM
    from transformers import LlamaConfig, LlamaForCausalLM

    from eval.modeling import LoadedModel

    tok = _merging_tokenizer()
    questions = load_benchmark(bench)
    items = [(choices_prompt(q), [" " + o for o in q.options]) for q in questions]
    ours = encode_pairs(tok, items)
    lm_eval_self = SimpleNamespace(backend="causal", tok_encode=lambda s: tok(s)["input_ids"])
    merged = 0
    for (context, options), (ctx, conts) in zip(items, ours):
        for option, cont in zip(options, conts):
            assert (ctx, cont) == tuple(TemplateLM._encode_pair(lm_eval_self, context, option))
            whole = tok(context + option)["input_ids"]
            merged += whole[: len(ctx)] != ctx
    assert merged == 4 * len(questions), "every pair should merge across the boundary, or this test proves little"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg).eval()
    lm = LoadedModel(model=model, tokenizer=tok, device=torch.device("cpu"), path="merging")
    plain = _choices(lm, questions, 4, packed=False)
    _assert_same(_choices(lm, questions, 4), plain)
    _assert_same(_choices(lm, questions, 16, reuse_prefix=False), plain)


def test_choices_rows_have_both_normalisations(lm, bench, tmp_path):
    report = evaluate_checkpoint(lm.path, str(bench), tmp_path / "out", method="choices", batch_size=4)
    rows = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    questions = load_benchmark(bench)
    for row, q in zip(rows, questions):
        norm = [s / len(o) for s, o in zip(row["scores"], q.options)]
        assert row["prediction_norm"] == "ABCD"[max(range(4), key=lambda k: (norm[k], -k))]
        assert row["correct_norm"] == (row["prediction_norm"] == q.answer_letter)
    assert report["accuracy_norm"] == pytest.approx(sum(r["correct_norm"] for r in rows) / len(rows))
    assert report["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))


def test_report_files_and_fields(lm, bench, tmp_path):
    out = tmp_path / "out"
    report = evaluate_checkpoint(lm.path, str(bench), out, method="letter", batch_size=8, name="tiny")
    for name in ("report.json", "report.md", "predictions.jsonl", "reliability.png", "topics.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "submission.txt").exists()  # labelled set
    assert json.loads((out / "report.json").read_text())["accuracy"] == report["accuracy"]
    rows = read_jsonl(out / "predictions.jsonl")
    assert [r["index"] for r in rows] == list(range(16))
    assert [r["id"] for r in rows] == [f"t{i:03d}" for i in range(16)]
    for r in rows:
        assert set(r) >= {"index", "id", "prediction", "probabilities", "answer", "correct", "confidence"}
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["confidence"] == max(r["probabilities"].values())
    assert report["n"] == 16 and report["accuracy"] == sum(r["correct"] for r in rows) / 16
    assert all(report[k] is not None for k in ("ece", "brier", "nll"))
    md = (out / "report.md").read_text()
    assert "accuracy" in md and "ECE" in md and "| GA (Astrophysics of Galaxies) |" in md


def test_unlabelled_set_gets_a_submission(lm, tmp_path):
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in make_rows(10)]
    path = write_json(tmp_path / "unlabelled.json", rows)
    report = evaluate_checkpoint(lm.path, str(path), tmp_path / "out", limit=7)
    assert report["accuracy"] is None and report["ece"] is None and report["n"] == 7
    preds = [r["prediction"] for r in read_jsonl(tmp_path / "out" / "predictions.jsonl")]
    assert read_submission(tmp_path / "out" / "submission.txt") == preds
    assert all("answer" not in r for r in read_jsonl(tmp_path / "out" / "predictions.jsonl"))


def test_interrupted_run_resumes_without_rescoring(lm, bench, tmp_path):
    settings = EvalSettings(method="letter", batch_size=4)
    full = evaluate(lm.path, str(bench), tmp_path / "full", settings)

    class Stop(Exception):
        pass

    def stop_after_two(k):
        if k == 2:
            raise Stop

    with pytest.raises(Stop):
        evaluate(lm.path, str(bench), tmp_path / "resumed", settings, on_batch=stop_after_two)
    store = tmp_path / "resumed" / "scores-cache.jsonl"
    assert len(store.read_text().splitlines()) == 1 + 8  # header + two batches of 4
    assert not (tmp_path / "resumed" / "predictions.jsonl").exists()
    batches = []
    resumed = evaluate(lm.path, str(bench), tmp_path / "resumed", settings, on_batch=batches.append)
    assert resumed["scored_now"] == 8 and resumed["from_cache"] == 8 and batches == [1, 2]
    a = read_jsonl(tmp_path / "full" / "predictions.jsonl")
    b = read_jsonl(tmp_path / "resumed" / "predictions.jsonl")
    assert [r["index"] for r in b] == list(range(16))  # no duplicates, question order
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    for x, y in zip(a, b):
        assert x["scores"] == pytest.approx(y["scores"], abs=1e-4)
    assert resumed["accuracy"] == full["accuracy"]
    # a finished run is not redone; a torn last line is cut off and only that question rescored
    again = evaluate(lm.path, str(bench), tmp_path / "resumed", settings)
    assert again["scored_now"] == 0
    text = store.read_text()
    store.write_text(text[: len(text) - 20])
    torn = evaluate(lm.path, str(bench), tmp_path / "resumed", settings)
    assert torn["scored_now"] == 1 and len(store.read_text().splitlines()) == 17


def test_limit_then_extend_scores_only_new_questions(lm, bench, tmp_path):
    first = evaluate_checkpoint(lm.path, str(bench), tmp_path / "out", limit=6)
    assert first["n"] == 6 and first["scored_now"] == 6
    second = evaluate_checkpoint(lm.path, str(bench), tmp_path / "out", limit=10)
    assert second["n"] == 10 and second["scored_now"] == 4 and second["from_cache"] == 6
    other = evaluate_checkpoint(lm.path, str(bench), tmp_path / "out", method="choices", limit=2)
    assert other["scored_now"] == 2  # other settings: the store starts afresh


def test_store_ignores_other_fingerprints(tmp_path):
    path = tmp_path / "s.jsonl"
    store = ScoreStore(path, "one")
    assert not path.exists()  # nothing written until there is something to keep
    store.append([{"index": 0, "scores": [0, 0, 0, 0]}, {"index": 0, "scores": [1, 1, 1, 1]}])
    assert ScoreStore(path, "one").rows == {0: {"index": 0, "scores": [0, 0, 0, 0]}}
    other = ScoreStore(path, "two")
    assert other.rows == {} and len(ScoreStore(path, "one").rows) == 1  # kept until "two" has scores
    other.append([{"index": 3, "scores": [2, 2, 2, 2]}])
    assert ScoreStore(path, "one").rows == {} and list(ScoreStore(path, "two").rows) == [3]


def test_extract_answer():
    assert extract_answer('{"ANSWER": "B", "EXPLANATION": "Because \\"x\\" holds."}') == ("B", 'Because \\"x\\" holds.')
    assert extract_answer('<think>maybe "ANSWER": "A"</think>\n{"ANSWER": "C"}')[0] == "C"
    assert extract_answer("answer: (D)")[0] == "D"
    assert extract_answer('{"ANSWER": "E"}')[0] is None
    assert extract_answer("Answer: a lot of things")[0] is None
    assert extract_answer("the answer is unclear")[0] is None
    assert extract_answer('<think>"ANSWER": "A" ... (ran out of tokens')[0] is None
    assert strip_thinking("<think>\n\n</think>\n\nhello") == "hello"


def test_generate_falls_back_to_letter_probabilities(lm, bench, tmp_path):
    questions = load_benchmark(bench)[:4]
    direct = generate_prompt(lm.tokenizer, questions[0], thinking=False)
    thinking = generate_prompt(lm.tokenizer, questions[0], thinking=True)
    assert direct.endswith("<think>\n\n</think>\n\n") and not thinking.endswith("</think>\n\n")
    rows = [r for batch in iter_generate(lm, questions, 2, max_new_tokens=6, thinking=False) for r in batch]
    assert sorted(r["index"] for r in rows) == [0, 1, 2, 3]
    assert all(isinstance(r["generation"], str) for r in rows)
    settings = EvalSettings(method="generate", batch_size=2, limit=4, max_new_tokens=6)
    report = evaluate(lm.path, str(bench), tmp_path / "gen", settings)
    letter = evaluate(lm.path, str(bench), tmp_path / "letter", EvalSettings(limit=4))
    gen_rows = read_jsonl(tmp_path / "gen" / "predictions.jsonl")
    letter_rows = read_jsonl(tmp_path / "letter" / "predictions.jsonl")
    # random weights never write valid JSON: every answer comes from the letter probabilities
    assert report["extraction_failure_rate"] == 1.0
    assert [r["prediction"] for r in gen_rows] == [r["prediction"] for r in letter_rows]
    assert report["accuracy"] == letter["accuracy"]
    assert "answer extraction failures" in (tmp_path / "gen" / "report.md").read_text()


def test_vllm_backend_absent_is_a_clear_error(lm, bench, tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    settings = EvalSettings(method="generate", backend="vllm", limit=2)
    with pytest.raises(BackendNotAvailable, match="pip install vllm"):
        evaluate(lm.path, str(bench), tmp_path / "v", settings)
    assert not (tmp_path / "v").exists()


def test_public_file_submission(tiny_base, astromlab1_public, tmp_path):
    """All 3,846 public questions scored with the tiny model, batched; submission in question order."""
    import time

    start = time.monotonic()
    report = evaluate_checkpoint(str(tiny_base), str(astromlab1_public), tmp_path / "pub", batch_size=32)
    elapsed = time.monotonic() - start
    print(f"\nscored {report['n']} public AstroMLab-1 questions in {elapsed:.1f} s ({report['questions_per_second']} q/s)")
    assert report["n"] == report["n_total"] == 3846 and report["accuracy"] is None
    letters = read_submission(tmp_path / "pub" / "submission.txt")
    assert len(letters) == 3846 and set(letters) <= set("ABCD")
    rows = read_jsonl(tmp_path / "pub" / "predictions.jsonl")
    assert [r["index"] for r in rows] == list(range(3846))
    assert letters == [r["prediction"] for r in rows]
    assert sum(report["per_topic"][t]["n"] for t in report["per_topic"]) == 3846
