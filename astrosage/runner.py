"""The run manager: runs the recipe's stages in order, with manifests and caching.

Each stage writes ``<output_dir>/<run name>/<stage>/``. While it runs it writes into
``<stage>.partial/``; only when it succeeds is the folder swapped into place with its
``manifest.json``. A stage whose manifest matches the current recipe section and input
fingerprints is skipped ("cached"); ``force`` reruns it. A killed stage leaves its
``.partial`` folder, which the next run of the same configuration resumes from.

One run at a time per run folder: the main rank holds ``<run dir>/.astrosage.lock`` (an
``flock`` through ``filelock``, released by the kernel when its process dies) for the whole run,
and records who holds it in ``.astrosage.lock.json``. A second ``astrosage run`` on the same
folder fails at once naming the holder (pid, host, start time, Slurm job id).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from . import __version__
from .core.artifacts import (
    MANIFEST_NAME,
    atomic_write_json,
    atomic_write_text,
    git_commit,
    package_versions,
    read_json,
    replacing_dir,
    tree_fingerprint,
)
from .core.exitcodes import REQUEUE
from .core.models import model_fingerprint
from .core.stage import StageContext, StageResult, StageSpec
from .stages import STAGE_ORDER, STAGES
from .core.recipe import Recipe, section_hash

log = logging.getLogger("astrosage")

PARTIAL_MARKER = ".astrosage-partial.json"


class PipelineError(RuntimeError):
    """A run cannot proceed (bad stage selection, missing upstream artifact, a stage without its outputs)."""


class RunLockedError(PipelineError):
    """Another process holds the run folder's lock."""


class BadInputError(PipelineError):
    """A local input the recipe names (benchmark, data file, corpus metadata) is unusable."""


LOCK_NAME = ".astrosage.lock"
HOLDER_NAME = ".astrosage.lock.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "a process that has not recorded itself yet (it is starting up)"
    parts = [f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}", f"started {holder.get('started_at', '?')}"]
    if holder.get("slurm_job_id"):
        parts.append(f"Slurm job {holder['slurm_job_id']}")
    if holder.get("recipe_name"):
        parts.append(f"run '{holder['recipe_name']}'")
    return ", ".join(parts)


class RunLock:
    """The lock on one run folder, held by the main rank for a whole run (re-entrant).

    ``filelock.FileLock`` is an ``flock`` on the lock file, so a holder that dies (SIGKILL, node
    reboot) releases it: its stale lock and holder record are taken over, with a log line. On a
    file system without ``flock`` filelock falls back to a marker file; a marker left by a dead
    process on this host is then removed here.
    """

    def __init__(self, run_dir: Path, recipe_name: str = ""):
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self.holder_path = run_dir / HOLDER_NAME
        self.recipe_name = recipe_name
        self._lock = None
        self._depth = 0

    def read_holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.holder_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _make_folder(self) -> None:
        existing = self.run_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise PipelineError(
                f"run.output_dir: {existing} is a file, not a folder, so the run folder {self.run_dir} cannot be "
                "created; set run.output_dir to a folder"
            )
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PipelineError(f"run.output_dir: cannot create the run folder {self.run_dir}: {exc.strerror or exc}") from None

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        from filelock import FileLock, Timeout

        self._make_folder()
        if self._lock is None:
            self._lock = FileLock(str(self.path), timeout=0)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = self.read_holder()
            if not self._take_over_dead_marker(holder):
                raise RunLockedError(
                    f"the run folder {self.run_dir} is in use by another astrosage run: {_describe_holder(holder)} "
                    f"(lock {self.path}). Wait for it to finish or stop it, or give this run another run.name / run.output_dir."
                ) from None
        previous = self.read_holder()
        if previous and previous.get("pid") != os.getpid():
            log.warning("run folder %s: taking over the lock left by %s, which is no longer running",
                        self.run_dir, _describe_holder(previous))
        from .core.artifacts import atomic_write_json

        atomic_write_json(self.holder_path, {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": _now(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "recipe_name": self.recipe_name,
        })
        self._depth = 1

    def _take_over_dead_marker(self, holder: dict[str, Any] | None) -> bool:
        """Soft-lock fallback only: remove a marker whose recorded holder is dead on this host, retry once."""
        from filelock import Timeout

        if not holder or holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        if _pid_alive(holder["pid"]):
            return False
        log.warning("run folder %s: removing the lock of %s, which is no longer running", self.run_dir, _describe_holder(holder))
        with contextlib.suppress(OSError):
            self.path.unlink()
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth:
            return
        holder = self.read_holder()
        if holder and holder.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                self.holder_path.unlink()
        self._lock.release()

    @contextlib.contextmanager
    def held(self):
        self.acquire()
        try:
            yield self
        finally:
            self.release()


