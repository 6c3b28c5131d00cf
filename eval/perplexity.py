"""Held-out perplexity and bits per byte: did domain training help, whatever the MCQ score says?

    report = evaluate_perplexity("path/to/model", load_heldout(corpus / "heldout"), Path("out"),
                                 PerplexitySettings(window=2048, stride=1024))

Metric (per document, then pooled over the set):

* every token of the text is scored once: ``ids = [BOS or EOS] + tokenizer(text, no specials)``,
  so the first real token is predicted too (a tokenizer with neither special token leaves its
  first token unscored);
* long documents use the sliding window of the transformers perplexity guide: windows of
  ``window`` tokens; each window scores ``stride`` new tokens (at most ``window - 1``), each seen
  with at least ``window - stride`` tokens of context (the whole prefix while it fits);
* NLL = sum of ``-ln p(token | context)``; **perplexity** = ``exp(NLL / scored tokens)``
  (tokenizer-dependent); **bits per byte** = ``NLL / ln 2 / UTF-8 bytes of the text``
  (tokenizer-independent, so checkpoints compare fairly even when a tokenizer changes).

Windows from several documents go through the model together (``batch_size``, right padding).
Per-document results go to a resumable :class:`~eval.store.ScoreStore` keyed by model, text
set and settings, one row per finished document, so an interrupted run resumes and a finished
one is not redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from astrosage.core.artifacts import atomic_write_json, atomic_write_text
from astrosage.core.models import is_local_reference

from .store import ScoreStore

log = logging.getLogger("astrosage")

#: Bump when scoring changes in a way that alters stored values.
PERPLEXITY_VERSION = 1
LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


# ------------------------------------------------------------------------------ text sets


@dataclass
class TextSet:
    """Documents to score: (id, text) pairs, a content fingerprint and where they came from."""

    name: str
    docs: list[tuple[str, str]]
    fingerprint: str
    source: str
    n_total: int


def _content_fingerprint(docs: Sequence[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for doc_id, text in docs:
        h.update(hashlib.sha1(doc_id.encode("utf-8")).digest())
        h.update(hashlib.sha1(text.encode("utf-8")).digest())
    return h.hexdigest()


def _docs_from_dataset(ds: Any, text_field: str, where: str, limit: int | None) -> tuple[list[tuple[str, str]], int]:
    if text_field not in ds.column_names:
        raise ValueError(f"{where}: no text field {text_field!r} (fields: {', '.join(ds.column_names)}); set its text_field")
    ids = ds["id"] if "id" in ds.column_names else None
    docs = [(str(ids[i]) if ids is not None else str(i), t) for i, t in enumerate(ds[text_field]) if isinstance(t, str) and t.strip()]
    return (docs[:limit] if limit else docs), len(docs)


def load_heldout(path: Path, limit: int | None = None, name: str = "heldout") -> TextSet:
    """The corpus stage's ``heldout/*.parquet`` (id, text, ...) as a text set."""
    import datasets

    files = sorted(str(p) for p in Path(path).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"held-out documents: no parquet files in {path}")
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    docs, n_total = _docs_from_dataset(ds, "text", f"held-out documents {path}", None)
    return TextSet(name, docs[:limit] if limit else docs, _content_fingerprint(docs), str(path), n_total)


