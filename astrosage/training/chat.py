"""Conversations for SFT: <think> reasoning modes and chat-template / EOS consistency checks.

Reasoning format (the synth stage's contract, DESIGN.md): an assistant message carries its
reasoning chain *inline* at the start of ``content``: ``"<think>\\n...\\n</think>\\n\\nAnswer"``.
Inline is chosen over a separate ``reasoning_content`` field because every chat template
renders ``content``, while templates that do not know ``reasoning_content`` (e.g. Llama-3.1's)
silently drop it. Records that use ``reasoning_content`` are accepted and converted to inline.

Both modes are trained: an example keeps its chain with probability ``reasoning_fraction``
and then gets the *thinking* system-prompt switch; otherwise the chain is removed and it gets
the *direct* switch (examples without a chain always get the direct switch). The same system
prompts select the mode at inference.

:func:`check_chat_template` refuses, before any training, a tokenizer whose chat template
cannot train what we need: no template, no ``{% generation %}`` markers (for
assistant_only_loss), an end-of-turn token outside the loss mask, an end-of-turn token that
is not one of the model's stop (EOS) tokens, or a template that drops <think> blocks.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

THINK_RE = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


class ChatTemplateError(ValueError):
    """The chat template / EOS setup would train a broken model; refuse before training."""


# ------------------------------------------------------------------------------ reasoning modes
def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Plain {role, content} messages; ``reasoning_content`` moved inline as a <think> block."""
    out = []
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant", "tool") or not isinstance(content, str):
            raise ValueError(f"bad message {m!r}: need role in system/user/assistant/tool and string content")
        reasoning = m.get("reasoning_content")
        if role == "assistant" and reasoning and "<think>" not in content:
            content = f"<think>\n{reasoning.strip()}\n</think>\n\n{content.strip()}"
        out.append({"role": role, "content": content})
    return out


def has_reasoning(messages: list[dict[str, str]]) -> bool:
    return any(m["role"] == "assistant" and "<think>" in m["content"] for m in messages)


def strip_reasoning(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{**m, "content": THINK_RE.sub("", m["content"]).strip()} if m["role"] == "assistant" else m for m in messages]


def with_system_switch(messages: list[dict[str, str]], switch: str) -> list[dict[str, str]]:
    """Prepend the mode switch to the system prompt (adding one if there is none)."""
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": f"{switch}\n\n{messages[0]['content']}".strip()}
        return [first, *messages[1:]]
    return [{"role": "system", "content": switch}, *messages]


def reasoning_mode(
    messages: list[dict[str, Any]], index: int, seed: int, fraction: float, thinking_prompt: str, direct_prompt: str
) -> list[dict[str, str]]:
    """Normalize one conversation and choose its mode (deterministic in ``seed`` and ``index``)."""
    messages = normalize_messages(messages)
    keep = has_reasoning(messages) and random.Random(f"{seed}:{index}").random() < fraction
    if keep:
        return with_system_switch(messages, thinking_prompt)
    return with_system_switch(strip_reasoning(messages), direct_prompt)


# ------------------------------------------------------------------------------ template checks
def stop_token_ids(model_dir: str | Path, tokenizer) -> list[int]:
    """Token ids at which generation stops: generation_config.json's eos_token_id, else config's."""
    from transformers import AutoConfig, GenerationConfig

    ids: Any = None
    try:
        ids = GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
    except (OSError, ValueError):
        ids = None
    if ids is None:
        ids = getattr(AutoConfig.from_pretrained(str(model_dir)), "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids]) if i is not None]


def _render(tokenizer, messages, mask: bool) -> dict:
    return tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=mask, add_generation_prompt=False
    )


def check_chat_template(tokenizer, model_dir: str | Path, assistant_only_loss: bool, reasoning: bool) -> dict[str, Any]:
    """Refuse (ChatTemplateError) a template/EOS setup that would train a broken model.

    Returns a summary (end-of-turn token, stop ids) for the stage's metrics.
    """
    template = tokenizer.chat_template
    if not template:
        raise ChatTemplateError(f"the tokenizer of {model_dir} has no chat template; SFT needs one (set model.tokenizer to a tokenizer with a chat template)")
    markers = re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None
    if assistant_only_loss and not markers:
        raise ChatTemplateError(
            "sft.assistant_only_loss is on but the chat template has no {% generation %}...{% endgeneration %} markers, so "
            "assistant tokens cannot be found; add the markers around the assistant turn (content + end-of-turn token) "
            "or set sft.assistant_only_loss=false"
        )
    probe = [{"role": "user", "content": "What is a parsec?"}, {"role": "assistant", "content": "About 3.26 light-years."}]
    rendered = _render(tokenizer, probe, mask=assistant_only_loss)
    ids = list(rendered["input_ids"])
    if assistant_only_loss:
        mask = list(rendered["assistant_masks"])
        trained = [i for i, m in enumerate(mask) if m]
        if not trained:
            raise ChatTemplateError("the chat template's {% generation %} block marks no assistant tokens")
        end_id = ids[trained[-1]]
    else:
        end_id = ids[-1]
    end_tok = tokenizer.convert_ids_to_tokens(end_id)
    if end_id not in tokenizer.all_special_ids:
        raise ChatTemplateError(
            f"the chat template does not end the assistant turn with a special end-of-turn token inside the trained span "
            f"(last trained token is {end_tok!r}); the model would never learn to stop. Put the end-of-turn token "
            "(e.g. <|eot_id|>) inside {% generation %}...{% endgeneration %}"
        )
    stops = stop_token_ids(model_dir, tokenizer)
    if end_id not in stops:
        names = [tokenizer.convert_ids_to_tokens(i) for i in stops]
        raise ChatTemplateError(
            f"chat template / EOS mismatch: assistant turns end with {end_tok!r} (id {end_id}) but the model stops generating "
            f"only at {names} (ids {stops}, generation_config.json eos_token_id); a model trained like this never stops. "
            f"Add {end_id} to eos_token_id in {Path(str(model_dir)) / 'generation_config.json'} or use a template whose turns end with one of {names}"
        )
    if reasoning:
        think = [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "<think>\nstep one\n</think>\n\nA1"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "<think>\nstep two\n</think>\n\nA2"},
        ]
        text = tokenizer.apply_chat_template(think, tokenize=False)
        if "step one" not in text or "step two" not in text or text.count("<think>") < 2:
            raise ChatTemplateError(
                "the chat template drops <think> reasoning from assistant turns (some templates strip it from earlier "
                "turns); the reasoning chains would not be trained. Use a template that renders assistant content verbatim"
            )
        if assistant_only_loss:
            r = _render(tokenizer, think, mask=True)
            trained_text = tokenizer.decode([t for t, m in zip(r["input_ids"], r["assistant_masks"]) if m])
            if "step one" not in trained_text or "step two" not in trained_text:
                raise ChatTemplateError("the chat template puts <think> reasoning outside {% generation %}; it would not be trained")
    return {"end_of_turn_token": end_tok, "end_of_turn_id": end_id, "stop_token_ids": stops}


def verify_saved(model_dir: str | Path, tokenizer) -> None:
    """The saved checkpoint carries the same chat template and stop tokens we trained with."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(model_dir))
    if saved.chat_template != tokenizer.chat_template:
        raise ChatTemplateError(f"{model_dir}: saved chat template differs from the one used in training")
    if saved.eos_token_id != tokenizer.eos_token_id:
        raise ChatTemplateError(f"{model_dir}: saved eos token {saved.eos_token!r} differs from training's {tokenizer.eos_token!r}")
