"""Assistant-token masks for SFT on any chat template, and the template checks that guard them.

Which tokens does an assistant turn have to learn? Library first, in this order:

1. ``markers``: the template carries ``{% generation %}`` markers: transformers'
   ``return_assistant_tokens_mask`` gives the mask.
2. ``trl``: TRL ships a marked copy of this exact template (``get_training_chat_template``, ~30
   known templates: Qwen2.5/Qwen3, Gemma, Phi-3, Llama-3.0, DeepSeek, ...): as 1, with that copy.
3. ``derived``: any other template (Llama-3.1/3.2/3.3, generic ChatML, Mistral, ...). The
   conversation is rendered prefix by prefix: the span of assistant turn *i* is the text that
   ``render(messages[:i+1])`` adds after ``render(messages[:i], add_generation_prompt=True)``,
   i.e. exactly what the model must generate after the prompt it sees at inference: the content
   and the end-of-turn token (plus whatever whitespace/EOS the template writes after it), never
   the next role header. Each span is checked against the full rendering (prefix stability) and
   must contain the turn's content. A turn that renders differently once later turns follow
   (e.g. a template that drops earlier turns' ``<think>``) is trained in an example of its own
   (the conversation up to that turn), where it is the last turn and renders as at inference.

Templates that drop or move the system message (Mistral-v0.3 renders it only before the last user
message, so a conversation ending with an assistant turn loses it; Gemma-2 refuses it) get it
folded into the first user message, which is where those templates put it for a single turn.

:func:`check_template` probes the plan before any training and refuses (ChatTemplateError)
a template whose turns do not end with a special end-of-turn token inside the trained span,
whose end-of-turn token is not a stop token, which trains the next role header, or which drops
``<think>`` reasoning.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

log = logging.getLogger("astrosage")

Method = Literal["markers", "trl", "derived"]


class ChatTemplateError(ValueError):
    """The chat template / EOS setup would train a broken model; refuse before training."""


class TurnError(ValueError):
    """One conversation cannot be encoded with this template (the row is rejected, counted)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class MaskPlan:
    """How assistant masks are made for one tokenizer + template."""

    method: Method
    template: str  # the template rendered in training (TRL's marked copy for method "trl")
    name: str  # for messages: where the template came from + a short hash
    fold_system: bool = False  # system message folded into the first user message


@dataclass
class Encoded:
    """One training example: token ids, the assistant mask and where each trained turn ends."""

    input_ids: list[int]
    assistant_masks: list[int]
    turn_ends: list[int] = field(default_factory=list)  # token index just past each trained span


def template_name(template: str, origin: str) -> str:
    return f"{origin} (sha256 {hashlib.sha256(template.encode()).hexdigest()[:10]})"


def has_generation_markers(template: str) -> bool:
    from trl.chat_template_utils import has_generation_markers as trl_has_markers

    return trl_has_markers(template)


def make_plan(tokenizer, origin: str) -> MaskPlan:
    """Choose the mask method for ``tokenizer.chat_template`` (markers > TRL's copy > derived)."""
    template = tokenizer.chat_template
    if not template:
        raise ChatTemplateError(
            f"{origin} has no chat template; set sft.chat_template to 'instruct' (use model.base_instruct's), "
            "a .jinja file or a built-in ('chatml', 'llama3')"
        )
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()))
    name = template_name(template, origin)
    if has_generation_markers(template):
        return MaskPlan("markers", template, name)
    from trl.chat_template_utils import get_training_chat_template

    try:
        marked = get_training_chat_template(tokenizer)
    except ValueError:  # TRL has no marked copy of this template
        marked = None
    if marked:
        return MaskPlan("trl", marked, name)
    return MaskPlan("derived", template, name)


