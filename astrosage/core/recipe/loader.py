"""Reading recipes: strict YAML (no duplicate keys, no sexagesimal numbers, no alias bombs), ``extends``,
``section.field=value`` overrides, provenance of every value (file or command line), validation and
:func:`section_hash`.

    recipe = load_recipe("recipes/tiny-cpu.yaml", overrides=["cpt.learning_rate=1e-4"])
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import RecipeError, _short, validation_problems
from .recipe import Recipe


#: The most values a recipe may expand to once YAML aliases are followed. Real recipes have a
#: few hundred; a "billion laughs" file (aliases of aliases) would expand to ~10^9 and hang
#: whatever walks it, so it is refused before construction.
MAX_YAML_VALUES = 100_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain YAML silently keeps the last one) and reads
    ``48:00:00`` as the string it looks like, as YAML 1.2 does (YAML 1.1, PyYAML's default, makes
    it the base-60 integer 172800). Merge keys (``<<: *base``) work as in PyYAML."""


# YAML 1.1 sexagesimal numbers (``1:30`` -> 90) surprise everyone who writes a wall time or a
# clock; YAML 1.2 dropped them. Same int/float patterns as PyYAML's resolver, minus base 60.
# Dates stay text too (``date_from: 2024-13-45`` is then a clear field error, not a traceback from
# the YAML timestamp constructor; the schema's date fields are YYYY-MM-DD strings).
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""", re.X),
    list("-+0123456789"),
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # '<<: *base' - keys written here override the merged ones
            continue
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {repr(key)[:100]} (first on line {seen[key]}, again on line {line})", key_node.start_mark
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (memoised: linear time)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once; PyYAML builds such a cycle lazily
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def _unshare(value: Any) -> Any:
    """Copy mappings/lists so that two places written with the same alias are separate values
    (an override of one must not change the other). Bounded by MAX_YAML_VALUES."""
    if isinstance(value, dict):
        return {k: _unshare(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshare(v) for v in value]
    return value


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RecipeError([(str(path), "", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column {column} "
                            "(save the recipe as UTF-8)")]) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError([(str(path), "", "file not found")]) from None
    except IsADirectoryError:
        raise RecipeError([(str(path), "", "is a folder, not a recipe file")]) from None
    except OSError as exc:
        raise RecipeError([(str(path), "", f"cannot read: {exc.strerror or exc}")]) from None
    text = _decode(path, raw)
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise RecipeError([(str(path), "", f"expands to {size:,} values once its aliases (*name) are followed; "
                                f"at most {MAX_YAML_VALUES:,} are allowed (is this an alias bomb?)")])
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise RecipeError([(str(path), "", f"not valid YAML: {exc}")]) from None
    except RecursionError:
        raise RecipeError([(str(path), "", "nested too deeply (or an alias refers to itself)")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise RecipeError([(str(path), "", f"top level must be a mapping of sections, got {type(data).__name__}")])
    return _unshare(data)


def _merge_into(dst: dict, src: dict, source: str, prov: dict[str, str], prefix: str = "") -> None:
    """Deep-merge ``src`` into ``dst``; mappings merge, everything else replaces. Records provenance."""
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value, source, prov, dotted + ".")
        else:
            dst[key] = value
            for old in [p for p in prov if p == dotted or p.startswith(dotted + ".")]:
                del prov[old]
            _record(value, dotted, source, prov)


def _record(value: Any, dotted: str, source: str, prov: dict[str, str]) -> None:
    prov[dotted] = source
    if isinstance(value, dict):
        for k, v in value.items():
            _record(v, f"{dotted}.{k}", source, prov)


def _load_with_extends(path: Path, prov: dict[str, str], chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError([(str(path), "extends", f"circular extends: {cycle}")])
    data = _read_yaml(path)
    # top-level 'x-...' keys hold YAML anchors for '<<: *name' merges (the docker-compose
    # convention); they are not sections
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    parent = data.pop("extends", None)
    merged: dict[str, Any] = {}
    if parent is not None:
        if not isinstance(parent, str):
            raise RecipeError([(str(path), "extends", f"{_short(parent)} is not a file path")])
        parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
        if not parent_path.exists():
            raise RecipeError([(str(path), "extends", f"{parent!r} does not exist (looked for {parent_path})")])
        merged = _load_with_extends(parent_path, prov, (*chain, path))
    _merge_into(merged, data, _display(path), prov)
    return merged


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _parse_key(key: str, text: str | None = None) -> list[str | int]:
    """``a.b[0].c`` -> ["a", "b", 0, "c"]; RecipeError if it is not a dotted field path."""
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*", key):
        shown = f"override {_short(text)}: " if text is not None else ""
        raise RecipeError([("command line", key, f"{shown}{_short(key)} is not a dotted field path")])
    return [int(token[1:-1]) if token.startswith("[") else token for token in re.findall(r"[A-Za-z_]\w*|\[\d+\]", key)]


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Parse ``a.b.c=value`` (list items as ``a.b[0].c``) into (["a", "b", 0, "c"], value).

    The value is read as YAML (the recipe loader's YAML: ``48:00:00`` stays a string), so
    numbers, booleans, ``null`` and ``[1, 2]`` lists work. Values that are already typed (CLI
    options) go through ``load_recipe(values=...)`` instead and are never re-parsed.
    """
    if "=" not in text:
        raise RecipeError([("command line", "", f"override {_short(text)} is not of the form section.field=value")])
    key, raw = text.split("=", 1)
    parts = _parse_key(key, text)
    key = key.strip()
    try:
        value = yaml.load(raw, Loader=_StrictLoader) if raw.strip() else ""  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise RecipeError([("command line", key, f"value {_short(raw)} is not valid YAML: {exc}")]) from None
    # YAML 1.1 reads '1e-4' as a string; accept scientific notation as a number.
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        value = float(value)
    return parts, value


