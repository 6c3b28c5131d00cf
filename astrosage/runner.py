"""The run manager: runs the recipe's stages in order, with manifests and caching.

Each stage writes ``<output_dir>/<run name>/<stage>/``. While it runs it writes into
``<stage>.partial/``; only when it succeeds is the folder swapped into place with its
``manifest.json``. A stage whose manifest matches the current recipe section and input
fingerprints is skipped ("cached"); ``force`` reruns it. A killed stage leaves its
``.partial`` folder, which the next run of the same configuration resumes from.

Cache keys and manifests are :mod:`astrosage.run_state`; the run folder's lock (one run at a time,
held by the main rank) is :mod:`astrosage.run_lock`; ranks and barriers of a multi-process launch
are :mod:`astrosage.core.distributed`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .core import distributed
from .core.artifacts import MANIFEST_NAME, atomic_write_json, atomic_write_text, read_json, replacing_dir
from .core.exitcodes import REQUEUE
from .core.logs import SecretRedactor
from .core.recipe import Recipe
from .core.stage import StageContext, StageResult, StageSpec
from .run_lock import RunLock, RunLockedError
from .run_state import PARTIAL_MARKER, PipelineError, RunState, utc_now
from .stages import STAGE_ORDER, STAGES

log = logging.getLogger("astrosage")


class BadInputError(PipelineError):
    """A local input the recipe names (benchmark, data file, corpus metadata) is unusable."""


@dataclass
class StageOutcome:
    """What happened to one stage in a run (for the summary table)."""

    stage: str
    status: str  # done | cached | disabled | skipped | failed | preempted
    detail: str = ""
    duration_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _launcher_rank_is_main() -> bool:
    """The launcher's rank says main: asked before any process group exists (the lock is taken first)."""
    return distributed.launcher_rank() == 0


