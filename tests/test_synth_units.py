"""Synth building blocks: chunking, JSON extraction, item validation (MCQ good/bad), records, shard store."""

from __future__ import annotations

import json

import pytest

from corpus_tools.synth.chunking import Chunk, chunk_document, iter_chunks, split_text
from corpus_tools.synth.parsing import ParseError, extract_items, extract_json
from corpus_tools.synth.records import Provenance, mcq_record, qa_record
from corpus_tools.synth.store import ShardStore
from corpus_tools.synth.templates import load_template
from corpus_tools.synth.validate import (
    ANSWER_LEAK,
    CONTAMINATED,
    CONTEXT_REFERENCE,
    DUPLICATE_OPTIONS,
    INVALID_ANSWER,
    MALFORMED_ITEM,
    TOO_SHORT,
    UNBALANCED_OPTIONS,
    Decontaminator,
    MCQItem,
    QAItem,
    QuestionDeduper,
    Rejected,
    validate_mcq,
    validate_qa,
)
from test_synth_support import write_docs

CHUNK = Chunk(paper_id="2401.00417", chunk_index=0, text="x", title="Thermal evolution of accreting white dwarfs", year="2024")


# ------------------------------------------------------------------------------------ chunking
def test_spans_cover_text_with_overlap_and_whole_words():
    text = " ".join(f"word{i}." if i % 9 == 8 else f"word{i}" for i in range(900))
    spans = split_text(text, 1800, 200)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert s2 < e1, "consecutive chunks must overlap"
        assert 100 <= e1 - s2 <= 260
        assert text[s2 - 1] == " " and (e1 == len(text) or text[e1 - 1] in " ."), "cuts fall on word boundaries"
    assert all(e - s <= 1800 * 1.25 for s, e in spans)


def test_short_tail_is_merged_and_paragraph_breaks_preferred():
    text = "A" * 1500 + "\n\n" + "B" * 500 + " tail."
    spans = split_text(text, 1800, 200)
    assert spans[0][1] == 1502, "the cut is at the paragraph break"
    assert split_text("short text", 1800, 200) == [(0, 10)]
    with pytest.raises(ValueError):
        split_text("abc", 100, 100)


def test_chunks_carry_metadata_and_respect_max_chunks(tmp_path):
    docs = write_docs(tmp_path / "d" / "p0.parquet", n_docs=2, chars=3000)
    chunks = list(iter_chunks(docs.parent, 800, 100))
    assert len({c.paper_id for c in chunks}) == 2
    first = chunks[0]
    assert first.title.startswith("Synthetic study") and first.year == "2024" and first.abstract
    assert [c.chunk_index for c in chunks if c.paper_id == first.paper_id] == list(range(sum(c.paper_id == first.paper_id for c in chunks)))
    assert first.key == f"{first.paper_id}#0"
    assert len(list(iter_chunks(docs.parent, 800, 100, max_chunks=3))) == 3
    with pytest.raises(FileNotFoundError, match="no corpus documents"):
        list(iter_chunks(tmp_path / "empty", 800, 100))
    assert chunk_document({"id": "x", "text": ""}, 800, 100) == []


# ------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    "text, expected",
    [
        ('[{"question": "q"}]', [{"question": "q"}]),
        ('Sure!\n```json\n{"items": [{"question": "q"},]}\n```\nHope it helps', [{"question": "q"}]),
        ('<think>plan {not json}</think>\n{"questions": [{"question": "a } b"}]}', [{"question": "a } b"}]),
        ('Here you go: {"question": "q", "answer": "a",} thanks', [{"question": "q", "answer": "a"}]),
        ('{"items": [{"question": "one"}, {"question": "tw', [{"question": "one"}]),  # cut off by the token budget
    ],
)
def test_extract_items_fallbacks(text, expected):
    assert extract_items(text) == expected


def test_extract_json_rejects_text_without_json():
    for bad in ("", "no json here", "{unclosed", "ed ĠĠ the star {{ ]]"):
        with pytest.raises(ParseError):
            extract_json(bad)


# ------------------------------------------------------------------------------------ validation
GOOD_MCQ = {
    "question": "What mechanism supports a white dwarf against gravitational collapse?",
    "A": "Thermal pressure of hot ions", "B": "Electron degeneracy pressure", "C": "Radiation pressure of photons",
    "D": "Magnetic pressure of fields", "answer": "B", "explanation": "Pauli exclusion gives a pressure independent of T.",
    "topic": "stellar astrophysics",
}


def _mcq(**changes):
    item = dict(GOOD_MCQ)
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


