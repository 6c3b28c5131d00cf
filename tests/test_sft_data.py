"""SFT data in the formats real datasets use, bad rows counted with file:line, overlong conversations."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from chat_families import family_tokenizer, stop_ids
from astrosage.training.chat_masks import check_template, make_plan
from astrosage.training.sft_data import RowError, conversations, load_rows, to_messages, tokenize_conversations

# row shapes as the real datasets publish them
INFINITY_INSTRUCT = {  # BAAI/Infinity-Instruct (ShareGPT, human/gpt)
    "id": "3", "conversations": [{"from": "human", "value": "What is a white dwarf?"},
                                 {"from": "gpt", "value": "The remnant core of a low-mass star."}],
    "label": {"ability_en": ["astronomy"], "cate_ability_en": [], "ability_zh": [], "cate_ability_zh": []},
    "langdetect": "en", "source": "Subjective",
}
OPENHERMES = {  # teknium/OpenHermes-2.5 (ShareGPT with system, weight: null)
    "conversations": [{"from": "system", "value": "You are helpful.", "weight": None},
                      {"from": "human", "value": "Define a light-year.", "weight": None},
                      {"from": "gpt", "value": "The distance light travels in a year.", "weight": None}],
    "source": "airoboros2.2", "category": "general", "skip_prompt_formatting": False,
}


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_real_formats_become_messages():
    assert to_messages(INFINITY_INSTRUCT) == [
        {"role": "user", "content": "What is a white dwarf?"}, {"role": "assistant", "content": "The remnant core of a low-mass star."}]
    assert [m["role"] for m in to_messages(OPENHERMES)] == ["system", "user", "assistant"]
    assert to_messages({"prompt": "Q?", "completion": "A."}) == [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]
    conv_pc = {"prompt": [{"role": "user", "content": "Q?"}], "completion": [{"role": "assistant", "content": "A."}]}
    assert to_messages(conv_pc)[-1] == {"role": "assistant", "content": "A."}
    assert to_messages({"instruction": "Convert 1 pc to ly.", "input": "", "output": "3.26 ly"})[0]["content"] == "Convert 1 pc to ly."
    assert to_messages({"dialog": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, columns={"messages": "dialog"})[1]["content"] == "a"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "multi"}, {"type": "text", "text": "part"}]},
                          {"role": "assistant", "content": "ok"}]}
    assert to_messages(parts)[0]["content"] == "multipart"
    with_reasoning = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "because"}]}
    assert to_messages(with_reasoning)[1]["content"] == "<think>\nbecause\n</think>\n\na"


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"messages": "user: hi"}, "messages_not_list"),
        ({"text": "no conversation here"}, "unknown_format"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "unknown_role"),
        ({"conversations": [{"from": "human"}]}, "missing_content"),
        ({"messages": [{"role": "user", "content": 3}]}, "content_not_string"),
        ({"messages": []}, "empty_conversation"),
        (["a", "list"], "row_not_object"),
    ],
)
def test_bad_rows_have_a_reason(row, reason):
    with pytest.raises(RowError) as info:
        to_messages(row)
    assert info.value.reason == reason and str(info.value)


def test_bad_lines_are_counted_with_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "mixed.jsonl", [
        INFINITY_INSTRUCT,
        '{"conversations": [{"from": "human", "value": "torn',  # a torn line mid-file
        {"messages": "user: hi"},  # a string where a list belongs (pyarrow would refuse the whole file)
        OPENHERMES,
        {"prompt": "Q?"},  # completion missing
    ])
    ds, rejected = conversations(load_rows(str(path)))
    assert len(ds) == 2 and [m["role"] for m in ds[1]["messages"]] == ["system", "user", "assistant"]
    assert [(r["where"], r["reason"]) for r in rejected] == [
        (f"{path}:2", "bad_json"), (f"{path}:3", "messages_not_list"), (f"{path}:5", "unknown_format")]
    assert all(r["detail"] for r in rejected)


def test_non_utf8_line_and_empty_file(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(INFINITY_INSTRUCT).encode() + b"\n" + '{"prompt": "caf\u00e9", "completion": "x"}\n'.encode("latin-1"))
    ds, rejected = conversations(load_rows(str(path)))
    assert len(ds) == 1 and rejected[0]["where"] == f"{path}:2" and "UTF-8" in rejected[0]["detail"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    ds, rejected = conversations(load_rows(str(empty)))
    assert len(ds) == 0 and rejected == []


def test_local_dataset_folder_with_named_configs(tmp_path):
    """The Hub layout of BAAI/Infinity-Instruct (configs '7M', 'Gen' in README.md), read from a local folder."""
    root = tmp_path / "Infinity-Instruct"
    (root / "7M").mkdir(parents=True)
    (root / "Gen").mkdir()
    _write_jsonl(root / "7M" / "part-0.jsonl", [INFINITY_INSTRUCT] * 3)
    _write_jsonl(root / "Gen" / "part-0.jsonl", [OPENHERMES])
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: 7M\n  data_files:\n  - split: train\n    path: 7M/*.jsonl\n"
        "- config_name: Gen\n  data_files:\n  - split: train\n    path: Gen/*.jsonl\n---\n# Infinity-Instruct (test copy)\n"
    )
    ds, rejected = conversations(load_rows(str(root), name="7M", split="train", cache_dir=str(tmp_path / "cache")))
    assert len(ds) == 3 and not rejected and ds[0]["messages"][0]["content"] == "What is a white dwarf?"
    gen, _ = conversations(load_rows(str(root), name="Gen", split="train", cache_dir=str(tmp_path / "cache")))
    assert len(gen) == 1 and gen[0]["messages"][0]["role"] == "system"
    from astrosage.training.data import DataError

    with pytest.raises(DataError, match="config 'nope'"):
        load_rows(str(root), name="nope", cache_dir=str(tmp_path / "cache"))


def test_overlong_conversations_are_cut_at_a_turn_boundary_or_dropped(tmp_path):
    import datasets

    tok = family_tokenizer("llama-3.1-instruct")
    plan, _ = check_template(tok, make_plan(tok, "llama-3.1"), stop_ids("llama-3.1-instruct", tok), reasoning=False)
    long_answer = "The Chandrasekhar limit is about 1.4 solar masses. " * 20
    convo = [{"role": "user", "content": "Q1?"}, {"role": "assistant", "content": "Short answer."},
             {"role": "user", "content": "Q2?"}, {"role": "assistant", "content": long_answer}]
    too_long = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": long_answer}]
    ds = datasets.Dataset.from_list([{"messages": convo, "_where": "a:1"}, {"messages": too_long, "_where": "a:2"}])
    out, counts, rejected = tokenize_conversations(ds, tok, plan, max_len=120, overlong="truncate", assistant_only=True)
    assert len(out) == 1 and counts == {"truncated_at_turn_boundary": 1, "dropped_too_long": 1}
    kept = out[0]
    assert len(kept["input_ids"]) <= 120 and kept["input_ids"][-1] == tok.convert_tokens_to_ids("<|eot_id|>")
    assert "Short answer." in tok.decode([t for t, m in zip(kept["input_ids"], kept["assistant_masks"]) if m])
    assert rejected == [{"where": "a:2", "reason": "too_long", "detail": "first assistant turn does not fit sft.max_seq_len=120"}]
    out, counts, _ = tokenize_conversations(ds, tok, plan, max_len=120, overlong="drop", assistant_only=True)
    assert len(out) == 0 and counts == {"dropped_too_long": 2}
    # rows the template refuses are counted by reason, not raised
    bad = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "no answer"}], "_where": "b:7"}])
    out, counts, rejected = tokenize_conversations(bad, tok, plan, max_len=120, overlong="truncate", assistant_only=True)
    assert len(out) == 0 and Counter(counts) == Counter({"rejected_no_assistant_turn": 1}) and rejected[0]["where"] == "b:7"


def test_tokenization_in_several_processes_is_identical(tmp_path):
    tok = family_tokenizer("chatml (dolphin)")
    plan, _ = check_template(tok, make_plan(tok, "chatml"), stop_ids("chatml (dolphin)", tok), reasoning=True)
    path = _write_jsonl(tmp_path / "many.jsonl", [INFINITY_INSTRUCT, OPENHERMES] * 20 + [{"messages": "bad"}])
    results = []
    for procs in (None, 2):
        ds, rejected = conversations(load_rows(str(path), cache_dir=str(tmp_path / f"c{procs}")), num_proc=procs)
        out, counts, bad = tokenize_conversations(ds, tok, plan, 256, "truncate", True, num_proc=procs)
        results.append((out["input_ids"], out["assistant_masks"], counts, [r["where"] for r in rejected + bad]))
    assert results[0] == results[1] and len(results[0][0]) == 40 and results[0][3] == [f"{path}:41"]
