"""Which models the eval stage scores: the base model, then every model an upstream stage produced."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from astrosage.core.stage import MODEL_STAGES, StageContext


@dataclass(frozen=True)
class Checkpoint:
    """A model to score: display name, the stage that made it, path and cache fingerprint."""

    name: str
    stage: str
    path: str
    fingerprint: str
    primary: bool = True


def list_checkpoints(ctx: StageContext) -> list[Checkpoint]:
    """Base model first, then each upstream model stage's outputs named "model" or "model@...".

    ``model`` -> ``<stage>``; ``model@w0.75`` -> ``<stage>@w0.75`` (merge sweeps).
    """
    from astrosage.core.models import model_fingerprint

    recipe = ctx.recipe
    found = [
        Checkpoint(
            "base",
            "base",
            ctx.resolve_model(recipe.model.base),
            model_fingerprint(recipe.model.base, recipe.model.revision, recipe.run.seed),
        )
    ]
    seen: set[str] = set()
    for stage in MODEL_STAGES:
        manifest = ctx.upstream.get(stage)
        if manifest is None:
            continue
        for key in sorted(manifest.get("outputs", {}), key=lambda k: (k != "model", k)):
            if not key.startswith("model"):
                continue
            path = str(ctx.upstream_output(stage, key))
            if path in seen:  # a sweep's selected merge is both "model" and "model@<label>": score it once
                continue
            seen.add(path)
            fp = hashlib.sha256(f"{manifest.get('artifact_hash', '')}:{key}".encode()).hexdigest()
            name = stage + key[len("model"):]
            found.append(Checkpoint(name, stage, path, fp, primary=key == "model"))
    return found


def select_checkpoints(found: list[Checkpoint], choice: str | list[str]) -> list[Checkpoint]:
    """Apply ``eval.checkpoints``: 'all', 'final' (the last stage's main model), or names/stage names."""
    if choice == "all":
        return found
    if choice == "final":
        last = found[-1].stage
        mains = [c for c in found if c.stage == last and c.primary]
        return mains or [c for c in found if c.stage == last]
    names = {c.name for c in found} | {c.stage for c in found}
    unknown = [n for n in choice if n not in names]
    if unknown:
        raise ValueError(
            f"eval.checkpoints: {', '.join(unknown)} not produced by this run; available: {', '.join(c.name for c in found)}"
        )
    return [c for c in found if c.name in choice or c.stage in choice]
