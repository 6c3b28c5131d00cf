"""The SFT chat template: where it comes from, the special tokens it needs, the stop tokens, and
untrained embedding rows of those tokens.

``sft.chat_template`` picks the source:

* ``model``     the tokenizer's own template (an instruct model, or a base model that has one);
* ``instruct``  ``model.base_instruct``'s template, its missing special tokens and its stop tokens:
                for base models without a template (Llama-3.1-8B base, as AstroSage-8B), so the
                SFT checkpoint and the instruct model it is merged with render chats alike;
* a built-in    ``chatml`` or ``llama3`` (``astrosage/resources/chat_templates/``);
* a file        a path to a ``.jinja`` file (its special tokens must already be in the tokenizer).

Base models ship the chat special tokens with *untrained* embedding rows (Llama-3 base:
``<|eot_id|>``, ``<|start_header_id|>``, ... are near zero); training from them makes the model
emit garbage at those positions. :func:`init_untrained_rows` finds the template's special tokens
whose rows are untrained (norm far below the typical row, or several rows identical) and sets them
to the mean of the trained rows (as unsloth does), in the input and the output embeddings.

TRL's ``clone_chat_template`` is not used: it always resizes the embeddings to ``len(tokenizer)``
rounded to 64, which would shrink models whose embedding matrix is padded beyond the vocabulary
(Qwen2.5: 151,936 rows for 151,665 tokens) and it keeps a single EOS as the stop token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("astrosage")

#: built-in templates: file name, special tokens they need, their end-of-turn (stop) token
BUILTIN_TEMPLATES: dict[str, dict[str, Any]] = {
    "chatml": {"file": "chatml.jinja", "tokens": ["<|im_start|>", "<|im_end|>"], "stop": "<|im_end|>"},
    "llama3": {"file": "llama3.jinja", "tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "stop": "<|eot_id|>"},
}


@dataclass
class TemplateSource:
    """A resolved chat template and what the tokenizer/model need to use it."""

    kind: str  # model | instruct | builtin | file
    origin: str  # for messages: "the tokenizer of <path>", "built-in 'chatml'", ...
    template: str | None
    add_tokens: list[str] = field(default_factory=list)  # special tokens to add when missing
    stop_tokens: list[str] = field(default_factory=list)  # token strings that must stop generation
    eos_token: str | None = None  # replaces the tokenizer's EOS (instruct: the instruct model's)


def builtin_template(name: str) -> str:
    spec = BUILTIN_TEMPLATES[name]
    return resources.files("astrosage.resources").joinpath("chat_templates", spec["file"]).read_text(encoding="utf-8")


def _generation_eos_ids(model_dir: str) -> list[int]:
    from transformers import GenerationConfig

    try:
        ids = GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
    except (OSError, ValueError):
        return []
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def resolve_template(setting: str, tokenizer, model_ref: str, instruct_ref: Callable[[], str | None]) -> TemplateSource:
    """Resolve ``sft.chat_template`` (see the module docstring) without changing the tokenizer."""
    if setting == "model":
        return TemplateSource("model", f"the chat template of {model_ref}", tokenizer.chat_template)
    if setting in BUILTIN_TEMPLATES:
        spec = BUILTIN_TEMPLATES[setting]
        return TemplateSource("builtin", f"built-in chat template {setting!r}", builtin_template(setting), list(spec["tokens"]), [spec["stop"]])
    if setting == "instruct":
        ref = instruct_ref()
        if not ref:
            raise ValueError("sft.chat_template is 'instruct' but model.base_instruct is not set; set it or pick another sft.chat_template")
        from transformers import AutoTokenizer

        inst = AutoTokenizer.from_pretrained(ref)
        if not inst.chat_template:
            raise ValueError(f"sft.chat_template is 'instruct' but model.base_instruct ({ref}) has no chat template either")
        added = [t.content for t in inst.added_tokens_decoder.values() if t.special]
        stops = [inst.convert_ids_to_tokens(i) for i in _generation_eos_ids(ref)] or [inst.eos_token]
        if inst.eos_token and inst.eos_token not in stops:
            stops.append(inst.eos_token)
        return TemplateSource("instruct", f"the chat template of model.base_instruct ({ref})", inst.chat_template, added, stops, inst.eos_token)
    path = Path(setting).expanduser()
    if path.suffix in (".jinja", ".j2", ".txt") or path.exists():
        if not path.is_file():
            raise ValueError(f"sft.chat_template: file {setting!r} does not exist (resolved to {path.resolve()})")
        return TemplateSource("file", f"chat template file {path}", path.read_text(encoding="utf-8"))
    raise ValueError(
        f"sft.chat_template: {setting!r} is not 'model', 'instruct', a built-in ({', '.join(BUILTIN_TEMPLATES)}) or a .jinja file"
    )


def apply_template(tokenizer, source: TemplateSource) -> list[str]:
    """Put the template (and its missing special tokens, EOS) on the tokenizer; returns added tokens."""
    from tokenizers import AddedToken

    tokenizer.chat_template = source.template
    vocab = tokenizer.get_vocab()
    missing = [t for t in source.add_tokens if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": [AddedToken(t, special=True, normalized=False) for t in missing]}, replace_extra_special_tokens=False)
    if source.eos_token and source.eos_token != tokenizer.eos_token:
        if source.eos_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"extra_special_tokens": [source.eos_token]}, replace_extra_special_tokens=False)
            missing.append(source.eos_token)
        tokenizer.eos_token = source.eos_token
    return missing


def stop_token_ids(model_dir: str, tokenizer, source: TemplateSource) -> list[int]:
    """Ids at which the trained model will stop: generation_config's EOS ids, the tokenizer's EOS and
    the template source's stop tokens (mapped into this tokenizer)."""
    ids = set(_generation_eos_ids(model_dir))
    if not ids:
        from transformers import AutoConfig

        eos = getattr(AutoConfig.from_pretrained(str(model_dir)), "eos_token_id", None)
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None and source.kind != "model":
        ids.add(int(tokenizer.eos_token_id))
    for tok in source.stop_tokens:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is not None and tid != tokenizer.unk_token_id:
            ids.add(int(tid))
    return sorted(int(i) for i in ids)