def load_text_set(name: str, path: str, *, config: str | None = None, split: str = "train", text_field: str = "text",
                  limit: int | None = None) -> TextSet:
    """A local .jsonl/.json/.parquet file (or folder of them) or a Hub dataset, as a text set.

    Errors name the set (``eval.perplexity_sets[name]``), the path and what was expected.
    """
    import datasets

    where = f"eval.perplexity_sets[{name}] ({path})"
    local = Path(path).expanduser()
    if local.exists():
        files = sorted(p for p in local.rglob("*") if p.suffix in LOCAL_BUILDERS) if local.is_dir() else [local]
        builders = {LOCAL_BUILDERS.get(p.suffix) for p in files}
        if not files or None in builders or len(builders) > 1:
            raise ValueError(f"{where}: expected .jsonl/.json/.parquet files of one kind, found "
                             f"{', '.join(sorted({p.suffix or p.name for p in files})) or 'none'}")
        ds = datasets.load_dataset(builders.pop(), data_files=[str(p) for p in files], split="train")
        docs, n_total = _docs_from_dataset(ds, text_field, where, None)
        fp = _content_fingerprint(docs)
        return TextSet(name, docs[:limit] if limit else docs, fp, str(local.resolve()), n_total)
    if is_local_reference(path):
        raise FileNotFoundError(f"{where}: no such file or folder")
    try:
        ds = datasets.load_dataset(path, config, split=split)
    except Exception as exc:  # noqa: BLE001 - any loader failure: say which set, keep the cause
        raise RuntimeError(f"{where}: cannot load the Hub dataset (config {config!r}, split {split!r}): {exc}") from exc
    docs, n_total = _docs_from_dataset(ds, text_field, where, limit)
    fp = hashlib.sha256(f"hub:{path}:{config}:{split}:{getattr(ds, '_fingerprint', '')}".encode()).hexdigest()
    return TextSet(name, docs, fp, path, n_total)


# ------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class PerplexitySettings:
    """How to score; ``batch_size`` and ``limit`` do not change values (not in the cache key)."""

    window: int
    stride: int | None = None
    batch_size: int = 4
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"perplexity window must be at least 2 tokens, got {self.window}")
        if self.stride is not None and not 1 <= self.stride < self.window:
            raise ValueError(f"perplexity stride {self.stride} must be between 1 and the window - 1 ({self.window - 1})")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")

    @property
    def effective_stride(self) -> int:
        return self.stride if self.stride is not None else max(1, self.window // 2)

    def key_fields(self) -> dict[str, Any]:
        return {"window": self.window, "stride": self.effective_stride, "dtype": self.dtype, "version": PERPLEXITY_VERSION}


def windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows over ``n`` token ids: (start, end, first scored position), absolute indices.

    Window k feeds ids[start:end] and scores the tokens at positions [first, end), each predicted
    from ids[start:position]. Every position 1..n-1 is scored exactly once.
    """
    out: list[tuple[int, int, int]] = []
    if n < 2:
        return out
    end = min(window, n)
    out.append((0, end, 1))
    step = min(stride, window - 1)
    while end < n:
        first, end = end, min(end + step, n)
        out.append((max(0, end - window), end, first))
    return out


def document_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids to score: BOS (else EOS) + the text without special tokens."""
    return encode_documents(tokenizer, [text])[0]


def encode_documents(tokenizer: Any, texts: Sequence[str], chunk: int = 64) -> list[list[int]]:
    """:func:`document_ids` of many texts, tokenized in batches (fast tokenizers batch in Rust)."""
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    head = [prefix] if prefix is not None else []
    out: list[list[int]] = []
    for s in range(0, len(texts), chunk):
        batch = tokenizer(list(texts[s : s + chunk]), add_special_tokens=False, verbose=False)["input_ids"]
        out += [head + list(ids) for ids in batch]
    return out


def _window_nll(lm: Any, batch: list[tuple[list[int], int]], chunk: int = 1024) -> list[float]:
    """Summed NLL (nats) of the scored tail of each (input ids, number of scored tokens) in one forward pass."""
    import inspect

    import torch
    import torch.nn.functional as F

    model, device = lm.model, lm.device
    longest = max(len(ids) for ids, _ in batch)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
    attention = torch.zeros((len(batch), longest), dtype=torch.long)
    for i, (ids, _) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
    # logits are needed only from the position before the earliest scored token on
    first_logit = min(len(ids) - k - 1 for ids, k in batch)
    kwargs: dict[str, Any] = {}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = longest - first_logit
    else:
        first_logit = 0
    with torch.inference_mode():
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs).logits
        out = []
        for i, (ids, k) in enumerate(batch):
            n = len(ids)
            targets = torch.tensor(ids[n - k:], dtype=torch.long, device=logits.device)
            rows = logits[i, n - k - 1 - first_logit : n - 1 - first_logit]
            total = 0.0
            for s in range(0, k, chunk):
                total += float(F.cross_entropy(rows[s : s + chunk].float(), targets[s : s + chunk], reduction="sum"))
            out.append(total)
    return out


