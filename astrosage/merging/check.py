"""Merge compatibility, checked before any weight is read.

mergekit users' top complaint is a tokenizer/vocabulary mismatch discovered only after every
checkpoint was downloaded. Here only the small files are read (``config.json`` and the tokenizer
files; Hub models through ``hf_hub_download`` of exactly those files) and compared: architecture,
tensor shapes, vocabulary, special tokens and chat templates. Every mismatch is reported with the
recipe field that would fix it.

    report = check_models([ModelInfo.load("trained", path), ModelInfo.load("instruct", ref)], ...)
    report.raise_for_errors()
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Mismatch", "MergeCompatibilityError", "ModelInfo", "CompatibilityReport", "check_models", "SMALL_FILES"]

#: The only files read from each model (never weights).
SMALL_FILES = (
    "config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
)
#: config.json keys that fix tensor shapes; models differing in any cannot be merged tensor by tensor.
SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim")
SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")

Severity = Literal["error", "warning"]


class MergeCompatibilityError(ValueError):
    """The models cannot be merged as configured; the message lists each mismatch and its fix."""

    def __init__(self, report: "CompatibilityReport"):
        self.report = report
        super().__init__(report.format())


@dataclass(frozen=True)
class Mismatch:
    """One difference between the models: what differs, the values per model, how to fix it."""

    check: str
    severity: Severity
    values: dict[str, Any]
    fix: str

    def format(self) -> str:
        shown = ", ".join(f"{role}={_short(v)}" for role, v in self.values.items())
        return f"[{self.severity}] {self.check} differs: {shown}\n      fix: {self.fix}"


@dataclass
class ModelInfo:
    """The small files of one model, parsed."""

    role: str
    ref: str
    config: dict[str, Any]
    tokenizer_config: dict[str, Any] = field(default_factory=dict)
    special_tokens_map: dict[str, Any] = field(default_factory=dict)
    vocab_hash: str | None = None
    added_tokens: dict[str, int] = field(default_factory=dict)
    chat_template: str | None = None
    #: recipe field that names this model (used in fix hints)
    field: str = ""

    @classmethod
    def load(cls, role: str, ref: str, revision: str | None = None, field: str = "") -> "ModelInfo":
        """Read the small files of a local folder or a Hub model (downloading only those files)."""
        files = _fetch_small_files(ref, revision)
        if "config.json" not in files:
            raise FileNotFoundError(f"{role} model {ref!r} has no config.json; is it a model folder / model repository?")
        tok_cfg = _read_json(files.get("tokenizer_config.json"))
        info = cls(
            role=role,
            ref=ref,
            config=_text_config(_read_json(files["config.json"])),
            tokenizer_config=tok_cfg,
            special_tokens_map=_read_json(files.get("special_tokens_map.json")),
            field=field,
        )
        info.vocab_hash, info.added_tokens = _vocab_fingerprint(files)
        info.chat_template = _chat_template(files, tok_cfg)
        return info

    def special_tokens(self) -> dict[str, str | None]:
        """bos/eos/pad/unk token strings, from tokenizer_config.json then special_tokens_map.json."""
        out: dict[str, str | None] = {}
        for role in SPECIAL_ROLES:
            value = self.tokenizer_config.get(role, self.special_tokens_map.get(role))
            if isinstance(value, dict):
                value = value.get("content")
            out[role] = value
        return out


@dataclass
class CompatibilityReport:
    """Every mismatch found between the models of a merge."""

    models: list[ModelInfo]
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def errors(self) -> list[Mismatch]:
        return [m for m in self.mismatches if m.severity == "error"]

    @property
    def warnings(self) -> list[Mismatch]:
        return [m for m in self.mismatches if m.severity == "warning"]

    def format(self) -> str:
        head = ", ".join(f"{m.role}={m.ref}" for m in self.models)
        if not self.mismatches:
            return f"models are merge-compatible ({head})"
        verdict = "cannot be merged as configured" if self.errors else "can be merged, with warnings"
        lines = [f"models {verdict} ({len(self.errors)} error(s), {len(self.warnings)} warning(s)); checked before reading any weight: {head}"]
        lines += ["  " + m.format() for m in self.mismatches]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "models": {m.role: m.ref for m in self.models},
            "mismatches": [
                {"check": m.check, "severity": m.severity, "values": {k: _short(v) for k, v in m.values.items()}, "fix": m.fix}
                for m in self.mismatches
            ],
        }

    def raise_for_errors(self) -> None:
        if self.errors:
            raise MergeCompatibilityError(self)


def check_models(
    models: list[ModelInfo],
    *,
    remaps_vocab: bool,
    chat_template_set: bool,
    template_roles: tuple[str, ...] = ("trained", "instruct"),
    tokenizer_field: str = "merge.tokenizer_source",
    template_field: str = "merge.chat_template",
) -> CompatibilityReport:
    """Compare the models' small files; every differing property is one Mismatch.

    ``remaps_vocab``: mergekit will remap embeddings into one vocabulary (tokenizer_source 'union'
    or a model reference), so vocabulary differences are warnings, not errors.
    ``chat_template_set``: the merged model's template is chosen explicitly, so template
    differences are warnings. Only models whose role is in ``template_roles`` are compared for
    chat templates (a pretrained base used for task vectors does not chat).
    """
    report = CompatibilityReport(models)
    add = report.mismatches.append
    fields = " / ".join(f"{m.field} ({m.role})" for m in models if m.field)
    family_fix = "use models of one family and size" + (f": change {fields}" if fields else "")
    vocab_fix = (
        f"set {tokenizer_field} to 'union' or to one model's reference, so mergekit remaps the embeddings "
        "into one vocabulary (or merge models that share a tokenizer)"
    )
    vocab_severity: Severity = "warning" if remaps_vocab else "error"

    def compare(check: str, values: dict[str, Any], severity: Severity, fix: str) -> None:
        if len({_key(v) for v in values.values()}) > 1:
            add(Mismatch(check, severity, values, fix))

    by_role = lambda getter: {m.role: getter(m) for m in models}  # noqa: E731
    compare("architectures", by_role(lambda m: m.config.get("architectures")), "error", family_fix)
    compare("model_type", by_role(lambda m: m.config.get("model_type")), "error", family_fix)
    for key in SHAPE_KEYS:
        values = by_role(lambda m: _shape_value(m.config, key))
        if any(v is not None for v in values.values()):
            compare(key, values, "error", family_fix)
    compare("vocab_size", by_role(lambda m: m.config.get("vocab_size")), vocab_severity, vocab_fix)
    with_tok = [m for m in models if m.vocab_hash is not None]
    if len(with_tok) < len(models):
        missing = [m.role for m in models if m.vocab_hash is None]
        add(Mismatch("tokenizer files", "warning", {r: "not found" for r in missing}, "tokenizer not compared for these models"))
    if len(with_tok) > 1:
        compare("tokenizer vocabulary (token -> id)", {m.role: m.vocab_hash for m in with_tok}, vocab_severity, vocab_fix)
        compare("added/special token ids", {m.role: m.added_tokens for m in with_tok}, vocab_severity, vocab_fix)
        for role in SPECIAL_ROLES:
            compare(
                role,
                {m.role: m.special_tokens()[role] for m in with_tok},
                "warning",
                f"the merged model gets the tokenizer source's {role}; set {tokenizer_field} to choose another model's",
            )
    chatty = [m for m in models if m.role in template_roles]
    templates = {m.role: m.chat_template for m in chatty}
    defined = {k: v for k, v in templates.items() if v}
    if len({_key(v) for v in defined.values()}) > 1:
        add(
            Mismatch(
                "chat template",
                "warning" if chat_template_set else "error",
                {k: f"sha256:{_sha(v)[:12]} ({len(v)} chars)" for k, v in defined.items()},
                f"set {template_field} to choose the merged model's template"
                + (" ('trained' or 'instruct', a mergekit template name or Jinja text)" if template_field.startswith("merge.") else ""),
            )
        )
    elif defined and len(defined) < len(templates) and not chat_template_set:
        lacking = [k for k, v in templates.items() if not v]
        add(
            Mismatch(
                "chat template",
                "warning",
                {**{k: "none" for k in lacking}, **{k: "defined" for k in defined}},
                f"only some models have a chat template; set {template_field} to choose the merged model's explicitly",
            )
        )
    return report


# ------------------------------------------------------------------------------------ helpers


def _shape_value(config: dict[str, Any], key: str) -> Any:
    """A shape key with transformers' defaults filled in (older configs omit head_dim / num_key_value_heads)."""
    value = config.get(key)
    heads = config.get("num_attention_heads")
    if value is None and key == "num_key_value_heads":
        return heads
    if value is None and key == "head_dim" and isinstance(heads, int) and heads and isinstance(config.get("hidden_size"), int):
        return config["hidden_size"] // heads
    return value


