"""Conversations for SFT: <think> reasoning modes, and the check that a saved checkpoint renders the same.

Reasoning format (the synth stage's contract, DESIGN.md): an assistant message carries its
reasoning chain *inline* at the start of ``content``: ``"<think>\\n...\\n</think>\\n\\nAnswer"``.
Inline is chosen over a separate ``reasoning_content`` field because every chat template
renders ``content``, while templates that do not know ``reasoning_content`` (e.g. Llama-3.1's)
silently drop it. Records that use ``reasoning_content`` are accepted and converted to inline.

Both modes are trained: an example keeps its chain with probability ``reasoning_fraction``
and then gets the *thinking* system-prompt switch; otherwise the chain is removed and it gets
the *direct* switch (examples without a chain always get the direct switch). The same system
prompts select the mode at inference.

Assistant masks and the template checks are in :mod:`astrosage.training.chat_masks`; the
template's source, special tokens and stop tokens in :mod:`astrosage.training.chat_setup`.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from .chat_masks import ChatTemplateError

THINK_RE = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


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


def verify_saved(model_dir: str | Path, tokenizer) -> None:
    """The saved checkpoint carries the same chat template and stop tokens we trained with."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(model_dir))
    if saved.chat_template != tokenizer.chat_template:
        raise ChatTemplateError(f"{model_dir}: saved chat template differs from the one used in training")
    if saved.eos_token_id != tokenizer.eos_token_id:
        raise ChatTemplateError(f"{model_dir}: saved eos token {saved.eos_token!r} differs from training's {tokenizer.eos_token!r}")