def _dotted(parts: list[str | int]) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else p)
    return text


def _apply_override(data: dict[str, Any], parts: list[str | int], value: Any, prov: dict[str, str]) -> None:
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = _dotted(parts[: i + 1])
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise RecipeError([("command line", where, f"no list item {part} here (the list has {size} items)")])
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise RecipeError([("command line", where, f"cannot set {_dotted(parts)}: parent is not a section")])
        child = node.get(part)
        if child is None:
            child = node[part] = [] if isinstance(parts[i + 1], int) else {}
        elif not isinstance(child, (dict, list)):
            raise RecipeError([("command line", where, f"is a value ({_short(child)}), not a section; cannot set {_dotted(parts)}")])
        node = child
    last = parts[-1]
    plain = re.sub(r"\[\d+\]", "", _dotted(parts))
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise RecipeError([("command line", _dotted(parts), "no such list item")])
        node[last] = value
        prov[plain] = "command line"
        return
    if not isinstance(node, dict):
        raise RecipeError([("command line", _dotted(parts), "parent is not a section")])
    parent = plain.rpartition(".")[0]
    _merge_into(node, {last: value}, "command line", prov, parent + "." if parent else "")


def load_recipe_dict(
    data: dict[str, Any], provenance: dict[str, str] | None = None, default_source: str = "<recipe>"
) -> Recipe:
    """Validate an already-merged recipe mapping; errors name the source, dotted path and value."""
    provenance = provenance or {}
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(validation_problems(exc, Recipe, provenance, default_source)) from None


def load_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), values: dict[str, Any] | None = None
) -> Recipe:
    """Load a recipe file (following ``extends``), apply ``section.field=value`` overrides, validate.

    ``values`` maps dotted field paths to already-typed values (e.g. ``{"slurm.time": "48:00:00"}``
    from a typed CLI option); they are applied after ``overrides`` exactly as given, never read as YAML.
    Raises :class:`RecipeError` whose message names the file (or "command line"), the dotted
    field path, the bad value and what is allowed.
    """
    path = Path(path)
    prov: dict[str, str] = {}
    data = _load_with_extends(path, prov)
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(data, parts, value, prov)
    for key, value in (values or {}).items():
        _apply_override(data, _parse_key(key), value, prov)
    return load_recipe_dict(data, prov, default_source=_display(path.resolve()))


def section_hash(recipe: Recipe, *sections: str) -> str:
    """Stable sha256 of the named sections (dotted paths allowed, e.g. 'run.seed')."""
    payload = {}
    dumped = recipe.model_dump(mode="json")
    for name in sections:
        node: Any = dumped
        for part in name.split("."):
            node = node[part]
        payload[name] = node
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
