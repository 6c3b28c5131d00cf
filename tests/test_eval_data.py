"""Benchmark loading: every format, answer forms, the public AstroMLab-1 file, and bad files."""

from __future__ import annotations

import csv
import json

import pytest

from eval.data import BenchmarkError, load_benchmark, parse_answer
from eval.topics import UNCLASSIFIED, tag_text, topics_for
from test_eval_support import make_rows, write_json

FIELDS = ["question", "A", "B", "C", "D", "answer", "explanation", "topic", "id"]


def _write_all_formats(tmp_path, rows):
    paths = {"json": write_json(tmp_path / "b.json", rows)}
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths["jsonl"] = tmp_path / "b.jsonl"
    with (tmp_path / "b.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    paths["csv"] = tmp_path / "b.csv"
    import pyarrow as pa
    import pyarrow.parquet as pq

    typed = [{**r, "answer": str(r["answer"])} for r in rows]  # one column type for arrow
    pq.write_table(pa.Table.from_pylist(typed), tmp_path / "b.parquet")
    paths["parquet"] = tmp_path / "b.parquet"
    import datasets

    datasets.Dataset.from_list(typed).save_to_disk(str(tmp_path / "saved"))
    paths["dataset"] = tmp_path / "saved"
    return paths


def test_every_format_loads_the_same_questions(tmp_path):
    rows = make_rows(6)
    rows[1]["answer"] = 2  # 0-based index form (an int in JSON, "2" in CSV/parquet)
    rows[2]["answer"] = "d"  # lower-case letter
    rows[3]["explanation"] = "because"
    loaded = {fmt: load_benchmark(path) for fmt, path in _write_all_formats(tmp_path, rows).items()}
    reference = loaded["json"]
    assert [q.answer for q in reference] == [parse_answer(r["answer"]) for r in rows]
    assert reference[1].answer == 2 and reference[2].answer_letter == "D"
    assert reference[3].explanation == "because" and reference[0].explanation is None
    assert [q.id for q in reference] == [r["id"] for r in rows]
    for fmt, questions in loaded.items():
        assert [(q.question, q.options, q.answer, q.topic, q.id) for q in questions] == [
            (q.question, q.options, q.answer, q.topic, q.id) for q in reference
        ], fmt


def test_limit_and_optional_fields(tmp_path):
    rows = [{k: r[k] for k in ("question", "A", "B", "C", "D")} for r in make_rows(5)]
    questions = load_benchmark(write_json(tmp_path / "u.json", rows), limit=3)
    assert len(questions) == 3
    assert all(q.answer is None and q.id is None and q.topic is None for q in questions)
    assert questions[2].key == "2"


def test_public_astromlab1_file_loads_as_is(astromlab1_public):
    questions = load_benchmark(astromlab1_public)
    assert len(questions) == 3846
    assert all(q.answer is None for q in questions)
    assert all(len(q.options) == 4 and all(q.options) for q in questions)
    topics, source = topics_for(questions)
    assert source == "keywords"
    assert {"GA", "CO", "EP", "HE", "IM", "SR"} <= set(topics)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda r: r[2].pop("C"), ["row 2", "'C'", "missing"]),
        (lambda r: r[1].update(answer="E"), ["row 1", "'answer'", "'E'", "A, B, C, D"]),
        (lambda r: r[3].update(question="   "), ["row 3", "'question'", "empty"]),
        (lambda r: r[0].update(B=""), ["row 0", "'B'", "empty"]),
        (lambda r: r[4].update(answer=7), ["row 4", "'answer'", "7"]),
    ],
    ids=["missing-option", "answer-E", "empty-question", "empty-option", "answer-out-of-range"],
)
def test_bad_rows_name_file_row_and_field(tmp_path, mutate, expected):
    rows = make_rows(6)
    mutate(rows)
    path = write_json(tmp_path / "bad.json", rows)
    with pytest.raises(BenchmarkError) as err:
        load_benchmark(path)
    message = str(err.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_bad_jsonl_line_and_csv_row_are_located(tmp_path):
    rows = make_rows(4)
    lines = [json.dumps(r) for r in rows]
    lines[2] = lines[2][:-5]  # truncated object
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchmarkError, match=r"bad\.jsonl: row 2 \(line 3\): malformed JSON"):
        load_benchmark(bad)
    rows[1]["answer"] = "E"
    with (tmp_path / "bad.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(BenchmarkError, match=r"bad\.csv: row 1 \(line 3\): field 'answer'"):
        load_benchmark(tmp_path / "bad.csv")


def test_malformed_json_unknown_extension_missing_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question": "x", "A": "a",,}]')
    with pytest.raises(BenchmarkError, match=r"broken\.json: malformed JSON at line 1, column \d+"):
        load_benchmark(broken)
    other = tmp_path / "questions.txt"
    other.write_text("question,A,B,C,D\n")
    with pytest.raises(BenchmarkError, match=r"questions\.txt: unknown file type '\.txt'.*\.json, \.jsonl, \.csv, \.parquet"):
        load_benchmark(other)
    with pytest.raises(BenchmarkError, match="not found"):
        load_benchmark(tmp_path / "nope.json")
    with pytest.raises(BenchmarkError, match="expected a JSON list"):
        load_benchmark(write_json(tmp_path / "scalar.json", 3))  # type: ignore[arg-type]
    with pytest.raises(BenchmarkError, match="no questions"):
        load_benchmark(write_json(tmp_path / "empty.json", []))


def test_keyword_tagger_subfields():
    assert tag_text("What sets the mass of a neutron star in an X-ray binary?") == "HE"
    assert tag_text("How do hot Jupiter exoplanets migrate in the protoplanetary disk?") == "EP"
    assert tag_text("What do CMB anisotropies tell us about dark energy and the Hubble constant?") == "CO"
    assert tag_text("Why does a red giant star expand after the main sequence?") == "SR"
    assert tag_text("What limits the angular resolution of an interferometer?") == "IM"
    assert tag_text("Why are rotation curves of spiral galaxies flat?") == "GA"
    assert tag_text("What is two plus two?") == UNCLASSIFIED