def _fetch_small_files(ref: str, revision: str | None) -> dict[str, Path]:
    """Paths of the small files that exist, for a local folder or a Hub repository."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        return {name: folder / name for name in SMALL_FILES if (folder / name).is_file()}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    found: dict[str, Path] = {}
    for name in SMALL_FILES:
        try:
            found[name] = Path(hf_hub_download(ref, name, revision=revision))
        except LocalEntryNotFoundError:
            if name == "config.json":
                raise FileNotFoundError(
                    f"{ref!r}: config.json is not in the local Hugging Face cache and the Hub cannot be reached "
                    "(HF_HUB_OFFLINE is set or there is no network); download the model's small files first"
                ) from None
        except EntryNotFoundError:
            continue
    return found


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """For multimodal configs the language model's keys live under text_config."""
    text = config.get("text_config")
    if isinstance(text, dict) and "hidden_size" not in config:
        return {**text, "architectures": config.get("architectures"), "model_type": config.get("model_type")}
    return config


def _vocab_fingerprint(files: dict[str, Path]) -> tuple[str | None, dict[str, int]]:
    """(hash of the token -> id map, {added token: id}) from tokenizer.json, else tokenizer.model."""
    added: dict[str, int] = {}
    if "tokenizer.json" in files:
        data = _read_json(files["tokenizer.json"])
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, list):  # unigram: [[piece, score], ...]
            vocab = {piece[0]: i for i, piece in enumerate(vocab)}
        added = {t["content"]: int(t["id"]) for t in data.get("added_tokens", []) if "content" in t and "id" in t}
        vocab = vocab or {}
        blob = json.dumps(vocab, sort_keys=True, ensure_ascii=False)
        return f"{len(vocab)} tokens, sha256:{_sha(blob)[:12]}", added
    if "tokenizer.model" in files:
        extra = _read_json(files.get("added_tokens.json"))
        added = {str(k): int(v) for k, v in extra.items()}
        digest = hashlib.sha256(files["tokenizer.model"].read_bytes()).hexdigest()
        return f"sentencepiece sha256:{digest[:12]}", added
    return None, added


def _chat_template(files: dict[str, Path], tokenizer_config: dict[str, Any]) -> str | None:
    if "chat_template.jinja" in files:
        return files["chat_template.jinja"].read_text(encoding="utf-8")
    if "chat_template.json" in files:
        value = _read_json(files["chat_template.json"]).get("chat_template")
        if isinstance(value, str):
            return value
    value = tokenizer_config.get("chat_template")
    if isinstance(value, list):  # [{"name": "default", "template": ...}, ...]
        named = {d.get("name"): d.get("template") for d in value if isinstance(d, dict)}
        value = named.get("default") or next(iter(named.values()), None)
    return value if isinstance(value, str) and value.strip() else None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any, limit: int = 80) -> Any:
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, dict) and len(json.dumps(value, default=str)) > limit:
        return f"{len(value)} entries, sha256:{_sha(_key(value))[:12]}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > limit:
        return f"sha256:{_sha(text)[:12]}"
    return text
