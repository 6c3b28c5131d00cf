"""SFT data: real dataset formats -> conversations -> token ids + assistant masks, bad rows counted.

Formats (``format: auto`` detects per row; ``columns`` maps our names to the dataset's):

* ``messages``           ``{"messages": [{"role", "content"}, ...]}`` (OpenAI roles; optional
                         ``reasoning_content``; content given as a list of ``{"type": "text"}`` parts is joined)
* ``sharegpt``           ``{"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}``
                         (Infinity-Instruct, OpenHermes-2.5, ...)
* ``prompt_completion``  ``{"prompt": str | messages, "completion": str | messages}``
* ``alpaca``             ``{"instruction", "input"?, "output"}``

Sources: a local ``.jsonl``/``.json``/``.parquet`` file or folder, a local dataset folder with
named configs, or a Hub dataset id with ``name`` (config, e.g. ``BAAI/Infinity-Instruct`` ``7M``)
and ``split``. JSON lines are read as text first, so a torn line, a string where a list belongs or a
missing field rejects that row with ``file:line`` and a reason, never the whole load with a pyarrow
error. Rows are counted by reason; ``rejected.jsonl`` in the stage folder lists them.

Length: a conversation longer than ``sft.max_seq_len`` is truncated at the end of its last
assistant turn that fits (``sft.overlong: truncate``) or dropped (``drop``); one whose first
assistant turn does not fit is dropped. Both are counted. Every example keeps ≥ 1 trained token.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from .chat_masks import MaskPlan, TurnError, encode
from ..core.models import is_local_reference
from .data import DataError, _local_files

ROLE_ALIASES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "model": "assistant", "bard": "assistant", "bing": "assistant", "system": "system", "tool": "tool",
}
FORMATS = ("auto", "messages", "sharegpt", "prompt_completion", "alpaca")
MAX_REJECTED_LOGGED = 1000


class RowError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


# ------------------------------------------------------------------------------ row -> messages
def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        parts = [p.get("text") for p in value if p.get("type", "text") == "text"]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)
    raise RowError("content_not_string", f"{where} is {type(value).__name__}, not a string")


def _from_messages(msgs: Any, key: str) -> list[dict[str, str]]:
    if not isinstance(msgs, list):
        raise RowError("messages_not_list", f"'{key}' is {type(msgs).__name__}, not a list of messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RowError("message_not_object", f"'{key}'[{i}] is {type(m).__name__}, not an object")
        if "from" in m and "role" not in m:  # ShareGPT turn
            role, content = m.get("from"), m.get("value")
        else:
            role, content = m.get("role"), m.get("content")
        role = ROLE_ALIASES.get(str(role).lower()) if role is not None else None
        if role is None:
            raise RowError("unknown_role", f"'{key}'[{i}] has role {m.get('role', m.get('from'))!r}")
        if content is None:
            raise RowError("missing_content", f"'{key}'[{i}] has no content")
        msg = {"role": role, "content": _content(content, f"'{key}'[{i}].content")}
        reasoning = m.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning.strip() and "<think>" not in msg["content"]:
            msg["content"] = f"<think>\n{reasoning.strip()}\n</think>\n\n{msg['content'].strip()}"
        out.append(msg)
    if not out:
        raise RowError("empty_conversation", f"'{key}' is empty")
    return out


def to_messages(row: dict[str, Any], fmt: str = "auto", columns: dict[str, str] | None = None) -> list[dict[str, str]]:
    """One dataset row -> a list of ``{"role", "content"}`` messages (RowError with a reason)."""
    if not isinstance(row, dict):
        raise RowError("row_not_object", f"the row is {type(row).__name__}, not a JSON object")
    if columns:
        missing = [col for col in columns.values() if col not in row]
        if missing:
            raise RowError("missing_field", f"mapped column(s) {missing} not in the row (has {sorted(row)})")
        row = {**row, **{ours: row[theirs] for ours, theirs in columns.items()}}
    if fmt == "auto":
        if "messages" in row:
            fmt = "messages"
        elif "conversations" in row:
            fmt = "sharegpt"
        elif "prompt" in row and "completion" in row:
            fmt = "prompt_completion"
        elif "instruction" in row and "output" in row:
            fmt = "alpaca"
        else:
            raise RowError("unknown_format", f"no 'messages', 'conversations', 'prompt'+'completion' or 'instruction'+'output' field (has {sorted(row)})")
    if fmt == "messages":
        if "messages" not in row:
            raise RowError("missing_field", "no 'messages' field")
        return _from_messages(row["messages"], "messages")
    if fmt == "sharegpt":
        if "conversations" not in row:
            raise RowError("missing_field", "no 'conversations' field")
        return _from_messages(row["conversations"], "conversations")
    if fmt == "prompt_completion":
        for key in ("prompt", "completion"):
            if key not in row:
                raise RowError("missing_field", f"no '{key}' field")
        prompt = row["prompt"]
        completion = row["completion"]
        p = [{"role": "user", "content": _content(prompt, "'prompt'")}] if isinstance(prompt, str) else _from_messages(prompt, "prompt")
        c = [{"role": "assistant", "content": _content(completion, "'completion'")}] if isinstance(completion, str) else _from_messages(completion, "completion")
        return p + c
    if fmt == "alpaca":
        instruction, extra, output = row.get("instruction"), row.get("input") or "", row.get("output")
        if not isinstance(instruction, str) or not isinstance(output, str) or not isinstance(extra, str):
            raise RowError("content_not_string", "'instruction', 'input' and 'output' must be strings")
        user = f"{instruction}\n\n{extra}".strip() if extra else instruction
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
        if isinstance(row.get("system"), str) and row["system"].strip():
            msgs.insert(0, {"role": "system", "content": row["system"]})
        return msgs
    raise RowError("unknown_format", f"format {fmt!r} is not one of {FORMATS}")


# ------------------------------------------------------------------------------ loading
def _json_rows(files: list[Path]) -> Iterator[dict[str, str]]:
    """Every record of local JSON/JSONL files as raw text + ``file:line`` (parsed later, row by row)."""
    for f in files:
        with open(f, "rb") as fh:
            head = fh.read(1).lstrip() or b""
        if f.suffix.lower() == ".json" and head[:1] == b"[":
            try:
                items = json.loads(f.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield {"_raw": "", "_where": f"{f}", "_load_error": f"not valid JSON: {exc}"}
                continue
            for i, item in enumerate(items):
                yield {"_raw": json.dumps(item), "_where": f"{f}[{i}]", "_load_error": ""}
            continue
        with open(f, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield {"_raw": "", "_where": f"{f}:{lineno}", "_load_error": f"not UTF-8: {exc}"}
                    continue
                yield {"_raw": text, "_where": f"{f}:{lineno}", "_load_error": ""}


def load_rows(ref: str, name: str | None = None, split: str = "train", cache_dir: str | None = None):
    """Raw rows of a data source as a ``datasets.Dataset`` with a ``_where`` column."""
    import datasets

    path = Path(ref).expanduser()
    if is_local_reference(ref) and not (path.is_dir() and (name or (path / "README.md").exists())):
        if not path.exists():
            raise DataError(f"data path {ref!r} does not exist (resolved to {path.resolve()})")
        builder, files = _local_files(path)
        if builder == "json":
            features = datasets.Features({k: datasets.Value("string") for k in ("_raw", "_where", "_load_error")})
            if next(_json_rows(files), None) is None:  # empty files: an empty dataset, not a datasets error
                return datasets.Dataset.from_dict({k: [] for k in features}, features=features)
            return datasets.Dataset.from_generator(_json_rows, gen_kwargs={"files": files}, cache_dir=cache_dir, features=features)
        ds = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train", cache_dir=cache_dir)
        where = str(path)
    else:  # Hub id, or a local dataset folder with configs (README.md `configs:`)
        try:
            ds = datasets.load_dataset(str(path) if path.is_dir() else ref, name=name, split=split, cache_dir=cache_dir)
        except ValueError as exc:
            raise DataError(f"{ref} (config {name!r}, split {split!r}): {exc}") from None
        where = f"{ref}{f' [{name}]' if name else ''}"
    return ds.map(lambda _, i: {"_where": f"{where}:row {i}"}, with_indices=True)


def conversations(ds, fmt: str = "auto", columns: dict[str, str] | None = None, num_proc: int | None = None):
    """Raw rows -> (dataset with ``messages``, rejected rows [{where, reason, detail}])."""
    def convert(row):
        try:
            if "_raw" in row:
                if row.get("_load_error"):
                    raise RowError("bad_json", row["_load_error"])
                try:
                    parsed = json.loads(row["_raw"])
                except json.JSONDecodeError as exc:
                    raise RowError("bad_json", f"not valid JSON: {exc}") from None
            else:
                parsed = {k: v for k, v in row.items() if k != "_where"}
            msgs = to_messages(parsed, fmt, columns)
            return {"messages": json.dumps(msgs), "_reason": "", "_detail": ""}
        except RowError as exc:
            return {"messages": "", "_reason": exc.reason, "_detail": str(exc)}

    if len(ds) == 0:
        return ds, []
    num_proc = num_proc if num_proc and num_proc > 1 and len(ds) >= 2 * num_proc else None
    out = ds.map(convert, remove_columns=[c for c in ds.column_names if c != "_where"], num_proc=num_proc, desc="sft: rows -> conversations")
    rejected = [
        {"where": w, "reason": r, "detail": d}
        for w, r, d in zip(out["_where"], out["_reason"], out["_detail"])
        if r
    ]
    kept = out.filter(lambda r: not r, input_columns="_reason", num_proc=num_proc)
    kept = kept.map(lambda m: {"messages": json.loads(m)}, input_columns="messages", remove_columns=["_reason", "_detail"], num_proc=num_proc)
    return kept, rejected


# ------------------------------------------------------------------------------ tokenization
def fit_length(ex, max_len: int, overlong: str):
    """The example cut at its last assistant-turn end that fits (or None to drop it)."""
    if len(ex.input_ids) <= max_len:
        return ex, False
    if overlong == "drop":
        return None, False
    fitting = [e for e in ex.turn_ends if e <= max_len]
    if not fitting:
        return None, False
    cut = fitting[-1]
    ex.input_ids, ex.assistant_masks = ex.input_ids[:cut], ex.assistant_masks[:cut]
    ex.turn_ends = [e for e in ex.turn_ends if e <= cut]
    return ex, True


def tokenize_conversations(ds, tokenizer, plan: MaskPlan, max_len: int, overlong: str, assistant_only: bool, num_proc: int | None = None):
    """Conversations -> ``input_ids`` + ``assistant_masks`` rows; returns (dataset, counts, rejected).

    ``num_proc`` > 1 encodes in that many processes (``datasets.map``); the result is identical.
    """
    def batch(rows):
        out: dict[str, list] = {"input_ids": [], "assistant_masks": [], "_where": [], "_status": []}
        for where, messages in zip(rows["_where"], rows["messages"]):
            try:
                examples = encode(tokenizer, plan, messages, assistant_only=assistant_only)
            except TurnError as exc:
                out["input_ids"].append([]); out["assistant_masks"].append([]); out["_where"].append(where)
                out["_status"].append(f"reject:{exc.reason}:{exc}")
                continue
            for k, ex in enumerate(examples):
                fitted, truncated = fit_length(ex, max_len, overlong)
                status = "too_long" if fitted is None else ("truncated" if truncated else "ok")
                if k > 0:
                    status += "+split"
                out["input_ids"].append(fitted.input_ids if fitted else [])
                out["assistant_masks"].append(fitted.assistant_masks if fitted else [])
                out["_where"].append(where)
                out["_status"].append(status)
        return out

    procs = num_proc if num_proc and num_proc > 1 and len(ds) >= 2 * num_proc else None
    tokenized = ds.map(batch, batched=True, batch_size=64, remove_columns=ds.column_names, num_proc=procs, desc="sft: token ids + assistant masks")
    statuses = tokenized["_status"]
    counts: Counter = Counter()
    rejected = []
    for where, status in zip(tokenized["_where"], statuses):
        if status.startswith("reject:"):
            _, reason, detail = status.split(":", 2)
            counts[f"rejected_{reason}"] += 1
            rejected.append({"where": where, "reason": reason, "detail": detail})
            continue
        base = status.split("+")[0]
        if "+split" in status:
            counts["turns_split_into_own_example"] += 1
        if base == "too_long":
            counts["dropped_too_long"] += 1
            rejected.append({"where": where, "reason": "too_long", "detail": f"first assistant turn does not fit sft.max_seq_len={max_len}" if overlong == "truncate" else f"longer than sft.max_seq_len={max_len} (sft.overlong=drop)"})
        elif base == "truncated":
            counts["truncated_at_turn_boundary"] += 1
    kept = tokenized.filter(lambda s: not s.startswith("reject:") and not s.startswith("too_long"), input_columns="_status")
    kept = kept.remove_columns(["_where", "_status"])
    return kept, dict(counts), rejected


def write_rejected(path: Path, rejected: list[dict[str, str]]) -> None:
    """``rejected.jsonl``: one line per rejected row (capped), atomically."""
    from ..core.artifacts import atomic_write_text

    lines = [json.dumps(r, ensure_ascii=False) for r in rejected[:MAX_REJECTED_LOGGED]]
    if len(rejected) > MAX_REJECTED_LOGGED:
        lines.append(json.dumps({"where": "...", "reason": "truncated", "detail": f"{len(rejected) - MAX_REJECTED_LOGGED} more rows not listed"}))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