class RunManager:
    """Plans and runs the stages of one recipe.

    Every rank of a multi-process launch runs the same stage function; only the main process
    touches stage folders, markers and manifests, with barriers around those writes.
    """

    def __init__(self, recipe: Recipe, registry: dict[str, StageSpec] | None = None):
        self.recipe = recipe
        self.registry = registry if registry is not None else STAGES
        self.order = [s for s in STAGE_ORDER if s in self.registry] if registry is None else list(self.registry)
        self.run_dir = Path(recipe.run.output_dir).resolve() / recipe.run.name
        self.state = RunState(recipe, self.run_dir)
        self._lock = RunLock(self.run_dir, recipe.run.name)
        self._inputs_checked: set[str] = set()

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunManager]:
        """Hold the run folder's lock (main rank only; other ranks run under their main rank's lock).

        Raises :class:`RunLockedError` at once, naming the holder, if another run holds it.
        """
        if not _launcher_rank_is_main():
            yield self
            return
        with self._lock.held():
            yield self

    def write_resolved_recipe(self, source: Path | str, overrides: list[str]) -> Path:
        """Save the recipe as run (after extends and overrides) to ``<run_dir>/recipe.resolved.yaml``."""
        import yaml

        from .core.logs import redact_json

        redact = self._redactor().redact
        header = f"# resolved from {source}" + (f" with overrides {' '.join(overrides)}" if overrides else "") + "\n"
        body = yaml.safe_dump(redact_json(self.recipe.model_dump(mode="json")), sort_keys=False)
        return atomic_write_text(self.run_dir / "recipe.resolved.yaml", redact(header) + body)

    # ---------------------------------------------------------------- selection / planning
    def select(self, stages: Iterable[str] | None) -> list[str]:
        """Validate a stage selection and return it in pipeline order (all stages if None)."""
        if stages is None:
            return list(self.order)
        wanted = [s.strip() for s in stages if s.strip()]
        unknown = [s for s in wanted if s not in self.registry]
        if unknown:
            raise PipelineError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(self.order)}")
        return [s for s in self.order if s in wanted]

    def enabled(self, stage: str) -> bool:
        """Whether the recipe enables ``stage`` (``<stage>.enabled``; True for sections without it)."""
        section = getattr(self.recipe, stage, None)
        return bool(getattr(section, "enabled", True))

    def check_inputs(self, selected: list[str]) -> None:
        """Check the content of every local input the selected stages read, before any stage runs.

        Raises :class:`BadInputError` naming file, line and field; rows a stage would only drop are
        logged as warnings. Done once per manager (the CLI calls it before taking the lock).
        """
        todo = [s for s in selected if self.enabled(s) and s not in self._inputs_checked]
        if not todo or self.registry is not STAGES:
            return
        from .input_checks import InputError, require_valid_inputs

        try:
            report = require_valid_inputs(self.recipe, todo)
        except InputError as exc:
            raise BadInputError(
                "bad input data, found before running any stage:\n  " + "\n  ".join(
                    f"{src}: {dotted}: {msg}" for src, dotted, msg in exc.problems)
            ) from None
        for src, dotted, msg in report.warnings:
            log.warning("%s: %s: %s (the stage will drop and count it)", src, dotted, msg)
        self._inputs_checked.update(todo)

    def upstream_manifests(self, spec: StageSpec) -> dict[str, dict[str, Any]]:
        """Manifests of the stages ``spec`` reads; a clear error if one has not been produced."""
        return self.state.upstream_manifests(spec)

    def recover(self, stage: str) -> None:
        """Finish a folder swap that a kill interrupted (main rank only).

        A ``.partial`` with a complete manifest is a finished stage that was not yet swapped in;
        a ``.old`` without a ``final`` is the previous result, moved aside just before the kill.
        """
        if not distributed.is_main():
            return
        final = self.run_dir / stage
        partial, old = final.with_name(stage + ".partial"), final.with_name(stage + ".old")
        done = partial / MANIFEST_NAME
        if done.exists() and read_json(done).get("status") == "complete":
            log.info("stage %s: completing the swap of a finished result interrupted by a kill", stage)
            if old.exists():
                shutil.rmtree(old)
            if final.exists():
                os.replace(final, old)
            os.replace(partial, final)
            (final / PARTIAL_MARKER).unlink(missing_ok=True)
        elif old.exists() and not final.exists():
            log.info("stage %s: restoring the previous result %s", stage, old)
            os.replace(old, final)
        if old.exists() and final.exists():
            shutil.rmtree(old)

    # ---------------------------------------------------------------- running
    def run(
        self,
        stages: Iterable[str] | None = None,
        force: bool = False,
        on_event: Callable[[StageOutcome], None] | None = None,
    ) -> list[StageOutcome]:
        """Run the selected stages in order; returns one outcome per stage of the pipeline.

        Stops at the first failing stage (its exception propagates after the outcome is
        reported through ``on_event``).
        """
        selected = self.select(stages)
        self.check_inputs(selected)
        with self.locked(), self.datasets_cache():
            return self._run_selected(selected, force, on_event)

    @contextlib.contextmanager
    def datasets_cache(self) -> Iterator[None]:
        """Keep the ``datasets`` cache (Arrow copies of corpus text, ``map`` results) in the run folder,
        ``<run dir>/.cache/datasets``, not in ``~/.cache/huggingface/datasets``, for the duration of the run.

        An ``HF_DATASETS_CACHE`` the user set is kept. ``datasets`` reads the variable when imported,
        so an already imported ``datasets.config`` is pointed there too (and restored afterwards).
        """
        if os.environ.get("HF_DATASETS_CACHE"):
            yield
            return
        import sys

        path = self.run_dir / ".cache" / "datasets"
        config = sys.modules.get("datasets.config")
        before = getattr(config, "HF_DATASETS_CACHE", None)
        os.environ["HF_DATASETS_CACHE"] = str(path)
        if config is not None:
            config.HF_DATASETS_CACHE = path
        try:
            yield
        finally:
            os.environ.pop("HF_DATASETS_CACHE", None)
            config = sys.modules.get("datasets.config")
            if config is not None and getattr(config, "HF_DATASETS_CACHE", None) == path:
                config.HF_DATASETS_CACHE = before if before is not None else Path(config.HF_CACHE_HOME) / "datasets"

    def _run_selected(
        self, selected: list[str], force: bool, on_event: Callable[[StageOutcome], None] | None
    ) -> list[StageOutcome]:
        outcomes: list[StageOutcome] = []

        def report(outcome: StageOutcome) -> None:
            outcomes.append(outcome)
            if on_event:
                on_event(outcome)

        # a multi-process launch: the shared PartialState (cpu=True without a GPU) exists before any
        # stage, so the stages and the Trainer build on it instead of each guessing the launch
        distributed.state()
        for stage in self.order:
            spec = self.registry[stage]
            if stage not in selected:
                report(StageOutcome(stage, "skipped", "not selected"))
                continue
            if not self.enabled(stage):
                log.info("stage %s: disabled in the recipe (%s.enabled=false), skipping", stage, stage)
                report(StageOutcome(stage, "disabled", f"{stage}.enabled=false"))
                continue
            self.recover(stage)
            upstream = self.state.upstream_manifests(spec)
            key, inputs = self.state.cache_key(spec, upstream)
            existing = self.state.read_manifest(stage)
            if existing is not None and existing.get("cache_key") == key and not force:
                log.info("stage %s: up to date (manifest matches), skipping; use --force to rerun", stage)
                _discard(self.run_dir / stage, tuple(existing.get("discard", ())))  # a kill came between seal and delete
                report(StageOutcome(stage, "cached", "manifest matches", 0.0, existing.get("metrics", {}), self.run_dir / stage))
                continue
            start = time.monotonic()
            try:
                manifest = self._run_stage(spec, key, inputs, upstream, force)
            except BaseException as exc:
                preempted = isinstance(exc, SystemExit) and exc.code == REQUEUE
                status = "preempted" if preempted else "failed"
                detail = "checkpoint saved; rerun to resume" if preempted else f"{type(exc).__name__}: {exc}".splitlines()[0]
                detail = self._redactor().redact(detail)[:200]
                report(StageOutcome(stage, status, detail, time.monotonic() - start, {}, self.run_dir / f"{stage}.partial"))
                raise
            report(StageOutcome(stage, "done", "", time.monotonic() - start, manifest.get("metrics", {}), self.run_dir / stage))
        return outcomes

    def _redactor(self) -> SecretRedactor:
        return SecretRedactor((self.recipe.synth.api_key_env, self.recipe.publish.token_env))

    def _run_stage(
        self, spec: StageSpec, key: str, inputs: dict[str, str], upstream: dict[str, dict[str, Any]], force: bool
    ) -> dict[str, Any]:
        """Run one stage in ``<stage>.partial/`` and seal it (main rank); workers only run the function."""
        if not distributed.is_main():
            return self._run_stage_worker(spec, upstream, force)
        final = self.run_dir / spec.name
        partial = final.with_name(final.name + ".partial")
        marker = partial / PARTIAL_MARKER
        if partial.exists():
            previous = read_json(marker).get("cache_key") if marker.exists() else None
            if force or previous != key:
                _set_aside(spec.name, partial, "--force" if force else "recipe or inputs changed")
            else:
                log.info("stage %s: resuming unfinished work in %s", spec.name, partial)
                _remove_torn_writes(partial)
        started = utc_now()
        t0 = time.monotonic()
        with replacing_dir(final) as work:
            if not marker.exists():
                atomic_write_json(marker, {"cache_key": key, "started_at": started})
            distributed.barrier()  # workers start only once the work folder is ready
            ctx = StageContext(self.recipe, spec.name, self.run_dir, work, upstream, force)
            log.info("stage %s: %s", spec.name, spec.summary)
            result = spec.run(ctx)
            distributed.barrier()  # every rank has finished writing before the folder is sealed
            if not isinstance(result, StageResult):
                raise TypeError(f"stage {spec.name} returned {type(result).__name__}, expected StageResult")
            missing = spec.missing_outputs(work, result)
            if missing:  # never seal a stage that did not write what it promises its readers
                raise PipelineError(f"stage {spec.name} finished without its outputs: " + "; ".join(missing))
            manifest = self.state.manifest(spec, key, inputs, work, result, started, time.monotonic() - t0)
            atomic_write_json(work / MANIFEST_NAME, manifest)
            marker.unlink()  # only now: a kill before this point leaves a resumable .partial
        _discard(final, result.discard)
        distributed.barrier()  # the sealed folder is visible to every rank before the next stage
        return manifest

    def _run_stage_worker(self, spec: StageSpec, upstream: dict[str, dict[str, Any]], force: bool) -> dict[str, Any]:
        """Non-main ranks: same stage function, same work folder, no folder bookkeeping."""
        work = self.run_dir / f"{spec.name}.partial"
        distributed.barrier()
        result = spec.run(StageContext(self.recipe, spec.name, self.run_dir, work, upstream, force))
        distributed.barrier()
        distributed.barrier()
        return {"metrics": result.metrics if isinstance(result, StageResult) else {}}


