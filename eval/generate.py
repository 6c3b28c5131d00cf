"""`generate` (AstroMLab "full instruct"): the model answers in JSON, optionally thinking first.

The chat-template prompt asks for ``{"ANSWER": "X", "EXPLANATION": "..."}``. Any ``<think>…</think>``
block is dropped, the letter is taken with a regex, and when that fails the prediction falls back
to the letter probabilities (the `letter` method's scores, which also give the calibration
numbers). Generation is greedy, batched with left padding through transformers, or through
vLLM (``backend="vllm"``, imported only when chosen).
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Sequence

from .data import LETTERS, Question
from .modeling import LoadedModel
from .prompts import generate_prompt, letter_prompt
from .scoring import forward_logprobs, length_batches, letter_requests

BACKENDS = ("transformers", "vllm")

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_ANSWER_RE = re.compile(r"""["']?(?i:answer)["']?\s*[:=]\s*["']?\s*\(?([A-D])\)?(?![A-Za-z])""")
_EXPLANATION_RE = re.compile(r"""["']?(?i:explanation)["']?\s*[:=]\s*"((?:[^"\\]|\\.)*)""", re.DOTALL)


class BackendNotAvailable(RuntimeError):
    """The chosen generation backend is not installed."""


def strip_thinking(text: str) -> str:
    """Drop closed ``<think>…</think>`` blocks; an unclosed one (budget ran out) leaves nothing."""
    text = _THINK_RE.sub("", text)
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    return text.strip()


def extract_answer(text: str) -> tuple[str | None, str | None]:
    """(letter, explanation) from a reply such as ``{"ANSWER": "B", "EXPLANATION": "..."}``."""
    body = strip_thinking(text)
    match = _ANSWER_RE.search(body)
    letter = match.group(1) if match else None
    expl = _EXPLANATION_RE.search(body)
    return letter, (expl.group(1).strip() if expl else None)


def _clean(tokenizer: Any, text: str) -> str:
    """Cut at the first end-of-turn token and drop the remaining special tokens (keeping <think>)."""
    stops = [t for t in (tokenizer.eos_token, "<|eot_id|>", "<|im_end|>", "<|end_of_text|>") if t]
    for stop in stops:
        text = text.split(stop, 1)[0]
    for special in getattr(tokenizer, "all_special_tokens", []):
        if special not in ("<think>", "</think>"):
            text = text.replace(special, "")
    return text


def _generate_transformers(lm: LoadedModel, prompts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    tok = lm.tokenizer
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    with torch.inference_mode():
        out = lm.model.generate(
            input_ids=enc["input_ids"].to(lm.device),
            attention_mask=enc["attention_mask"].to(lm.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    new = out[:, enc["input_ids"].shape[1]:]
    return [_clean(tok, tok.decode(row, skip_special_tokens=False)) for row in new]


def iter_generate(
    lm: LoadedModel, questions: Sequence[Question], batch_size: int, max_new_tokens: int, thinking: bool
) -> Iterator[list[dict]]:
    """Per batch: generated reply, extracted letter (or None) and the letter log-probabilities."""
    prompts = [generate_prompt(lm.tokenizer, q, thinking) for q in questions]
    letters = letter_requests(lm.tokenizer, questions)
    lengths = [len(ids) for ids in lm.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    for batch in length_batches(lengths, batch_size):
        replies = _generate_transformers(lm, [prompts[i] for i in batch], max_new_tokens)
        seqs = [letters[i].input_ids for i in batch]
        logprobs = forward_logprobs(lm, seqs, [[len(s) - 1] for s in seqs])
        rows = []
        for row, (i, reply) in enumerate(zip(batch, replies)):
            letter, explanation = extract_answer(reply)
            rows.append(
                {
                    "index": questions[i].index,
                    "scores": logprobs[row][0, letters[i].targets].tolist(),
                    "generation": reply,
                    "extracted": letter,
                    "explanation": explanation,
                }
            )
        yield rows


def generate_vllm(
    model_path: str, questions: Sequence[Question], max_new_tokens: int, thinking: bool, dtype: str = "auto"
) -> Iterator[list[dict]]:
    """The same rows through vLLM (GPU clusters): greedy replies + top-20 next-token letter log-probs."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise BackendNotAvailable("the vLLM backend is not available: pip install vllm (or use --backend transformers)") from None
    llm = LLM(model=model_path, dtype=dtype)
    tok = llm.get_tokenizer()
    prompts = [generate_prompt(tok, q, thinking) for q in questions]
    replies = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_new_tokens))
    probes = llm.generate([letter_prompt(q) for q in questions], SamplingParams(temperature=0.0, max_tokens=1, logprobs=20))
    rows = []
    for q, reply, probe in zip(questions, replies, probes):
        letter, explanation = extract_answer(reply.outputs[0].text)
        top = probe.outputs[0].logprobs[0] if probe.outputs[0].logprobs else {}
        by_text = {lp.decoded_token.strip(): lp.logprob for lp in top.values() if lp.decoded_token}
        scores = [by_text.get(x, -1e4) for x in LETTERS]
        rows.append({"index": q.index, "scores": scores, "generation": reply.outputs[0].text, "extracted": letter, "explanation": explanation})
    yield rows


def require_backend(backend: str) -> None:
    """Fail early and clearly if ``backend`` is unknown or not installed."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise BackendNotAvailable("the vLLM backend is not available: pip install vllm (or use --backend transformers)")