@dataclass
class StageOutcome:
    """What happened to one stage in a run (for the summary table)."""

    stage: str
    status: str  # done | cached | disabled | skipped | failed
    detail: str = ""
    duration_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


class _Ranks:
    """Process-group awareness for multi-process launches (torchrun / accelerate launch).

    Every rank runs the same stage function; only the main process touches stage folders,
    markers and manifests, with barriers around those writes. Single-process runs import nothing.
    """

    def __init__(self) -> None:
        import os

        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._state = None
        self._dist = None
        if self.world_size > 1:
            import torch.distributed as dist
            from accelerate import PartialState

            # let accelerate set up the process group the way the Trainer expects it (cpu=True on
            # CPU-only machines, else it reports one process and every rank believes it is main)
            self._state = PartialState(cpu=not _cuda())
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if _cuda() else "gloo")
            self._dist = dist
            self.rank = dist.get_rank()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self._state is not None and self._state.num_processes > 1:
            self._state.wait_for_everyone()
        elif self._dist is not None:
            self._dist.barrier()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunManager:
    """Plans and runs the stages of one recipe."""

    def __init__(self, recipe: Recipe, registry: dict[str, StageSpec] | None = None):
        self.recipe = recipe
        self._ranks: _Ranks | None = None
        self.registry = registry if registry is not None else STAGES
        self.order = [s for s in STAGE_ORDER if s in self.registry] if registry is None else list(self.registry)
        self.run_dir = Path(recipe.run.output_dir).resolve() / recipe.run.name
        self._lock = RunLock(self.run_dir, recipe.run.name)
        self._inputs_checked: set[str] = set()

    @contextlib.contextmanager
    def locked(self):
        """Hold the run folder's lock (main rank only; other ranks run under their main rank's lock).

        Raises :class:`RunLockedError` at once, naming the holder, if another run holds it.
        """
        if os.environ.get("RANK", "0") != "0":
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

    # ---------------------------------------------------------------- fingerprints
    def manifest_path(self, stage: str) -> Path:
        return self.run_dir / stage / MANIFEST_NAME

    def recover(self, stage: str) -> None:
        """Finish a folder swap that a kill interrupted (main rank only).

        A ``.partial`` with a complete manifest is a finished stage that was not yet swapped in;
        a ``.old`` without a ``final`` is the previous result, moved aside just before the kill.
        """
        import os

        if os.environ.get("RANK", "0") != "0":
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

    def read_manifest(self, stage: str) -> dict[str, Any] | None:
        """The stage's manifest if it completed, else None."""
        path = self.manifest_path(stage)
        if not path.exists():
            return None
        manifest = read_json(path)
        return manifest if manifest.get("status") == "complete" else None

    def cache_key(self, spec: StageSpec, upstream: dict[str, dict[str, Any]]) -> tuple[str, dict[str, str]]:
        """Key that decides whether a cached stage result is still valid, and its inputs.

        Only result-affecting settings are hashed (``StageSpec.sections_for``): editing a logging or
        checkpointing field keeps the cached result and resumes an unfinished one.
        """
        inputs = self._inputs(spec, upstream)
        return self._key(spec, spec.sections_for(self.recipe), inputs), inputs

    def _legacy_key(self, spec: StageSpec, inputs: dict[str, str]) -> str:
        """The key of astrosage versions that hashed whole sections: equal means every setting is
        unchanged, so results and unfinished work recorded under it are still valid."""
        return self._key(spec, spec.sections, inputs)

    def _inputs(self, spec: StageSpec, upstream: dict[str, dict[str, Any]]) -> dict[str, str]:
        inputs: dict[str, str] = {}
        for name, manifest in sorted(upstream.items()):
            inputs[f"stage:{name}"] = manifest["artifact_hash"]
        seed = self.recipe.run.seed
        for name, ref in sorted(spec.external(self.recipe).items()):
            if ref:
                inputs[name] = model_fingerprint(ref, self.recipe.model.revision if name == "base" else None, seed)
        return inputs

    def _key(self, spec: StageSpec, sections: tuple[str, ...], inputs: dict[str, str]) -> str:
        payload = {"stage": spec.name, "section_hash": section_hash(self.recipe, *sections), "inputs": inputs}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

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
    def datasets_cache(self):
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
            upstream = self.upstream_manifests(spec)
            key, inputs = self.cache_key(spec, upstream)
            valid_keys = {key, self._legacy_key(spec, inputs)}
            existing = self.read_manifest(stage)
            if existing is not None and existing.get("cache_key") in valid_keys and not force:
                log.info("stage %s: up to date (manifest matches), skipping; use --force to rerun", stage)
                _discard(self.run_dir / stage, tuple(existing.get("discard", ())))  # a kill came between seal and delete
                report(StageOutcome(stage, "cached", "manifest matches", 0.0, existing.get("metrics", {}), self.run_dir / stage))
                continue
            start = time.monotonic()
            try:
                manifest = self._run_stage(spec, key, inputs, upstream, force, valid_keys)
            except BaseException as exc:
                preempted = isinstance(exc, SystemExit) and exc.code == REQUEUE
                status = "preempted" if preempted else "failed"
                detail = "checkpoint saved; rerun to resume" if preempted else f"{type(exc).__name__}: {exc}".splitlines()[0]
                detail = self._redactor().redact(detail)[:200]
                report(StageOutcome(stage, status, detail, time.monotonic() - start, {}, self.run_dir / f"{stage}.partial"))
                raise
            report(StageOutcome(stage, "done", "", time.monotonic() - start, manifest.get("metrics", {}), self.run_dir / stage))
        return outcomes

    def _redactor(self):
        from .core.logs import SecretRedactor

        return SecretRedactor((self.recipe.synth.api_key_env, self.recipe.publish.token_env))

    @property
    def ranks(self) -> _Ranks:
        if self._ranks is None:
            self._ranks = _Ranks()
        return self._ranks

    def _run_stage(
        self,
        spec: StageSpec,
        key: str,
        inputs: dict[str, str],
        upstream: dict[str, dict[str, Any]],
        force: bool,
        valid_keys: set[str] | None = None,
    ) -> dict[str, Any]:
        func = spec.run
        ranks = self.ranks
        if not ranks.is_main:
            return self._run_stage_worker(spec, func, upstream, force)
        final = self.run_dir / spec.name
        partial = final.with_name(final.name + ".partial")
        marker = partial / PARTIAL_MARKER
        if partial.exists():
            previous = read_json(marker).get("cache_key") if marker.exists() else None
            if force or previous not in (valid_keys or {key}):
                self._set_aside(spec.name, partial, "--force" if force else "recipe or inputs changed")
            else:
                log.info("stage %s: resuming unfinished work in %s", spec.name, partial)
                if previous != key:  # recorded under the legacy key: record the current one
                    atomic_write_json(marker, {**read_json(marker), "cache_key": key})
                _remove_torn_writes(partial)
        started = _now()
        t0 = time.monotonic()
        with replacing_dir(final) as work:
            if not marker.exists():
                atomic_write_json(marker, {"cache_key": key, "started_at": started})
            ranks.barrier()  # workers start only once the work folder is ready
            ctx = StageContext(self.recipe, spec.name, self.run_dir, work, upstream, force)
            log.info("stage %s: %s", spec.name, spec.summary)
            result = func(ctx)
            ranks.barrier()  # every rank has finished writing before the folder is sealed
            if not isinstance(result, StageResult):
                raise TypeError(f"stage {spec.name} returned {type(result).__name__}, expected StageResult")
            missing = spec.missing_outputs(work, result)
            if missing:  # never seal a stage that did not write what it promises its readers
                raise PipelineError(f"stage {spec.name} finished without its outputs: " + "; ".join(missing))
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
                "started_at": started,
                "finished_at": _now(),
                "duration_s": round(time.monotonic() - t0, 3),
            }
            atomic_write_json(work / MANIFEST_NAME, _redacted(manifest))
            marker.unlink()  # only now: a kill before this point leaves a resumable .partial
        _discard(final, result.discard)
        ranks.barrier()  # the sealed folder is visible to every rank before the next stage
        return manifest

    def _set_aside(self, stage: str, partial: Path, reason: str) -> None:
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

    def _run_stage_worker(
        self, spec: StageSpec, func: Callable[[StageContext], StageResult], upstream: dict[str, dict[str, Any]], force: bool
    ) -> dict[str, Any]:
        """Non-main ranks: same stage function, same work folder, no folder bookkeeping."""
        ranks = self.ranks
        final = self.run_dir / spec.name
        work = final.with_name(final.name + ".partial")
        ranks.barrier()
        result = func(StageContext(self.recipe, spec.name, self.run_dir, work, upstream, force))
        ranks.barrier()
        ranks.barrier()
        return {"metrics": result.metrics if isinstance(result, StageResult) else {}}


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


def _redacted(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with token-shaped strings (hf_..., sk-..., keyed 40-hex keys, URL passwords) as ``***``.

    Only whole string values are looked at, so hashes and commits (bare hex) are kept as they are."""
    from .core.logs import redact_json

    return redact_json(manifest)


def _section_value(recipe: Recipe, dotted: str) -> Any:
    node: Any = recipe.model_dump(mode="json")
    for part in dotted.split("."):
        node = node[part]
    return node


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
