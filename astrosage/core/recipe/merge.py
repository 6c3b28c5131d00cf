"""Recipe section ``merge``: the mergekit merge of the trained model with its instruct sibling, and sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import _Section


class MergeSection(_Section):
    enabled: bool = Field(default=True, description="Run this stage.")
    method: Literal["linear", "slerp", "ties", "dare_ties", "task_arithmetic"] = Field(
        default="linear", description="mergekit merge method."
    )
    weight: float = Field(
        default=0.75,
        ge=0,
        le=1,
        description="Share of the trained model; model.base_instruct gets 1 - weight (AstroSage-8B: 0.75). linear: the two "
        "models' weights; ties/dare_ties/task_arithmetic: weights of the two task vectors relative to model.base; slerp: "
        "interpolation from the trained model (t = 1 - weight toward model.base_instruct).",
    )
    density: float | None = Field(default=None, gt=0, le=1, description="Fraction of delta weights kept (ties / dare_ties).")
    sweep: list[float] = Field(
        default_factory=list,
        description="Weights to try; one merge each (outputs 'model@w<weight>'), each scored on the dev benchmark, the best "
        "chosen by select_metric becomes output 'model'. Needs the evaluator (eval.api).",
    )
    sweep_density: list[float] = Field(
        default_factory=list,
        description="Densities to try (ties / dare_ties), crossed with the sweep weights (merge.weight if sweep is empty); "
        "outputs 'model@w<weight>-d<density>'.",
    )
    select_metric: Literal["accuracy", "ece", "brier", "nll"] = Field(
        default="accuracy", description="Eval metric that picks the best merge of a sweep (accuracy: highest; ece/brier/nll: lowest)."
    )
    select_benchmark: str | None = Field(
        default=None, description="Name of the eval.benchmarks entry that scores a sweep (a labelled dev set); default: the first one."
    )
    keep_sweep_models: bool = Field(
        default=True, description="Keep every merged model of a sweep; false deletes all but the selected one after selection."
    )
    tokenizer_source: Literal["base", "union"] | str = Field(
        default="base",
        description="mergekit tokenizer_source. 'base': the tokenizer of mergekit's base_model (the trained model for "
        "linear/slerp, model.base for ties/dare_ties/task_arithmetic); the models' vocabularies and special tokens must then "
        "agree (checked before any weight is read). 'union' or a model reference (Hub id / folder / tiny:...): mergekit "
        "remaps every model's embeddings into that vocabulary, so differing vocabularies are allowed.",
    )
    chat_template: str | None = Field(
        default=None,
        description="Chat template of the merged model. None: the trained and instruct models' templates must agree (else the "
        "merge is refused). 'trained' / 'instruct': that model's template. Else passed to mergekit: 'auto' (most common), a "
        "mergekit built-in name ('llama3', 'chatml', ...) or a Jinja template.",
    )
    mergekit_yaml: Path | None = Field(
        default=None,
        description="Use this raw mergekit YAML instead of building one; '${trained}', '${instruct}' and '${base}' are "
        "replaced by the resolved models (the upstream checkpoint, model.base_instruct, model.base).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(default="bfloat16", description="dtype of the merged weights.")

    @field_validator("sweep")
    @classmethod
    def _sweep_in_range(cls, v: list[float]) -> list[float]:
        for w in v:
            if not 0 <= w <= 1:
                raise ValueError(f"sweep weight {w} is outside [0, 1]")
        return v

    @model_validator(mode="after")
    def _density_for_sparse_methods(self) -> "MergeSection":
        if self.method in ("ties", "dare_ties") and self.density is None and self.mergekit_yaml is None and not self.sweep_density:
            raise ValueError(f"method '{self.method}' needs merge.density (e.g. 0.5)")
        if self.sweep_density and self.method not in ("ties", "dare_ties"):
            raise ValueError(f"merge.sweep_density only applies to ties / dare_ties, not '{self.method}'")
        for d in self.sweep_density:
            if not 0 < d <= 1:
                raise ValueError(f"sweep density {d} is outside (0, 1]")
        if self.mergekit_yaml is not None and (self.sweep or self.sweep_density):
            raise ValueError("merge.sweep / merge.sweep_density need a generated config; they cannot be used with merge.mergekit_yaml")
        return self
