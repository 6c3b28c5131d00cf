"""The stage contract: what a stage is given (:class:`StageContext`), what it reports
(:class:`StageResult`) and how it is described to the runner (:class:`StageSpec`).

Each stage adapter in ``astrosage/stages/<name>.py`` defines one ``SPEC = StageSpec(...)`` whose
``run`` is the adapter function; ``astrosage.stages`` collects them in pipeline order by import.
The runner checks every output a spec declares exists (file or folder, as declared) before it
seals the stage folder, so a stage that forgets to write one fails instead of "done".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from .recipe import Recipe

#: the stages that produce a model checkpoint, in pipeline order
MODEL_STAGES = ("cpt", "sft", "merge")


@dataclass
class StageResult:
    """What a stage reports back; stored in its manifest."""

    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: named outputs, relative to the stage folder (e.g. {"model": "model"} for a checkpoint)
    outputs: dict[str, str] = field(default_factory=dict)
    #: folders inside the stage folder needed only to resume it (training checkpoints): the runner
    #: deletes them once the stage is sealed, never before, so a kill before the seal loses nothing
    discard: tuple[str, ...] = ()


@dataclass
class StageContext:
    """Everything a stage may use: the recipe, where to write, and the upstream artifacts."""

    recipe: Recipe
    stage: str
    run_dir: Path
    work_dir: Path
    upstream: dict[str, dict[str, Any]]
    force: bool = False

    @property
    def output_dir(self) -> Path:
        """Root of all runs (``run.output_dir``), absolute."""
        return Path(self.recipe.run.output_dir).resolve()

    def upstream_output(self, stage: str, name: str) -> Path:
        """Absolute path of a named output of an upstream stage (e.g. ``("sft", "model")``)."""
        manifest = self.upstream.get(stage)
        if manifest is None:
            raise KeyError(f"stage {self.stage!r} did not declare {stage!r} as an input")
        rel = manifest.get("outputs", {}).get(name)
        if rel is None:
            raise KeyError(f"stage {stage!r} has no output named {name!r} (has: {sorted(manifest.get('outputs', {}))})")
        return self.run_dir / stage / rel

    def resolve_model(self, ref: str) -> str:
        """Resolve a model reference (Hub id, folder, ``tiny:...``) the way every stage does."""
        from .models import resolve_model

        return resolve_model(ref, self.output_dir, self.recipe.run.seed)

    def input_model(self) -> str:
        """The model this stage starts from: the newest upstream checkpoint, else ``model.base``."""
        for stage in reversed(MODEL_STAGES):
            if stage in self.upstream and "model" in self.upstream[stage].get("outputs", {}):
                return str(self.upstream_output(stage, "model"))
        return self.resolve_model(self.recipe.model.base)


#: what a declared output is on disk
OutputKind = Literal["file", "dir"]


@dataclass(frozen=True)
class StageSpec:
    """Static description of one pipeline stage."""

    name: str
    summary: str
    #: recipe sections (dotted paths allowed) whose values define this stage's result
    sections: tuple[str, ...]
    #: upstream stages whose artifacts this stage reads, given the recipe
    upstream: Callable[[Recipe], list[str]]
    #: external inputs (model refs, data files) to fingerprint: name -> reference
    external: Callable[[Recipe], dict[str, str]]
    #: the stage function (the adapter); heavy libraries are imported inside it, not at import time
    run: Callable[[StageContext], StageResult]
    #: outputs every run must produce: name -> "file" | "dir" (a StageResult may add optional ones)
    outputs: dict[str, OutputKind] = field(default_factory=dict)
    #: the sections that define the result *for this recipe* (default: ``sections``); e.g. the merge
    #: stage's eval settings count only when it sweeps
    key_sections: Callable[[Recipe], tuple[str, ...]] | None = None

    def sections_for(self, recipe: Recipe) -> tuple[str, ...]:
        """The (dotted) recipe sections hashed into this stage's cache key for ``recipe``."""
        return tuple(self.key_sections(recipe)) if self.key_sections is not None else self.sections

    def missing_outputs(self, work_dir: Path, result: StageResult) -> list[str]:
        """Declared outputs the result does not name or the folder does not hold (empty = fine)."""
        problems = []
        for name, kind in self.outputs.items():
            rel = result.outputs.get(name)
            if rel is None:
                problems.append(f"{name!r} (declared {kind}) is not in the stage's outputs")
                continue
            path = Path(work_dir) / rel
            if not (path.is_dir() if kind == "dir" else path.is_file()):
                problems.append(f"{name!r}: {path} is not a {'folder' if kind == 'dir' else 'file'}")
        for name, rel in result.outputs.items():
            if not (Path(work_dir) / rel).exists():
                problems.append(f"{name!r}: {Path(work_dir) / rel} does not exist")
        return problems