def test_good_mcq_is_accepted_in_both_shapes():
    item = validate_mcq(GOOD_MCQ, CHUNK, 2.5)
    assert item.answer == 1 and item.options[1] == "Electron degeneracy pressure" and item.topic == "stellar astrophysics"
    listed = {"question": GOOD_MCQ["question"], "options": ["A) Thermal pressure of hot ions", "B) Electron degeneracy pressure",
              "C) Radiation pressure of photons", "D) Magnetic pressure of fields"], "answer": "(b)", "explanation": "e"}
    assert validate_mcq(listed, CHUNK, 2.5).options == item.options


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("not an object", MALFORMED_ITEM),
        (_mcq(D=None), MALFORMED_ITEM),
        (_mcq(question=["a", "list"]), MALFORMED_ITEM),
        (_mcq(answer="E"), INVALID_ANSWER),
        (_mcq(answer=None), INVALID_ANSWER),
        (_mcq(question="Why?"), TOO_SHORT),
        (_mcq(C="electron degeneracy pressure!"), DUPLICATE_OPTIONS),
        (_mcq(B="Electron degeneracy pressure from the Pauli exclusion principle acting on the dense, cold electron gas"), UNBALANCED_OPTIONS),
        (_mcq(question="Which electron degeneracy pressure effect supports a white dwarf against gravity?"), ANSWER_LEAK),
        (_mcq(question="What supports a white dwarf against collapse? (The correct answer is B)"), ANSWER_LEAK),
        (_mcq(question="According to this paper, what supports a white dwarf against collapse?"), CONTEXT_REFERENCE),
        (_mcq(question="What does the excerpt say supports a white dwarf against collapse?"), CONTEXT_REFERENCE),
    ],
)
def test_bad_mcqs_are_rejected_with_their_reason(raw, reason):
    with pytest.raises(Rejected) as info:
        validate_mcq(raw, CHUNK, 2.5)
    assert info.value.reason == reason


def test_context_reference_is_fine_when_the_work_is_named():
    for q in ("What do the authors of arXiv:2401.00417 find about cooling of accreting white dwarfs?",
              "What do Smith et al. (2024) find in this study of accreting white dwarfs?"):
        assert validate_qa({"question": q, "answer": "Cooling slows down as the envelope grows thicker."}, CHUNK, False)
    with pytest.raises(Rejected) as info:
        validate_qa({"question": "What do the authors find about cooling?", "answer": "That it slows down a lot over time."}, CHUNK, False)
    assert info.value.reason == CONTEXT_REFERENCE
    # a distractor that also appears in the stem means the stem gives nothing away
    ok = _mcq(question="Is thermal pressure of hot ions or electron degeneracy pressure what supports a white dwarf?")
    assert validate_mcq(ok, CHUNK, 2.5).answer == 1


def test_qa_reasoning_needs_a_chain_and_no_think_tags():
    good = {"question": "Why do massive stars live shorter lives?", "answer": "Their luminosity rises much faster than their fuel supply.",
            "reasoning": "Lifetime is fuel over burn rate; fuel scales with M, luminosity roughly with M^3.5."}
    assert validate_qa(good, CHUNK, True).reasoning.startswith("Lifetime")
    with pytest.raises(Rejected, match=MALFORMED_ITEM):
        validate_qa({k: v for k, v in good.items() if k != "reasoning"}, CHUNK, True)
    with pytest.raises(Rejected, match=MALFORMED_ITEM):
        validate_qa({**good, "answer": "<think>hmm</think> because of luminosity scaling"}, CHUNK, False)
    with pytest.raises(Rejected, match=TOO_SHORT):
        validate_qa({**good, "answer": "Luminosity."}, CHUNK, False)


def test_near_duplicate_questions():
    dedup = QuestionDeduper(threshold=0.7)
    assert not dedup.check("What physical process sets the maximum mass of a white dwarf star in a binary system?")
    assert dedup.check("What physical process sets the maximum mass of a white dwarf star in a binary system ?")
    assert dedup.check("What physical process sets the maximum mass of a white dwarf star in a binary pair?")
    assert not dedup.check("How does dust extinction bias the measured star formation rate of distant galaxies?")


def test_decontamination_uses_the_corpus_13_gram_rule(tmp_path):
    bench = tmp_path / "bench.json"
    q = "Which of the following best describes the role of angular momentum transport in protoplanetary disks today"
    bench.write_text(json.dumps([{"question": q, "A": "a", "B": "b", "C": "c", "D": "d"}]))
    decon = Decontaminator.from_files([bench], 13)
    words = q.split()
    with pytest.raises(Rejected, match=CONTAMINATED):
        decon.check("Explain: " + " ".join(words[2:15]) + " and more")  # shares one 13-gram
    decon.check("Explain: " + " ".join(words[2:14]) + " and more")  # 12 shared words: clean
    Decontaminator.from_files([], 13).check(q)  # no benchmarks: nothing is contaminated