def _set_aside(stage: str, partial: Path, reason: str) -> None:
    """Unfinished work that no longer matches: delete it, unless it holds training checkpoints
    (days of work), which are moved aside to ``<stage>.partial.<timestamp>`` instead."""
    if next(partial.rglob("checkpoint-*"), None) is None:
        log.info("stage %s: discarding unfinished %s (%s; it holds no checkpoints)", stage, partial, reason)
        shutil.rmtree(partial)
        return
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = partial.with_name(f"{partial.name}.{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = partial.with_name(f"{partial.name}.{stamp}-{n}")
    os.replace(partial, aside)
    log.warning(
        "stage %s: the unfinished %s holds checkpoints but was started with other settings (%s); "
        "moved it aside to %s (nothing deleted; remove it yourself when it is no longer needed)",
        stage, partial, reason, aside,
    )


_DISCARDING = ".discarding-"


def _discard(sealed: Path, names: tuple[str, ...]) -> None:
    """Delete a sealed stage's resume-only folders (and any a kill left half-deleted before).

    Each is first renamed to ``.discarding-<name>`` (atomic), so a half-deleted checkpoint folder
    is never mistaken for a usable one; a leftover is removed the next time the stage is reached."""
    if not sealed.is_dir():
        return
    for name in names:
        path = sealed / name
        if path.exists():
            os.replace(path, sealed / f"{_DISCARDING}{name.replace('/', '_')}")
    for leftover in sealed.glob(f"{_DISCARDING}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _remove_torn_writes(folder: Path) -> None:
    """Temp files of atomic writes (``.<name>.<random>.tmp``) a kill left behind: never valid data."""
    for tmp in folder.rglob(".*.tmp"):
        if tmp.is_file():
            log.info("removing %s, an interrupted atomic write", tmp)
            tmp.unlink()


__all__ = ["RunManager", "RunLock", "StageOutcome", "PipelineError", "RunLockedError", "BadInputError"]
