"""SFT data path: assistant-only labels, <think> reasoning trained, reasoning modes, template/EOS checks."""

from __future__ import annotations

import json
import shutil

import pytest

from astrosage.training.chat import ChatTemplateError, has_reasoning, normalize_messages, reasoning_mode
from astrosage.training.chat_masks import check_template, encode, make_plan

SAMPLE = "examples/sft_sample/astro_qa_sample.jsonl"


def _rows():
    return [json.loads(line) for line in open(SAMPLE)]


def test_sample_file_format():
    rows = _rows()
    assert 55 <= len(rows) <= 70
    with_think = [r for r in rows if has_reasoning(r["messages"])]
    assert 20 <= len(with_think) <= 40  # about half carry a reasoning chain
    for r in rows:
        assert set(r) == {"messages", "meta"} and r["meta"]["reasoning"] == has_reasoning(r["messages"])
        assert r["messages"][-1]["role"] == "assistant"


def test_reasoning_modes_are_deterministic_and_switched_by_system_prompt():
    think = "<think>\nd = 1/p = 20 pc\n</think>\n\nAbout 20 parsecs."
    msgs = [{"role": "user", "content": "Distance for p = 0.05 arcsec?"}, {"role": "assistant", "content": think}]
    kept = reasoning_mode(msgs, 0, seed=0, fraction=1.0, thinking_prompt="THINK", direct_prompt="DIRECT")
    assert kept[0] == {"role": "system", "content": "THINK"} and "<think>" in kept[-1]["content"]
    direct = reasoning_mode(msgs, 0, seed=0, fraction=0.0, thinking_prompt="THINK", direct_prompt="DIRECT")
    assert direct[0]["content"] == "DIRECT" and direct[-1]["content"] == "About 20 parsecs."
    # an existing system prompt keeps its text after the switch
    with_sys = reasoning_mode([{"role": "system", "content": "Be brief."}, *msgs], 0, 0, 1.0, "THINK", "DIRECT")
    assert with_sys[0]["content"] == "THINK\n\nBe brief." and len(with_sys) == 3
    # half of the chains are kept, deterministically per (seed, index)
    picks = [has_reasoning(reasoning_mode(msgs, i, 0, 0.5, "T", "D")) for i in range(200)]
    assert 70 < sum(picks) < 130 and picks == [has_reasoning(reasoning_mode(msgs, i, 0, 0.5, "T", "D")) for i in range(200)]
    # reasoning_content is accepted and moved inline
    moved = normalize_messages([{"role": "assistant", "content": "A.", "reasoning_content": "because"}])
    assert moved[0]["content"] == "<think>\nbecause\n</think>\n\nA."


@pytest.fixture(scope="module")
def sft_trainer(tiny_base, tmp_path_factory):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    convs = [reasoning_mode(r["messages"], i, 0, 1.0, "THINK", "DIRECT") for i, r in enumerate(_rows()[:12])]
    ds = datasets.Dataset.from_list([{"messages": c} for c in convs])
    args = SFTConfig(
        output_dir=str(tmp_path_factory.mktemp("sft")), max_length=512, packing=True, packing_strategy="bfd",
        assistant_only_loss=True, report_to=[], use_cpu=True, per_device_train_batch_size=4,
        activation_checkpointing=False, bf16=False,
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    return SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok), convs, tok


def test_only_assistant_tokens_carry_labels_and_think_is_trained(sft_trainer):
    trainer, convs, tok = sft_trainer
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch  # padding-free: one flat row
    assert not (batch["input_ids"] == tok.pad_token_id).any()  # no padding tokens
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = tok.decode(ids[labels != -100])
    untrained = tok.decode(ids[labels == -100])
    assistants = [m["content"] for c in convs for m in c if m["role"] == "assistant"]
    users = [m["content"] for c in convs for m in c if m["role"] != "assistant"]
    in_batch = [a for a in assistants if a.split("</think>")[-1].strip()[:40] in tok.decode(ids)]
    assert in_batch
    for a in in_batch:
        assert a.strip()[:40] in trained  # the whole assistant turn, <think> chain included, is trained
        if "<think>" in a:
            chain = a.split("<think>")[1].split("</think>")[0].strip()
            assert chain[:40] in trained
    for u in users:
        if u[:30] in tok.decode(ids):
            assert u[:30] not in trained  # user and system text carries no labels
    assert "<|eot_id|>" in trained and "<|start_header_id|>" in untrained
    assert trained.count("<|eot_id|>") == sum(1 for a in in_batch)  # each turn's end-of-turn token is learned


def _copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def _check(tok, stops, reasoning=False):
    return check_template(tok, make_plan(tok, "tiny"), stops, reasoning=reasoning)


def test_template_and_eos_consistency_is_checked(tiny_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    eot, end_of_text = tok.convert_tokens_to_ids("<|eot_id|>"), tok.convert_tokens_to_ids("<|end_of_text|>")
    plan, ok = _check(tok, [end_of_text, eot], reasoning=True)
    assert ok["end_of_turn_token"] == "<|eot_id|>" and plan.method == "markers"

    # generation stops only at <|end_of_text|> while turns end with <|eot_id|>: refused
    with pytest.raises(ChatTemplateError, match=r"chat template / EOS mismatch.*<\|eot_id\|>.*never stops"):
        _check(tok, [end_of_text])

    # no {% generation %} markers: the spans are derived from the template, and they are the markers' spans
    plain = AutoTokenizer.from_pretrained(tiny_base)
    plain.chat_template = plain.chat_template.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
    plain_plan, summary = _check(plain, [end_of_text, eot], reasoning=True)
    assert plain_plan.method == "derived" and summary["end_of_turn_token"] == "<|eot_id|>"
    convo = reasoning_mode(_rows()[0]["messages"], 0, 0, 1.0, "THINK", "DIRECT")
    assert [(e.input_ids, e.assistant_masks) for e in encode(plain, plain_plan, convo)] == [
        (e.input_ids, e.assistant_masks) for e in encode(tok, plan, convo)
    ]

    # a template that strips <think> from assistant turns: refused when the data has reasoning
    stripping = AutoTokenizer.from_pretrained(tiny_base)
    stripping.chat_template = stripping.chat_template.replace(
        "message['content'] | trim + '<|eot_id|>'", "message['content'].split('</think>')[-1] | trim + '<|eot_id|>'"
    )
    _check(stripping, [eot], reasoning=False)  # fine without reasoning
    with pytest.raises(ChatTemplateError, match="drops <think>"):
        _check(stripping, [eot], reasoning=True)

    # end-of-turn token outside the trained span: refused
    outside = AutoTokenizer.from_pretrained(tiny_base)
    outside.chat_template = outside.chat_template.replace(
        "{{- message['content'] | trim + '<|eot_id|>' -}}{%- endgeneration -%}",
        "{{- message['content'] | trim -}}{%- endgeneration -%}{{- '<|eot_id|>' -}}",
    )
    with pytest.raises(ChatTemplateError, match="never learn to stop"):
        _check(outside, [eot])