# ------------------------------------------------------------------------------ model side
def _gathered(params):
    """DeepSpeed ZeRO-3 partitions parameters: gather them (rank 0 modifies) for the edit."""
    import contextlib

    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    return contextlib.nullcontext()


def resize_for(model, tokenizer) -> bool:
    """Grow the embeddings when the tokenizer has more tokens than rows (never shrink padded ones)."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        return True
    return False


def untrained_rows(weight, ids: list[int]) -> list[int]:
    """Rows among ``ids`` that look untrained: norm < 1e-3 × the median row norm, or identical rows."""
    import torch

    w = weight.detach().float()
    norms = w.norm(dim=1)
    median = float(norms.median())
    out = {i for i in ids if float(norms[i]) <= 1e-3 * max(median, 1e-12)}
    rest = [i for i in ids if i not in out]
    for a_idx, a in enumerate(rest):
        for b in rest[a_idx + 1 :]:
            if torch.equal(w[a], w[b]):
                out.update((a, b))
    return sorted(out)


def init_untrained_rows(model, tokenizer, token_ids: list[int], mode: str = "mean") -> list[str]:
    """Set untrained embedding rows of ``token_ids`` to the mean of the trained rows (input + output).

    ``mode``: ``mean`` (initialise) or ``error`` (refuse, naming the field). Returns the tokens fixed.
    """
    import torch

    emb = model.get_input_embeddings()
    out_emb = model.get_output_embeddings()
    tied = out_emb is None or out_emb.weight is emb.weight
    params = [emb.weight] + ([] if tied else [out_emb.weight])
    fixed: list[str] = []
    with _gathered(params), torch.no_grad():
        bad = untrained_rows(emb.weight, sorted(set(token_ids)))
        if not bad:
            return []
        names = tokenizer.convert_ids_to_tokens(bad)
        if mode == "error":
            raise ValueError(
                f"the chat template's special tokens {names} have untrained embedding rows in the model; SFT from them "
                "makes the model emit garbage. Set sft.init_untrained_tokens: mean to initialise them from the mean of the trained rows"
            )
        for weight in params:
            keep = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
            keep[bad] = False
            mean = weight[keep].float().mean(dim=0).to(weight.dtype)
            weight[bad] = mean
        fixed = list(names)
    log.info("sft: initialised untrained embedding rows of %s from the mean of the trained rows", fixed)
    return fixed


def template_token_ids(tokenizer, plan_template: str, probe: list[dict]) -> list[int]:
    """Special-token ids the template writes when rendering ``probe`` (headers, end-of-turn, BOS)."""
    ids = tokenizer.apply_chat_template(probe, chat_template=plan_template, tokenize=True, return_dict=False)
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    return sorted({int(i) for i in ids if int(i) in special})


def set_stop_tokens(model, stop_ids: list[int]) -> None:
    """The saved generation_config stops at every id in ``stop_ids``."""
    current = model.generation_config.eos_token_id
    have = [int(i) for i in (current if isinstance(current, (list, tuple)) else [current] if current is not None else [])]
    merged = have + [i for i in stop_ids if i not in have]
    model.generation_config.eos_token_id = merged[0] if len(merged) == 1 else merged
