"""Assistant masks on the real chat templates of the major model families (tiny tokenizers).

For every family x conversation shape: exactly the assistant turns (content + end-of-turn token,
plus any whitespace/EOS the template writes after it) carry loss, prompt text carries none, and a
saved-and-reloaded tokenizer encodes the same. Templates with markers give the same masks by
marker and by derivation. Broken setups are refused with the template and turn named.
"""

from __future__ import annotations

import pytest

from chat_families import FAMILIES, TEMPLATES, family_tokenizer, stop_ids, template_text
from astrosage.training.chat_masks import ChatTemplateError, MaskPlan, TurnError, check_template, encode, make_plan

SYSTEM = "You are an astronomy assistant."
Q1, A1 = "What is a parsec?", "About 3.26 light-years."
Q2, A2 = "And a kiloparsec?", "A thousand parsecs."
THINK = "<think>\nd = 1/p = 20 pc\n</think>\n\nAbout 20 parsecs."

SHAPES = {
    "single": [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}],
    "single+system": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1}, {"role": "assistant", "content": A1}],
    "multi": [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}, {"role": "user", "content": Q2}, {"role": "assistant", "content": A2}],
    "multi+system": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1}, {"role": "assistant", "content": A1},
                     {"role": "user", "content": Q2}, {"role": "assistant", "content": A2}],
    "think": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1}, {"role": "assistant", "content": THINK},
              {"role": "user", "content": Q2}, {"role": "assistant", "content": A2}],
}

#: what each family's template is handled by (library first: markers > TRL's marked copy > derived)
EXPECTED_METHOD = {
    "llama-3.1-instruct": "derived", "llama-3.2-instruct": "derived", "qwen2.5-instruct": "trl", "qwen3": "trl",
    "chatml (dolphin)": "derived", "mistral-7b-instruct-v0.3": "derived", "gemma-3-it": "trl", "phi-3-mini-instruct": "trl",
}
END_OF_TURN = {
    "llama-3.1-instruct": "<|eot_id|>", "llama-3.2-instruct": "<|eot_id|>", "qwen2.5-instruct": "<|im_end|>", "qwen3": "<|im_end|>",
    "chatml (dolphin)": "<|im_end|>", "mistral-7b-instruct-v0.3": "</s>", "gemma-3-it": "<end_of_turn>", "phi-3-mini-instruct": "<|end|>",
}


@pytest.fixture(scope="module")
def planned():
    out = {}
    for family in FAMILIES:
        tok = family_tokenizer(family)
        plan, summary = check_template(tok, make_plan(tok, family), stop_ids(family, tok), reasoning=True)
        out[family] = (tok, plan, summary)
    return out


def _spans(tok, ex):
    """Trained text of each assistant turn of one example, in order."""
    spans, start = [], 0
    for end in ex.turn_ends:
        spans.append(tok.decode([ex.input_ids[t] for t in range(start, end) if ex.assistant_masks[t]]))
        start = end
    return spans


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_plan_and_end_of_turn(planned, family):
    tok, plan, summary = planned[family]
    assert plan.method == EXPECTED_METHOD[family]
    assert summary["end_of_turn_token"] == END_OF_TURN[family]
    assert tok.convert_tokens_to_ids(END_OF_TURN[family]) in summary["stop_token_ids"]


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_mask_is_exactly_the_assistant_turns(planned, family, shape, tmp_path):
    from transformers import AutoTokenizer

    tok, plan, _ = planned[family]
    convo = SHAPES[shape]
    examples = encode(tok, plan, convo)
    answers = [m["content"] for m in convo if m["role"] == "assistant"]
    spans = [s for ex in examples for s in _spans(tok, ex)]
    assert len(spans) == len(answers)  # one trained span per assistant turn
    eot = END_OF_TURN[family]
    for span, answer in zip(spans, answers):
        stripped = span.strip()
        # the span is the answer (the template may put a fixed reasoning block before it) + end-of-turn token,
        # then only whitespace or stop tokens: never the next role header
        assert answer.split("</think>")[-1].strip() in stripped and eot in stripped
        tail = stripped.split(answer.split("</think>")[-1].strip(), 1)[1]
        assert tail.startswith(eot)
        leftover = tail[len(eot):].strip()
        assert leftover in ("", tok.eos_token), (family, shape, span)
        if "<think>" in answer:
            assert "d = 1/p = 20 pc" in span  # the reasoning chain is trained
    for ex in examples:
        rendered = tok.decode(ex.input_ids)
        trained = tok.decode([t for t, m in zip(ex.input_ids, ex.assistant_masks) if m])
        for m in convo[: max(i for i, m in enumerate(convo) if m["role"] == "assistant")]:
            if m["role"] != "assistant" and (m["role"] == "system" or m["content"] in rendered):
                assert m["content"] in rendered and m["content"] not in trained  # prompt text is there, without loss
    # the checkpoint's tokenizer (saved and reloaded) encodes the same
    tok.save_pretrained(tmp_path)
    again = encode(AutoTokenizer.from_pretrained(tmp_path), plan, convo)
    assert [(e.input_ids, e.assistant_masks) for e in again] == [(e.input_ids, e.assistant_masks) for e in examples]


