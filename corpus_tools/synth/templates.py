"""Versioned prompt templates: ``prompts/<task>_<version>.j2`` (Jinja) -> chat messages.

A template renders the user message for one chunk from: title, abstract, text, paper_id, year,
citation ("arXiv:2401.00417 (2024)"), authors ("Smith et al."), cite_as ("Smith et al. (2024)",
or the arXiv citation when the authors are unknown) and n_items. Its id (``qa_v1``) and a short hash of its
text go into every item's provenance, so a changed prompt is visible in the data. Change a
shipped prompt by adding a new version file, never by editing an old one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .chunking import Chunk
from .citation import author_citation, short_authors

PACKAGE_PROMPTS = Path(__file__).resolve().parent / "prompts"
TASKS = ("qa", "qa_reasoning", "mcq")


@dataclass(frozen=True)
class PromptTemplate:
    """One loaded template file."""

    task: str
    version: str
    source: str
    path: Path

    @property
    def id(self) -> str:
        return f"{self.task}_{self.version}"

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:12]

    def render(self, chunk: Chunk, n_items: int) -> list[dict[str, str]]:
        """Chat messages asking for ``n_items`` items from ``chunk``."""
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
        text = env.from_string(self.source).render(
            title=chunk.title or "(untitled)",
            abstract=chunk.abstract,
            text=chunk.text,
            paper_id=chunk.paper_id,
            year=chunk.year,
            citation=citation(chunk),
            authors=short_authors(chunk.authors),
            cite_as=author_citation(chunk.authors, chunk.year) or citation(chunk),
            n_items=n_items,
        )
        return [{"role": "user", "content": text.strip()}]


def citation(chunk: Chunk) -> str:
    """How items may refer to the source paper, e.g. ``arXiv:2401.00417 (2024)``."""
    return f"arXiv:{chunk.paper_id}" + (f" ({chunk.year})" if chunk.year else "")


def load_template(task: str, version: str, prompt_dir: str | Path | None = None) -> PromptTemplate:
    """Load ``<task>_<version>.j2`` from ``prompt_dir`` (if it has it) or the shipped prompts."""
    if task not in TASKS:
        raise ValueError(f"unknown synth task {task!r}; tasks are {', '.join(TASKS)}")
    name = f"{task}_{version}.j2"
    folders = ([Path(prompt_dir)] if prompt_dir else []) + [PACKAGE_PROMPTS]
    for folder in folders:
        path = folder / name
        if path.is_file():
            return PromptTemplate(task, version, path.read_text(encoding="utf-8"), path)
    looked = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(f"prompt template {name} not found (looked in {looked})")