def iter_scores(lm: Any, docs: Sequence[tuple[int, str, str]], settings: PerplexitySettings,
                on_tokens: Callable[[int], None] | None = None,
                encoded: Sequence[list[int]] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Score (index, id, text) documents; yields, after each forward batch, the rows of documents it finished.

    A row: index, id, nll (nats), tokens (scored), bytes (UTF-8), chars, bpb. ``encoded``: the
    documents' :func:`encode_documents` ids when already computed.
    """
    window, stride = settings.window, settings.effective_stride
    pending: list[tuple[list[int], int, int]] = []  # (input ids, scored tokens, position of the document)
    state: list[dict[str, Any]] = []
    left: list[int] = []

    def flush() -> list[dict[str, Any]]:
        values = _window_nll(lm, [(ids, k) for ids, k, _ in pending])
        finished = []
        for (_, k, j), nll in zip(pending, values):
            state[j]["nll"] += nll
            state[j]["tokens"] += k
            left[j] -= 1
            if left[j] == 0:
                finished.append(j)
        if on_tokens:
            on_tokens(sum(k for _, k, _ in pending))
        pending.clear()
        return [_finish(state[j]) for j in finished]

    if encoded is None:
        encoded = encode_documents(lm.tokenizer, [text for _, _, text in docs])
    for (index, doc_id, text), ids in zip(docs, encoded):
        j = len(state)
        state.append({"index": index, "id": doc_id, "nll": 0.0, "tokens": 0, "bytes": len(text.encode("utf-8")), "chars": len(text)})
        spans = windows(len(ids), window, stride)
        left.append(len(spans))
        if not spans:
            yield [_finish(state[j])]
            continue
        for start, end, first in spans:
            pending.append((ids[start:end], end - first, j))
            if len(pending) >= settings.batch_size:
                yield flush()
    if pending:
        yield flush()


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    row["bpb"] = row["nll"] / math.log(2) / row["bytes"] if row["bytes"] else None
    return row


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pooled metrics: total NLL over total tokens / bytes (not a mean of per-document ratios)."""
    nll = sum(r["nll"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    n_bytes = sum(r["bytes"] for r in rows)
    return {
        "n_docs": len(rows),
        "tokens": tokens,
        "bytes": n_bytes,
        "chars": sum(r["chars"] for r in rows),
        "nll_nats": nll,
        "nll_per_token": nll / tokens if tokens else None,
        "perplexity": math.exp(nll / tokens) if tokens else None,
        "bits_per_byte": nll / math.log(2) / n_bytes if n_bytes else None,
        "bytes_per_token": n_bytes / tokens if tokens else None,
    }


def perplexity_key(model_fp: str, set_fp: str, settings: PerplexitySettings) -> str:
    blob = json.dumps({"kind": "perplexity", "model": model_fp, "text": set_fp, **settings.key_fields()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _progress_bar(description: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cli = sys.modules.get("astrosage.cli")
    console = getattr(cli, "console", None) or Console(stderr=True)
    return Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True)


def evaluate_perplexity(
    model_path: str,
    text_set: TextSet,
    out_dir: Path,
    settings: PerplexitySettings,
    *,
    name: str | None = None,
    revision: str | None = None,
    model_fp: str | None = None,
    store_dir: Path | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score ``model_path`` on ``text_set``; writes ``report.json`` (with per-document rows) and ``report.md``.

    The store is ``<store_dir>/ppl-<key>.jsonl`` (else ``<out_dir>/perplexity-cache.jsonl``);
    the model is loaded only when a document is left to score. ``on_batch(k)`` is called after
    the k-th stored batch (an exception there stops the run, keeping what was stored).
    """
    from astrosage.core.models import model_fingerprint

    out_dir = Path(out_dir)
    key = perplexity_key(model_fp or model_fingerprint(model_path, revision), text_set.fingerprint, settings)
    store_path = Path(store_dir) / f"ppl-{key[:32]}.jsonl" if store_dir is not None else out_dir / "perplexity-cache.jsonl"
    store = ScoreStore(store_path, key)
    indexed = [(i, doc_id, text) for i, (doc_id, text) in enumerate(text_set.docs)]
    todo = [d for d in indexed if d[0] not in store.rows]
    t0 = time.monotonic()
    scored_tokens = 0
    if todo:
        from .modeling import load_model

        lm = load_model(model_path, settings.dtype, revision, attn_implementation=settings.attn_implementation,
                        trust_remote_code=settings.trust_remote_code)
        window = settings.window
        limit = getattr(lm.model.config, "max_position_embeddings", None)
        if limit and window > limit:
            raise ValueError(f"perplexity window {window} (cpt.max_seq_len) exceeds the model's max_position_embeddings "
                             f"{limit} ({model_path}); lower cpt.max_seq_len")
        # the bar counts tokens (cheap to know up front: tokenization is fast next to the forward passes)
        encoded = encode_documents(lm.tokenizer, [t for _, _, t in todo])
        total = sum(max(0, len(ids) - 1) for ids in encoded)
        t0 = time.monotonic()
        with _progress_bar(f"perplexity {name or Path(str(model_path)).name} / {text_set.name}") as progress:
            bar = progress.add_task("ppl", total=total)

            def advance(k: int) -> None:
                nonlocal scored_tokens
                scored_tokens += k
                progress.update(bar, advance=k)

            for k, rows in enumerate(iter_scores(lm, todo, settings, advance, encoded), start=1):
                store.append(rows)
                if on_batch:
                    on_batch(k)
    elapsed = time.monotonic() - t0
    rows = [store.rows[i] for i, _, _ in indexed]
    report = {
        "model": str(model_path),
        "model_name": name or Path(str(model_path)).name,
        "set": text_set.name,
        "source": text_set.source,
        "n_total": text_set.n_total,
        **summarize(rows),
        "settings": {**asdict(settings), "stride": settings.effective_stride},
        "scored_now": len(todo),
        "from_cache": len(indexed) - len(todo),
        "scoring_seconds": round(elapsed, 3),
        "tokens_per_second": round(scored_tokens / elapsed, 1) if todo and elapsed > 0 else None,
        "score_key": key,
        "documents": [{k: r[k] for k in ("index", "id", "tokens", "bytes", "chars", "nll", "bpb")} for r in rows],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    return report


def render_markdown(report: dict[str, Any]) -> str:
    def num(x: Any, fmt: str = ".4f") -> str:
        return "n/a" if x is None else format(x, fmt)

    s = report["settings"]
    lines = [
        f"# {report['model_name']} / {report['set']}: perplexity and bits per byte",
        "",
        f"Model `{report['model']}`; text `{report['source']}` ({report['n_docs']} of {report['n_total']} documents); "
        f"sliding window {s['window']} tokens, stride {s['stride']}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| bits per byte | {num(report['bits_per_byte'])} |",
        f"| perplexity (per token) | {num(report['perplexity'], '.3f')} |",
        f"| NLL per token (nats) | {num(report['nll_per_token'])} |",
        f"| tokens scored | {report['tokens']:,} |",
        f"| UTF-8 bytes | {report['bytes']:,} |",
        f"| bytes per token | {num(report['bytes_per_token'], '.3f')} |",
        "",
        "## Per document",
        "",
        "| id | tokens | bytes | bits per byte |",
        "|---|---|---|---|",
    ]
    lines += [f"| {d['id']} | {d['tokens']} | {d['bytes']} | {num(d['bpb'])} |" for d in report["documents"]]
    return "\n".join(lines) + "\n"
