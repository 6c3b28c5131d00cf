"""What a run folder records about its stages: cache keys and manifests.

A stage's cache key hashes its name, the recipe fields that define its result
(``StageSpec.sections_for``) and the fingerprints of its inputs (upstream artifact hashes, external
models). The manifest written when a stage is sealed records that key with everything needed to
audit the result (sections, inputs, outputs, counts, metrics, artifact hash, versions, times); the
run manager (:mod:`astrosage.runner`) compares keys to decide what is cached.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .core.artifacts import MANIFEST_NAME, git_commit, package_versions, read_json, tree_fingerprint
from .core.models import model_fingerprint
from .core.recipe import Recipe, section_hash
from .core.stage import StageResult, StageSpec

#: marker in ``<stage>.partial/`` naming the key its unfinished work was started under
PARTIAL_MARKER = ".astrosage-partial.json"


class PipelineError(RuntimeError):
    """A run cannot proceed (bad stage selection, missing upstream artifact, a stage without its outputs)."""


def utc_now() -> str:
    """The current UTC time as ISO 8601, to the second (manifests, lock holder records)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunState:
    """The manifests and cache keys of one run folder's stages."""

    def __init__(self, recipe: Recipe, run_dir: Path):
        self.recipe = recipe
        self.run_dir = run_dir

    def manifest_path(self, stage: str) -> Path:
        """Where the sealed manifest of ``stage`` lives."""
        return self.run_dir / stage / MANIFEST_NAME

    def read_manifest(self, stage: str) -> dict[str, Any] | None:
        """The stage's manifest if it completed, else None."""
        path = self.manifest_path(stage)
        if not path.exists():
            return None
        manifest = read_json(path)
        return manifest if manifest.get("status") == "complete" else None

    def upstream_manifests(self, spec: StageSpec) -> dict[str, dict[str, Any]]:
        """Manifests of the stages ``spec`` reads; a clear error if one has not been produced."""
        found = {}
        for name in spec.upstream(self.recipe):
            manifest = self.read_manifest(name)
            if manifest is None:
                raise PipelineError(
                    f"stage '{spec.name}' needs the output of stage '{name}', but {self.manifest_path(name)} "
                    f"does not exist or is incomplete; run '{name}' first (e.g. --stages {name},{spec.name})"
                )
            found[name] = manifest
        return found

    def cache_key(self, spec: StageSpec, upstream: dict[str, dict[str, Any]]) -> tuple[str, dict[str, str]]:
        """Key that decides whether a cached stage result is still valid, and its inputs.

        Only result-affecting settings are hashed (``StageSpec.sections_for``): editing a logging or
        checkpointing field keeps the cached result and resumes an unfinished one.
        """
        inputs: dict[str, str] = {f"stage:{name}": manifest["artifact_hash"] for name, manifest in sorted(upstream.items())}
        seed = self.recipe.run.seed
        for name, ref in sorted(spec.external(self.recipe).items()):
            if ref:
                inputs[name] = model_fingerprint(ref, self.recipe.model.revision if name == "base" else None, seed)
        payload = {"stage": spec.name, "section_hash": section_hash(self.recipe, *spec.sections_for(self.recipe)), "inputs": inputs}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest(), inputs

    def manifest(
        self, spec: StageSpec, key: str, inputs: dict[str, str], work: Path, result: StageResult,
        started_at: str, duration_s: float,
    ) -> dict[str, Any]:
        """The manifest sealing ``work`` (token-shaped strings redacted); the stage's result is final."""
        from .core.logs import redact_json

        _whole_run_loss(work, result)
        manifest = {
            "stage": spec.name,
            "status": "complete",
            "recipe_name": self.recipe.run.name,
            "cache_key": key,
            "section_hash": section_hash(self.recipe, *spec.sections_for(self.recipe)),
            "sections": {name: _section_value(self.recipe, name) for name in spec.sections},
            "inputs": inputs,
            "outputs": result.outputs,
            "discard": list(result.discard),
            "counts": result.counts,
            "metrics": result.metrics,
            "artifact_hash": tree_fingerprint(work, exclude=(MANIFEST_NAME, PARTIAL_MARKER), exclude_dirs=result.discard),
            "packages": package_versions(),
            "git": git_commit(),
            "astrosage_version": __version__,
            "started_at": started_at,
            "finished_at": utc_now(),
            "duration_s": round(duration_s, 3),
        }
        # only whole string values are looked at, so hashes and commits (bare hex) are kept as they are
        return redact_json(manifest)


def _whole_run_loss(work: Path, result: StageResult) -> None:
    """A training stage resumed after preemption: its ``mean_train_loss`` covers every attempt.

    The Trainer's ``train_loss`` averages the last attempt only; ``trainer_state.json``'s
    ``log_history`` carries the logged losses of the whole run (restored from the checkpoint).
    """
    state = work / "trainer_state.json"
    if "mean_train_loss" not in result.metrics or not state.is_file():
        return
    from .training.guards import mean_train_loss

    value = mean_train_loss(read_json(state).get("log_history", []))
    if value is not None:
        result.metrics["mean_train_loss"] = value


def _section_value(recipe: Recipe, dotted: str) -> Any:
    node: Any = recipe.model_dump(mode="json")
    for part in dotted.split("."):
        node = node[part]
    return node


__all__ = ["PARTIAL_MARKER", "PipelineError", "RunState", "utc_now"]