# ------------------------------------------------------------------------------ rendering
def _render(tokenizer, plan: MaskPlan, messages: Sequence[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        list(messages), chat_template=plan.template, tokenize=False, add_generation_prompt=generation_prompt
    )


def fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """System message text prepended to the first user message (for templates that drop/move it)."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    for i, m in enumerate(rest):
        if m["role"] == "user":
            rest[i] = {**m, "content": f"{system}\n\n{m['content']}"}
            return rest
    return rest


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _content_missing(span_text: str, content: str) -> str | None:
    """What part of the assistant content the rendered span lacks ('reasoning', 'content') or None."""
    content = content.strip()
    if content in span_text:
        return None
    if "</think>" in content:
        chain, answer = content.split("</think>", 1)
        chain = chain.replace("<think>", "").strip()
        if chain and chain not in span_text:
            return "reasoning"
        if answer.strip() and answer.strip() not in span_text:
            return "content"
        return None  # both parts are there, the template re-formats the whitespace between them
    return "content"


def _tokens_in_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Mask of tokens inside the character spans (a token straddling a span's start counts; one
    running past its end does not, so a partial match never trains the next header) + span ends."""
    import bisect

    mask = [0] * len(offsets)
    ends: list[int] = []
    token_ends = [e for _, e in offsets]  # non-decreasing
    for start, end in spans:
        last = -1
        for t in range(bisect.bisect_right(token_ends, start), len(offsets)):
            s, e = offsets[t]
            if e > end:
                break
            if s == e:  # zero-width token (no characters)
                continue
            mask[t] = 1
            last = t
        if last >= 0:
            ends.append(last + 1)
    return mask, ends


def _tokenize(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _derived(tokenizer, plan: MaskPlan, messages: list[dict]) -> list[Encoded]:
    full = _render(tokenizer, plan, messages)
    stable: list[tuple[int, int]] = []
    own_example: list[int] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        if i == 0:
            raise TurnError("assistant_first", "the conversation starts with an assistant turn (no prompt to answer)")
        before = _render(tokenizer, plan, messages[:i], generation_prompt=True)
        through = _render(tokenizer, plan, messages[: i + 1])
        if full.startswith(before) and through.startswith(before):
            end = _common_prefix_len(through, full)
            if _content_missing(full[len(before) : end], m["content"]) is None:
                stable.append((len(before), end))
                continue
        own_example.append(i)
    out: list[Encoded] = []
    if stable:
        ids, offsets = _tokenize(tokenizer, full)
        mask, ends = _tokens_in_spans(offsets, stable)
        out.append(Encoded(ids, mask, ends))
    for i in own_example:  # the turn as the last one: it renders as at inference
        before = _render(tokenizer, plan, messages[:i], generation_prompt=True)
        through = _render(tokenizer, plan, messages[: i + 1])
        if not through.startswith(before):
            raise TurnError(
                "not_prefix_stable",
                f"chat template {plan.name}: turn {i} (assistant) does not extend the prompt the template renders for it "
                f"(render(messages[:{i}], add_generation_prompt=True) is not a prefix of render(messages[:{i + 1}]))",
            )
        missing = _content_missing(through[len(before) :], messages[i]["content"])
        if missing is not None:
            what = "drops the <think> reasoning of" if missing == "reasoning" else "rewrites or drops the content of"
            raise TurnError(f"template_{missing}_dropped", f"chat template {plan.name} {what} turn {i} (assistant)")
        ids, offsets = _tokenize(tokenizer, through)
        mask, ends = _tokens_in_spans(offsets, [(len(before), len(through))])
        out.append(Encoded(ids, mask, ends))
    return out


def _marked(tokenizer, plan: MaskPlan, messages: list[dict]) -> list[Encoded]:
    out = tokenizer.apply_chat_template(
        messages, chat_template=plan.template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = list(out["input_ids"]), [int(m) for m in out["assistant_masks"]]
    ends = [t + 1 for t in range(len(mask)) if mask[t] and (t + 1 == len(mask) or not mask[t + 1])]
    return [Encoded(ids, mask, ends)]


def encode(tokenizer, plan: MaskPlan, messages: list[dict[str, Any]], assistant_only: bool = True) -> list[Encoded]:
    """Token ids + assistant masks for one conversation (one example, or more when turns must be split).

    With ``assistant_only=False`` every token is trained (the examples are the same).
    Raises TurnError when the conversation cannot be encoded with this template.
    """
    if plan.fold_system:
        messages = fold_system(messages)
    if not any(m["role"] == "assistant" for m in messages):
        raise TurnError("no_assistant_turn", "the conversation has no assistant turn")
    try:
        examples = _marked(tokenizer, plan, messages) if plan.method in ("markers", "trl") else _derived(tokenizer, plan, messages)
    except TurnError:
        raise
    except Exception as exc:  # jinja TemplateError (raise_exception in the template), TypeError, ...
        raise TurnError("template_error", f"chat template {plan.name} refused the conversation: {type(exc).__name__}: {exc}") from None
    for ex in examples:
        if not any(ex.assistant_masks):
            raise TurnError("no_trained_tokens", f"chat template {plan.name} marks no assistant tokens in this conversation")
        if not assistant_only:
            ex.assistant_masks = [1] * len(ex.input_ids)
    return examples


# ------------------------------------------------------------------------------ checks
_PROBE_SYSTEM = "You are an astronomy assistant."
_PROBE = [
    {"role": "user", "content": "What is a parsec?"},
    {"role": "assistant", "content": "About 3.26 light-years."},
    {"role": "user", "content": "And a kiloparsec?"},
    {"role": "assistant", "content": "A thousand parsecs."},
]
_PROBE_THINK = [
    {"role": "user", "content": "Distance for a parallax of 0.05 arcsec?"},
    {"role": "assistant", "content": "<think>\nd = 1/p = 20 pc\n</think>\n\nAbout 20 parsecs."},
    {"role": "user", "content": "And for 0.1 arcsec?"},
    {"role": "assistant", "content": "<think>\nd = 1/p = 10 pc\n</think>\n\nAbout 10 parsecs."},
]


def _special_ids(tokenizer) -> set[int]:
    return set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())


def _system_survives(tokenizer, plan: MaskPlan) -> bool:
    convo = [{"role": "system", "content": _PROBE_SYSTEM}, *_PROBE[:2]]
    try:
        full = _render(tokenizer, plan, convo)
        prompt = _render(tokenizer, plan, convo[:2], generation_prompt=True)
    except Exception:
        return False
    return _PROBE_SYSTEM in full and full.startswith(prompt)


def check_template(tokenizer, plan: MaskPlan, stop_ids: Sequence[int], reasoning: bool) -> tuple[MaskPlan, dict[str, Any]]:
    """Probe the plan on real-shaped conversations; refuse a setup that would train a broken model.

    Returns the (possibly system-folding) plan and a summary for the stage's metrics.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ChatTemplateError("SFT needs a fast (Rust) tokenizer for character offsets; this one is a slow tokenizer")
    if not _system_survives(tokenizer, plan):
        plan = MaskPlan(plan.method, plan.template, plan.name, fold_system=True)
        log.info("sft: chat template %s drops or moves system messages: folding the system prompt into the first user message", plan.name)
    special = _special_ids(tokenizer)
    stops = set(int(i) for i in stop_ids)
    probes = [("multi-turn", [{"role": "system", "content": _PROBE_SYSTEM}, *_PROBE]), ("single-turn", _PROBE[:2])]
    if reasoning:
        probes.append(("multi-turn with <think>", [{"role": "system", "content": _PROBE_SYSTEM}, *_PROBE_THINK]))
    end_tokens: set[str] = set()
    for label, convo in probes:
        try:
            examples = encode(tokenizer, plan, convo)
        except TurnError as exc:
            if exc.reason == "template_reasoning_dropped":
                raise ChatTemplateError(
                    f"{exc}: the chat template drops <think> reasoning from assistant turns, so the reasoning chains would "
                    "not be trained. Use a template that renders assistant content verbatim (sft.chat_template) or set "
                    "sft.reasoning_fraction=0"
                ) from None
            raise ChatTemplateError(f"{exc} (probe: {label} conversation)") from None
        trained_turns = 0
        for ex in examples:
            start = 0
            for end in ex.turn_ends:
                span = [t for t in range(start, end) if ex.assistant_masks[t]]
                start = end
                trained_turns += 1
                end_tokens.add(_check_turn_end(tokenizer, plan, ex.input_ids, span, special, stops, label))
            trained_text = tokenizer.decode([t for t, m in zip(ex.input_ids, ex.assistant_masks) if m])
            for m in convo:
                if m["role"] != "assistant" and m["content"] in trained_text:
                    raise ChatTemplateError(f"chat template {plan.name}: {m['role']} text is inside the trained span ({label} probe)")
        trained_all = "".join(tokenizer.decode([t for t, m in zip(ex.input_ids, ex.assistant_masks) if m]) for ex in examples)
        for i, m in enumerate(convo):
            missing = _content_missing(trained_all, m["content"]) if m["role"] == "assistant" else None
            if missing == "reasoning":
                raise ChatTemplateError(
                    f"chat template {plan.name} drops <think> reasoning from assistant turn {i} ({label} probe), so the "
                    "reasoning chains would not be trained. Use a template that renders assistant content verbatim "
                    "(sft.chat_template) or set sft.reasoning_fraction=0"
                )
            if missing:
                raise ChatTemplateError(f"chat template {plan.name}: the content of assistant turn {i} is not in the trained span ({label} probe)")
        expected = sum(1 for m in convo if m["role"] == "assistant")
        if trained_turns != expected:
            raise ChatTemplateError(
                f"chat template {plan.name}: found {trained_turns} trained assistant spans for {expected} assistant turns ({label} probe)"
            )
    return plan, {
        "chat_template": plan.name,
        "mask_method": plan.method,
        "system_prompt": "folded into first user message" if plan.fold_system else "system message",
        "end_of_turn_token": sorted(end_tokens)[0] if len(end_tokens) == 1 else sorted(end_tokens),
        "stop_token_ids": sorted(stops),
    }


def _check_turn_end(tokenizer, plan: MaskPlan, ids: list[int], span: list[int], special: set[int], stops: set[int], label: str) -> str:
    """The span ends with a special end-of-turn token that is a stop token; only whitespace/special tokens follow.

    The end-of-turn token is the first special token after the turn's last text token (so special
    tokens inside the content, such as ``<think>``, are not mistaken for it).
    """
    text = [t for t in span if ids[t] not in special and tokenizer.decode([ids[t]]).strip()]
    last = tokenizer.convert_ids_to_tokens(ids[span[-1]]) if span else None
    eot = next((t for t in span if text and t > text[-1] and ids[t] in special), None)
    if eot is None:
        raise ChatTemplateError(
            f"chat template {plan.name} does not end the assistant turn with a special end-of-turn token inside the trained "
            f"span (last trained token is {last!r}, {label} probe); the model would never learn to stop"
        )
    eot_tok = tokenizer.convert_ids_to_tokens(ids[eot])
    if ids[eot] not in stops:
        names = [tokenizer.convert_ids_to_tokens(i) for i in sorted(stops)]
        raise ChatTemplateError(
            f"chat template / EOS mismatch: assistant turns end with {eot_tok!r} (id {ids[eot]}) but the model stops generating "
            f"only at {names} (ids {sorted(stops)}, generation_config.json eos_token_id); a model trained like this never stops. "
            f"Add {ids[eot]} to eos_token_id in generation_config.json or use a template whose turns end with one of {names}"
        )
    return eot_tok