# ------------------------------------------------------------------------------------ records, templates
def _prov(task="qa"):
    return Provenance(CHUNK, task, "openai", "teacher", f"{task}_v1", "abc", {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 64}, 7)


def test_records_have_think_inline_stable_ids_and_provenance():
    rec = qa_record(QAItem("Why is the sky dark at night?", "Because the universe has a finite age.", "Olbers: finite age and expansion."), _prov("qa_reasoning"), 0)
    assert rec["messages"][1]["content"] == "<think>\nOlbers: finite age and expansion.\n</think>\n\nBecause the universe has a finite age."
    meta = rec["meta"]
    assert meta["reasoning"] is True and meta["paper_id"] == "2401.00417" and meta["chunk_index"] == 0
    assert meta["seed"] == 7 and meta["prompt"] == "qa_reasoning_v1" and meta["sampling"]["temperature"] == 0.7
    again = qa_record(QAItem("other", "answer text long enough"), _prov("qa_reasoning"), 0)
    assert again["meta"]["id"] == meta["id"], "ids depend on position/provenance, so a rerun reproduces them"
    assert qa_record(QAItem("q", "a"), _prov("qa_reasoning"), 1)["meta"]["id"] != meta["id"]


def test_mcq_options_are_shuffled_evenly_and_keep_the_correct_answer():
    letters = []
    for i in range(200):
        item = MCQItem(f"Question number {i}?", ("right", "w1", "w2", "w3"), 0, "because")
        rec = mcq_record(item, _prov("mcq"), i)
        assert rec[rec["answer"]] == "right" and sorted(rec[k] for k in "ABCD") == ["right", "w1", "w2", "w3"]
        letters.append(rec["answer"])
    assert all(30 <= letters.count(x) <= 70 for x in "ABCD")


def test_templates_are_versioned_and_render_context(tmp_path):
    chunk = Chunk(paper_id="2401.00417", chunk_index=2, text="The disk is hot.", title="Hot disks", abstract="Abs.", year="2024")
    t = load_template("mcq", "v1")
    msgs = t.render(chunk, 5)
    assert t.id == "mcq_v1" and len(t.sha) == 12
    assert "Write 5 multiple-choice" in msgs[0]["content"] and "The disk is hot." in msgs[0]["content"] and "arXiv:2401.00417 (2024)" in msgs[0]["content"]
    (tmp_path / "qa_v2.j2").write_text("Custom {{ text }} {{ n_items }}")
    assert load_template("qa", "v2", tmp_path).render(chunk, 3)[0]["content"] == "Custom The disk is hot. 3"
    with pytest.raises(FileNotFoundError, match="qa_v9.j2"):
        load_template("qa", "v9", tmp_path)


# ------------------------------------------------------------------------------------ store
def test_store_commits_atomically_and_cleans_up_after_a_crash(tmp_path, monkeypatch):
    store = ShardStore(tmp_path)
    store.commit(0, {"qa": [{"n": 0}], "mcq": []}, {"chunks": ["a#0"]})
    # crash between writing shard 1's files and its ledger line
    monkeypatch.setattr(ShardStore, "_append_ledger", lambda self, entry: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        store.commit(1, {"qa": [{"n": 1}], "mcq": [{"m": 1}]}, {"chunks": ["a#1"]})
    monkeypatch.undo()
    assert (tmp_path / "qa" / "part-00001.jsonl").exists()
    (tmp_path / "qa" / ".part-00002.jsonl.x.tmp").write_text("half")
    with (tmp_path / "state" / "ledger.jsonl").open("a") as fh:
        fh.write('{"shard": 2, "chu')  # torn ledger line
    reopened = ShardStore(tmp_path)
    assert sorted(reopened.entries) == [0]
    assert sorted(reopened.removed_orphans) == ["mcq/part-00001.jsonl", "qa/.part-00002.jsonl.x.tmp", "qa/part-00001.jsonl"]
    assert list(reopened.iter_records("qa")) == [{"n": 0}]
    assert (tmp_path / "state" / "ledger.jsonl").read_text().count("\n") == 1
    reopened.commit(1, {"qa": [{"n": 1}]}, {"chunks": ["a#1"]})
    assert [r["n"] for r in ShardStore(tmp_path).iter_records("qa")] == [0, 1]
    with pytest.raises(ValueError, match="already committed"):
        reopened.commit(1, {}, {"chunks": []})
