"""The mergekit configuration from the recipe's ``merge`` section (or a raw one), validated as mergekit's
``MergeConfiguration`` when it is built, so a bad setting fails before any model is read.

Convention (``w`` = ``merge.weight``, the trained model's share; ``d`` = ``merge.density``):

=================  ==============================  ===============================================
method             mergekit ``base_model``         models and parameters
=================  ==============================  ===============================================
linear             the trained model (*)           trained ``weight: w``, instruct ``weight: 1-w``
slerp              the trained model               ``t = 1 - w``: interpolation from the trained
                                                   model toward the instruct model (w=1: trained)
ties / dare_ties   ``model.base`` (pretrained)     trained ``weight: w, density: d``,
                                                   instruct ``weight: 1-w, density: d``
task_arithmetic    ``model.base`` (pretrained)     trained ``weight: w``, instruct ``weight: 1-w``
=================  ==============================  ===============================================

(*) For linear the base only pins where config.json and the tokenizer come from; it is still
weighted like any input, so the result is exactly ``w * trained + (1 - w) * instruct``.

A raw mergekit YAML (``merge.mergekit_yaml``) may use the placeholders ``${trained}``,
``${instruct}`` and ``${base}`` for the resolved model references; existing relative folders
are made absolute (mergekit treats a relative path as a Hub id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core.recipe import MergeSection

__all__ = ["MergeInputs", "MergePoint", "BuiltConfig", "build_config", "load_raw_config", "TASK_VECTOR_METHODS"]

TASK_VECTOR_METHODS = ("ties", "dare_ties", "task_arithmetic")
_MODEL_KEYS = ("model", "base_model", "tokenizer_source", "source")


@dataclass(frozen=True)
class MergeInputs:
    """Resolved references (absolute folders or Hub ids) of the models a merge may use."""

    trained: str
    instruct: str | None
    base: str
    base_revision: str | None = None


@dataclass(frozen=True)
class MergePoint:
    """One merge setting: the trained model's weight and, for ties / dare_ties, the density."""

    weight: float
    density: float | None = None

    @property
    def label(self) -> str:
        """'w0.75' or 'w0.75-d0.5' (used in output names and folder names)."""
        text = f"w{self.weight:g}"
        return text + (f"-d{self.density:g}" if self.density is not None else "")


@dataclass(frozen=True)
class BuiltConfig:
    """A validated mergekit configuration and the YAML text recorded next to the merged model."""

    config: Any  # mergekit.config.MergeConfiguration
    text: str
    method: str


def validated(data: dict[str, Any], source: str) -> BuiltConfig:
    """``data`` as mergekit's ``MergeConfiguration`` (ValueError naming ``source`` when mergekit refuses it)."""
    from mergekit.config import MergeConfiguration

    try:
        config = MergeConfiguration.model_validate(data)
    except Exception as exc:  # pydantic ValidationError or mergekit's RuntimeError
        raise ValueError(f"{source} is not a valid mergekit configuration: {exc}") from None
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)
    return BuiltConfig(config, text, str(data.get("merge_method")))


def model_ref(path: str, revision: str | None = None) -> str | dict[str, Any]:
    """A mergekit model reference; structured when the path has mergekit's '@' / '+' syntax characters."""
    if revision is None and "@" not in path and "+" not in path:
        return path
    model: dict[str, Any] = {"path": path}
    if revision:
        model["revision"] = revision
    return {"model": model}


def build_config(
    section: MergeSection,
    inputs: MergeInputs,
    point: MergePoint,
    *,
    tokenizer_source: str,
    chat_template: str | None = None,
) -> BuiltConfig:
    """The validated mergekit configuration for one merge point."""
    if inputs.instruct is None:
        raise ValueError("the merge needs model.base_instruct (or a raw merge.mergekit_yaml)")
    w = round(point.weight, 10)
    trained, instruct = model_ref(inputs.trained), model_ref(inputs.instruct)
    method = section.method
    config: dict[str, Any] = {"merge_method": method}
    if method == "linear":
        config["base_model"] = trained
        config["models"] = [
            {"model": trained, "parameters": {"weight": w}},
            {"model": instruct, "parameters": {"weight": round(1 - w, 10)}},
        ]
    elif method == "slerp":
        config["base_model"] = trained
        config["models"] = [{"model": trained}, {"model": instruct}]
        config["parameters"] = {"t": round(1 - w, 10)}
    elif method in TASK_VECTOR_METHODS:
        config["base_model"] = model_ref(inputs.base, inputs.base_revision)
        extra = {"density": point.density} if method in ("ties", "dare_ties") else {}
        config["models"] = [
            {"model": trained, "parameters": {"weight": w, **extra}},
            {"model": instruct, "parameters": {"weight": round(1 - w, 10), **extra}},
        ]
    else:  # the recipe schema allows no other method
        raise ValueError(f"unsupported merge method {method!r}")
    config["dtype"] = section.dtype
    config["tokenizer_source"] = tokenizer_source
    if chat_template:
        config["chat_template"] = chat_template
    return validated(config, f"the merge configuration built from the recipe's merge section ({point.label})")


def load_raw_config(path: Path, inputs: MergeInputs) -> BuiltConfig:
    """Read a raw mergekit YAML, substitute ``${trained}``/``${instruct}``/``${base}``, absolutize folders."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"merge.mergekit_yaml {path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"merge.mergekit_yaml {path}: top level must be a mapping, got {type(data).__name__}")
    subs = {"${trained}": inputs.trained, "${base}": inputs.base}
    if inputs.instruct is not None:
        subs["${instruct}"] = inputs.instruct
    return validated(_walk(data, subs), f"merge.mergekit_yaml {path}")


def _walk(node: Any, subs: dict[str, str], key: str | None = None) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, subs, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, subs, key) for v in node]
    if isinstance(node, str):
        for placeholder, value in subs.items():
            node = node.replace(placeholder, value)
        if "${" in node:
            raise ValueError(f"unknown placeholder in {node!r}; use ${{trained}}, ${{instruct}} or ${{base}}")
        if key in _MODEL_KEYS and node not in ("base", "union") and not Path(node).is_absolute() and Path(node).is_dir():
            return str(Path(node).resolve())
    return node