def test_system_prompt_kept_or_folded(planned):
    # Mistral-v0.3 renders the system message only before the last user turn: a conversation that ends with the
    # assistant would lose it, so it is folded into the first user turn (where the template puts it for one turn)
    tok, plan, summary = planned["mistral-7b-instruct-v0.3"]
    assert plan.fold_system and summary["system_prompt"] == "folded into first user message"
    ex = encode(tok, plan, SHAPES["single+system"])[0]
    assert f"[INST] {SYSTEM}\n\n{Q1}[/INST]" in tok.decode(ex.input_ids)
    for family in ("llama-3.1-instruct", "qwen2.5-instruct", "chatml (dolphin)", "gemma-3-it", "phi-3-mini-instruct"):
        tok, plan, _ = planned[family]
        assert not plan.fold_system, family
        assert SYSTEM in tok.decode(encode(tok, plan, SHAPES["single+system"])[0].input_ids)


@pytest.mark.parametrize("family", [f for f, m in EXPECTED_METHOD.items() if m == "trl"] + ["tiny"])
def test_markers_and_derivation_agree(planned, family):
    from astrosage.core.tiny import build_tiny_tokenizer

    if family == "tiny":  # our own template carries {% generation %} markers
        tok = build_tiny_tokenizer()
        plan = make_plan(tok, "tiny")
        assert plan.method == "markers"
    else:
        tok, plan, _ = planned[family]
    derived = MaskPlan("derived", plan.template, plan.name, plan.fold_system)
    for shape, convo in SHAPES.items():
        by_markers = encode(tok, plan, convo)
        by_derivation = encode(tok, derived, convo)
        assert [e.input_ids for e in by_markers] == [e.input_ids for e in by_derivation]
        if family != "qwen2.5-instruct":
            assert [e.assistant_masks for e in by_markers] == [e.assistant_masks for e in by_derivation], (family, shape)
        else:
            # TRL's Qwen2.5 copy also marks the '\n' after '<|im_start|>assistant', which the generation prompt
            # already contains; derivation starts after the prompt. That one token per turn is the only difference.
            for a, b in zip(by_markers, by_derivation):
                diff = [t for t, (x, y) in enumerate(zip(a.assistant_masks, b.assistant_masks)) if x != y]
                assert len(diff) == sum(1 for m in convo if m["role"] == "assistant")
                assert all(a.assistant_masks[t] == 1 and tok.decode([a.input_ids[t]]) == "\n" for t in diff)


def test_template_that_drops_earlier_reasoning_trains_each_turn_in_its_own_example():
    # Qwen3's own template renders <think> only for the turn after the last user message; derived turn by turn,
    # an earlier turn is trained in an example that ends with it, so every reasoning chain is trained once.
    tok = family_tokenizer("qwen3")
    plan = MaskPlan("derived", template_text("qwen3"), "qwen3 (original)")
    convo = [{"role": "user", "content": Q1}, {"role": "assistant", "content": THINK},
             {"role": "user", "content": Q2}, {"role": "assistant", "content": "<think>\nsecond chain\n</think>\n\nAnswer two."}]
    examples = encode(tok, plan, convo)
    assert len(examples) == 2
    trained = [tok.decode([t for t, m in zip(e.input_ids, e.assistant_masks) if m]) for e in examples]
    assert "second chain" in trained[0] and "d = 1/p = 20 pc" not in trained[0]  # the full conversation, last turn
    assert "d = 1/p = 20 pc" in trained[1] and Q2 not in tok.decode(examples[1].input_ids)  # turn 1 on its own


def test_unterminated_final_turn_is_refused():
    # Qwen1.5-Chat writes <|im_end|> after every turn but the last: the model would never learn to stop
    tok = family_tokenizer("chatml (dolphin)")
    tok.chat_template = (TEMPLATES / "qwen1_5_chat.jinja").read_text(encoding="utf-8")
    with pytest.raises(ChatTemplateError, match="never learn to stop"):
        check_template(tok, make_plan(tok, "Qwen1.5-Chat"), [tok.convert_tokens_to_ids("<|im_end|>")], reasoning=False)


def test_eos_mismatch_is_refused(planned):
    tok, plan, _ = planned["llama-3.1-instruct"]
    with pytest.raises(ChatTemplateError, match=r"EOS mismatch.*<\|eot_id\|>"):
        check_template(tok, plan, [tok.convert_tokens_to_ids("<|end_of_text|>")], reasoning=False)


def test_unstable_generation_prompt_is_refused_naming_template_and_turn():
    # a template whose generation prompt is not how it renders the assistant header: no span can be derived
    tok = family_tokenizer("chatml (dolphin)")
    tok.chat_template = template_text("chatml (dolphin)").replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant:\n'")
    plan = make_plan(tok, "my-template")
    with pytest.raises(TurnError, match=r"my-template \(sha256 [0-9a-f]+\): turn 1 \(assistant\) does not extend the prompt"):
        encode(tok, plan, SHAPES["single"])
    with pytest.raises(ChatTemplateError, match="turn 1"):
        check_template(tok, plan, [tok.convert_tokens_to_ids("<|im_end|>")], reasoning=False)


def test_template_errors_become_row_errors():
    tok = family_tokenizer("mistral-7b-instruct-v0.3")  # refuses non-alternating roles
    plan = make_plan(tok, "mistral")
    with pytest.raises(TurnError) as info:
        encode(tok, plan, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}])
    assert info.value.reason == "template_error" and "alternate" in str(info.value)
    with pytest.raises(TurnError) as info:
        encode(tok, plan, [{"role": "user", "content": "only a question"}])
    assert info.value.reason == "no_assistant_turn"
