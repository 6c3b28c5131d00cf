"""How recipe problems are reported: :class:`RecipeError` with (source, dotted field, message) triples, and
the rendering of pydantic validation errors with the bad value and what is allowed (close-match suggestions
for unknown fields, secrets never echoed)."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError


class RecipeError(ValueError):
    """A recipe could not be loaded or validated. ``problems`` lists (source, dotted path, message)."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"{src}: {path}: {msg}" if path else f"{src}: {msg}" for src, path, msg in problems]
        super().__init__("invalid recipe\n  " + "\n  ".join(lines))


class _CrossFieldErrors(ValueError):
    """Raised by Recipe's cross-section validator; carries dotted paths for clear reporting."""

    def __init__(self, problems: list[tuple[str, Any, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, _, m in problems))


def _short(value: Any, limit: int = 200) -> str:
    """A value as shown in an error message: JSON for scalars, never longer than ``limit``
    (a huge or alias-expanded value must not turn an error into a hang or a wall of text)."""
    import reprlib

    if isinstance(value, (int, float, str, bool, type(None))):
        try:
            text = json.dumps(value)
        except ValueError:
            text = repr(value)
    else:
        short = reprlib.Repr()
        short.maxlevel, short.maxdict, short.maxlist, short.maxstring, short.maxother = 3, 6, 6, 60, 60
        text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 12] + f"... ({len(text):,} chars)"


def validation_problems(
    exc: ValidationError, model: type[BaseModel], provenance: dict[str, str], default_source: str
) -> list[tuple[str, str, str]]:
    """(source, dotted path, message) for each error of ``exc``, one per path, raised validating ``model``."""
    problems: list[tuple[str, str, str]] = []
    for err in exc.errors(include_url=False):
        cross = _find_cross(err)
        if cross is not None:
            for path, _, msg in cross.problems:
                problems.append((_source_for(path, provenance, default_source), path, msg))
            continue
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
        # pydantic adds union-branch tags (e.g. 'list[str]', 'literal[...]') to loc; drop those.
        dotted = re.sub(r"\.(list|literal|str|int|float|dict|function-after)\[.*$", "", dotted)
        problems.append((_source_for(dotted, provenance, default_source), dotted, _describe_error(err, _allowed_fields(model, loc))))
    # union errors repeat the same path; keep the first message per path
    seen: set[str] = set()
    return [p for p in problems if not (p[1] in seen or seen.add(p[1]))]


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at the parent of ``loc`` (for 'unknown field' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_of(field.annotation)
    return list(getattr(current, "model_fields", {}).keys()) if current is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _describe_error(err: dict[str, Any], allowed: list[str]) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    from ..logs import REDACTED, looks_like_token, redact_tokens

    # a token pasted into a field is not echoed back (a bare 40-hex wandb key only in *_env fields:
    # elsewhere it is as likely a git commit)
    secret_env = str((err.get("loc") or [""])[-1]).endswith("_env") and isinstance(value, str) and looks_like_token(value)
    shown = json.dumps(REDACTED) if secret_env else redact_tokens(_short(value))
    if kind == "extra_forbidden":
        name = str(err["loc"][-1])
        hint = difflib.get_close_matches(name, allowed, n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown field{tip}; allowed here: {', '.join(allowed)}" if allowed else "unknown field"
    if kind == "missing":
        return "required field is missing"
    ops = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in ops:
        bound = next(iter(ctx.values()))
        return f"{shown} is not {ops[kind]} {bound}"
    if kind == "literal_error":
        return f"{shown} is not one of {ctx.get('expected', '')}"
    if kind == "string_pattern_mismatch":
        return f"{shown} does not match the pattern {ctx.get('pattern')}"
    msg = err.get("msg", kind)
    return f"{shown} is not valid: {msg}"


def _find_cross(err: dict[str, Any]) -> _CrossFieldErrors | None:
    error = (err.get("ctx") or {}).get("error")
    return error if isinstance(error, _CrossFieldErrors) else None


def _source_for(dotted: str, provenance: dict[str, str], default: str) -> str:
    probe = re.sub(r"\[\d+\]", "", dotted)
    children = [src for key, src in provenance.items() if key.startswith(probe + ".")]
    if probe not in provenance and children:
        return children[0]
    while probe:
        if probe in provenance:
            return provenance[probe]
        probe = probe.rpartition(".")[0]
    return default
