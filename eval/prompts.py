"""The prompts, written once as Jinja templates so the lm-eval export uses the very same text.

* ``LETTER_TEMPLATE``: question + lettered options, ending in "Answer:"; the scored continuations
  are " A" .. " D" (lm-eval's default ``target_delimiter`` is one space).
* ``CHOICES_TEMPLATE``: question only, ending in "Answer:"; the continuations are " <option text>".
* ``generate_messages``: the AstroMLab "full instruct" chat prompt asking for a JSON answer.

Rendering uses the same Jinja settings as lm-eval (``StrictUndefined``, ``keep_trailing_newline``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import BaseLoader, Environment, StrictUndefined, Template

from .data import LETTERS, Question

#: Bump when a prompt changes: it is part of every cache key.
PROMPT_VERSION = 1

#: Joins the prompt and an answer continuation (lm-eval's default target_delimiter).
TARGET_DELIMITER = " "

PREAMBLE = "The following is a multiple choice question about astronomy and astrophysics."

LETTER_TEMPLATE = (
    PREAMBLE + " Answer with the letter of the correct option.\n\n"
    "Question: {{question}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:"
)

CHOICES_TEMPLATE = PREAMBLE + "\n\nQuestion: {{question}}\nAnswer:"

GENERATE_SYSTEM = (
    "You are an expert in astronomy and astrophysics. Answer multiple choice questions accurately."
)

GENERATE_INSTRUCTION = (
    'Reply with a JSON object only, in the form {"ANSWER": "X", "EXPLANATION": "..."}, where X is the '
    "letter (A, B, C or D) of the correct option and EXPLANATION is one or two sentences."
)

_ENV = Environment(loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True)


@lru_cache(maxsize=8)
def _compiled(template: str) -> Template:
    return _ENV.from_string(template)


def question_fields(q: Question) -> dict[str, Any]:
    """The fields the templates see: question, A, B, C, D."""
    return {"question": q.question, **dict(zip(LETTERS, q.options))}


def render(template: str, q: Question) -> str:
    """Render a template for one question."""
    return _compiled(template).render(**question_fields(q))


def letter_prompt(q: Question) -> str:
    """The `letter` method's prompt (also the exported lm-eval task's ``doc_to_text``)."""
    return render(LETTER_TEMPLATE, q)


def choices_prompt(q: Question) -> str:
    """The `choices` method's context (the options are scored as continuations)."""
    return render(CHOICES_TEMPLATE, q)


def generate_messages(q: Question) -> list[dict[str, str]]:
    """Chat messages for the `generate` method."""
    options = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, q.options))
    user = f"Question: {q.question}\n{options}\n\n{GENERATE_INSTRUCTION}"
    return [{"role": "system", "content": GENERATE_SYSTEM}, {"role": "user", "content": user}]


def generate_prompt(tokenizer: Any, q: Question, thinking: bool) -> str:
    """Chat-template prompt (thinking on/off); plain text when the tokenizer has no template."""
    messages = generate_messages(q)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
        )
    return f"{messages[0]['content']}\n\n{messages[1]['content']}\n\n"
