"""One shard of work: chunks x tasks -> teacher requests -> parsed, validated, deduplicated records."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .backends.base import Backend, GenRequest, GenResult
from .chunking import Chunk
from .parsing import ParseError, extract_items
from .records import Provenance, mcq_record, qa_record
from .schemas import response_schema, schema_name
from .templates import PromptTemplate
from .validate import (
    MALFORMED_JSON,
    NO_ITEMS,
    REQUEST_FAILED,
    Decontaminator,
    DUPLICATE_QUESTION,
    QuestionDeduper,
    Rejected,
    validate_mcq,
    validate_qa,
)

KIND_OF_TASK = {"qa": "qa", "qa_reasoning": "qa", "mcq": "mcq"}


class SynthError(RuntimeError):
    """A shard could not be generated (e.g. the teacher server is unreachable); nothing was committed."""


def request_seed(run_seed: int, chunk: Chunk, task: str) -> int:
    """Per-request seed derived from the run seed, the chunk and the task (31-bit, stable)."""
    digest = hashlib.sha256(f"{run_seed}|{chunk.key}|{task}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class ShardResult:
    """Records and counts of one shard."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"qa": [], "mcq": []})
    generated: Counter = field(default_factory=Counter)  # parsed raw items per task
    kept: Counter = field(default_factory=Counter)  # per task
    rejected: Counter = field(default_factory=Counter)  # per reason
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: every rejection: chunk, task, reason, detail, the raw reply (capped) and the parsed item if any
    rejections: list[dict[str, Any]] = field(default_factory=list)
    #: replies per structured-output mode actually used (json_schema / json_schema_portable / none)
    structured: Counter = field(default_factory=Counter)
    #: replies cut off at max_new_tokens
    truncated: int = 0

    @property
    def examples(self) -> list[dict[str, Any]]:
        """A few rejections, for the log."""
        return self.rejections[:5]

    def ledger_entry(self, chunks: Sequence[Chunk]) -> dict[str, Any]:
        return {
            "chunks": [c.key for c in chunks],
            "requests": self.requests,
            "generated": dict(self.generated),
            "kept": dict(self.kept),
            "rejected": dict(self.rejected),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "structured": dict(self.structured),
            "truncated": self.truncated,
        }


@dataclass
class Synthesizer:
    """Turns chunks into records with one backend, the task templates and the shared filters."""

    backend: Backend
    templates: dict[str, PromptTemplate]
    section: Any  # SynthSection
    run_seed: int
    dedupers: dict[str, QuestionDeduper]
    decontaminator: Decontaminator
    #: a shard in which more requests than this fail is not committed (the stage stops; rerun resumes)
    max_failed_fraction: float = 0.5

    def n_items(self, task: str) -> int:
        return self.section.mcq_per_chunk if task == "mcq" else self.section.qa_per_chunk

    def requests_for(self, chunks: Sequence[Chunk]) -> list[tuple[Chunk, str, GenRequest]]:
        s = self.section
        structured = getattr(s, "structured_output", True)
        out = []
        for chunk in chunks:
            for task in s.tasks:
                n = self.n_items(task)
                messages = self.templates[task].render(chunk, n)
                req = GenRequest(
                    messages, request_seed(self.run_seed, chunk, task), s.max_new_tokens, s.temperature, s.top_p,
                    schema=response_schema(task, n, s.max_new_tokens) if structured else None, schema_name=schema_name(task),
                )
                out.append((chunk, task, req))
        return out

    def run_shard(self, chunks: Sequence[Chunk], on_result: Callable[[GenResult], None] | None = None) -> ShardResult:
        """Generate and filter one shard; raises SynthError when most requests failed.

        ``on_result`` is called once per finished request as the backend produces it (progress).
        """
        planned = self.requests_for(chunks)
        results = self.backend.generate([req for _, _, req in planned], on_result=on_result)
        if len(results) != len(planned):
            raise SynthError(f"backend {self.backend.name} returned {len(results)} results for {len(planned)} requests")
        failed = [r for r in results if not r.ok]
        if planned and len(failed) > self.max_failed_fraction * len(planned):
            raise SynthError(
                f"{len(failed)} of {len(planned)} teacher requests failed (last error: {failed[-1].error}); "
                "nothing of this shard was kept; fix the teacher and rerun to resume"
            )
        out = ShardResult(requests=len(planned))
        for (chunk, task, req), res in zip(planned, results):
            out.prompt_tokens += res.prompt_tokens
            out.completion_tokens += res.completion_tokens
            if res.ok:
                out.structured[res.structured] += 1
                out.truncated += res.finish_reason == "length"
            self._collect(out, chunk, task, req, res)
        return out

    def _reject(
        self, out: ShardResult, reason: str, task: str, chunk: Chunk, detail: str, res: GenResult, item: Any = None, index: int | None = None
    ) -> None:
        out.rejected[reason] += 1
        cap = getattr(self.section, "rejected_text_chars", 2000)
        text = res.text or ""
        out.rejections.append({
            "chunk": chunk.key,
            "paper_id": chunk.paper_id,
            "task": task,
            "reason": reason,
            "detail": detail[:500],
            "item_index": index,
            "item": item,
            "raw": text[:cap],
            "raw_chars": len(text),
            "structured": res.structured,
            "finish_reason": res.finish_reason,
        })

    def _collect(self, out: ShardResult, chunk: Chunk, task: str, req: GenRequest, res: GenResult) -> None:
        if not res.ok:
            self._reject(out, REQUEST_FAILED, task, chunk, res.error or "", res)
            return
        try:
            raw_items = extract_items(res.text or "")
        except ParseError as exc:
            cut = " (cut off at max_new_tokens)" if res.finish_reason == "length" else ""
            self._reject(out, MALFORMED_JSON, task, chunk, f"{exc}{cut}", res)
            return
        if not raw_items:
            self._reject(out, NO_ITEMS, task, chunk, "empty list", res)
            return
        tmpl = self.templates[task]
        prov = Provenance(
            chunk, task, self.backend.name, self.backend.model, tmpl.id, tmpl.sha, req.sampling(),
            res.seed if res.seed is not None else req.seed,
        )
        kind = KIND_OF_TASK[task]
        for index, raw in enumerate(raw_items):
            out.generated[task] += 1
            try:
                if task == "mcq":
                    item = validate_mcq(raw, chunk, self.section.max_option_length_ratio)
                else:
                    item = validate_qa(raw, chunk, reasoning=task == "qa_reasoning")
                self.decontaminator.check(item.text())
                if self.dedupers[task].check(item.question):
                    raise Rejected(DUPLICATE_QUESTION)
            except Rejected as rej:
                self._reject(out, rej.reason, task, chunk, str(rej), res, item=raw, index=index)
                continue
            record = mcq_record(item, prov, index) if task == "mcq" else qa_record(item, prov, index)  # type: ignore[arg-type]
            out.records[kind].append(record)
            out.kept[task] += 1
