"""The ``astrosage`` command line.

    astrosage validate recipes/tiny-cpu.yaml
    astrosage run recipes/tiny-cpu.yaml                     # every enabled stage, cached
    astrosage run recipes/x.yaml --stages cpt,sft --force cpt.learning_rate=1e-4
    astrosage cpt recipes/x.yaml                            # one stage
    astrosage eval run recipes/x.yaml                       # the eval stage (also: eval model, eval export-lm-eval)
    astrosage schema [--markdown | --json-schema FILE]
    astrosage tiny-model OUT_DIR [--variant instruct]

Exit codes: 0 ok, 1 a stage failed, 2 invalid recipe or usage, 75 preempted (requeue).
Works as ``python -m astrosage.cli`` too (e.g. under ``accelerate launch -m astrosage.cli``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .cli_eval import eval_app
from .core.distributed import launcher_rank
from .core.recipe import Recipe, RecipeError, check_paths, load_recipe

from .core.exitcodes import BAD_INPUT as EXIT_BAD_INPUT
from .core.exitcodes import REQUEUE as EXIT_REQUEUE
from .core.exitcodes import STAGE_FAILED as EXIT_STAGE_FAILED

console = Console(stderr=True)
out = Console()
log = logging.getLogger("astrosage")

app = typer.Typer(
    name="astrosage",
    help=(
        "Turn a general LLM into an astronomy specialist, the AstroSage way.\n\n"
        "One YAML recipe drives the pipeline: corpus -> synth -> cpt -> sft -> merge -> eval -> publish. "
        "Start with `astrosage validate RECIPE`, then `astrosage run RECIPE`. "
        "Override any field on the command line as section.field=value."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

RecipeArg = typer.Argument(..., help="Recipe YAML file (see `astrosage schema`).", exists=False, dir_okay=False)
OverridesArg = typer.Argument(None, help="Overrides as section.field=value, e.g. cpt.learning_rate=1e-4 run.name=trial.")


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"astrosage {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    """astrosage command line."""


def _load(
    recipe_path: Path, overrides: Optional[list[str]], check_files: bool = True, values: Optional[dict] = None
) -> Recipe:
    """Load + validate a recipe, printing a clear error and exiting 2 on failure.

    ``values`` are typed CLI options by dotted field (never re-read as YAML: ``--time 48:00:00``
    stays the string it is, ``--account 12345`` and ``--partition on`` too).
    """
    try:
        recipe = load_recipe(recipe_path, overrides or [], values=values)
        if check_files:
            check_paths(recipe, source=str(recipe_path))
    except RecipeError as exc:
        console.print(f"[bold red]error:[/] {recipe_path} is not a valid recipe", highlight=False)
        for source, path, msg in exc.problems:
            where = f"{path}: " if path else ""
            console.print(f"  {source}: {where}{msg}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    return recipe


def _setup_logging(recipe: Recipe, log_file: Path | None = None) -> None:
    from .core.logs import setup_logging

    setup_logging(
        recipe.logging.level,
        extra_secret_env_vars=(recipe.synth.api_key_env, recipe.publish.token_env),
        log_file=log_file,
    )


@app.command()
def validate(
    recipe: Path = RecipeArg,
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Check a recipe (schema, cross-field rules, local paths, the content of local inputs) without running anything."""
    loaded = _load(recipe, overrides)
    from .input_checks import check_inputs
    from .stages import STAGES

    report = check_inputs(loaded)
    for line in report.lines(report.warnings):
        console.print(f"[yellow]warning:[/] {escape(line)} (the stage will drop and count it)", highlight=False, soft_wrap=True)
    if report.errors:
        console.print(f"[bold red]error:[/] {recipe}: bad input data", highlight=False)
        for line in report.lines(report.errors):
            console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)

    enabled = [s for s in STAGES if getattr(loaded, s).enabled]
    out.print(f"[green]ok[/]: {recipe} (run '{loaded.run.name}', stages enabled: {', '.join(enabled) or 'none'})")


@app.command()
def schema(
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (for docs)."),
    json_schema: Optional[Path] = typer.Option(None, "--json-schema", help="Write the JSON Schema to this file."),
) -> None:
    """Print every recipe field with its type, default and description."""
    from .core.recipe.doc import iter_fields, schema_json, schema_markdown

    if json_schema is not None:
        from .core.artifacts import atomic_write_text

        atomic_write_text(json_schema, schema_json())
        out.print(f"wrote {json_schema}")
        return
    if markdown:
        sys.stdout.write(schema_markdown())
        return
    table = Table(title="astrosage recipe schema", show_lines=False)
    for col in ("field", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for row in iter_fields():
        style = "bold cyan" if row.type == "section" else None
        table.add_row(row.path, row.type, row.default, row.description, style=style)
    out.print(table)


def _run(recipe_path: Path, overrides: Optional[list[str]], stages: Optional[list[str]], force: bool) -> None:
    recipe = _load(recipe_path, overrides)
    from .runner import PipelineError, RunManager

    manager = RunManager(recipe)
    try:
        selected = manager.select(stages)
        manager.check_inputs(selected)  # content of benchmarks, data files, corpus metadata: before any stage
    except PipelineError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None

    # the run folder's lock first: a second run on the same folder must not touch anything in it
    _setup_logging(recipe)  # console only until the lock is held (taking over a dead run's lock is logged)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(manager.locked())
        except PipelineError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        _run_locked(recipe_path, overrides, recipe, manager, selected, force)


def _run_locked(recipe_path: Path, overrides: Optional[list[str]], recipe: Recipe, manager, selected: list[str], force: bool) -> None:
    from .core.progress import StageProgress, summary_table
    from .runner import PipelineError

    rank = launcher_rank()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    _setup_logging(recipe, manager.run_dir / "logs" / f"{stamp}-rank{rank}.log")
    log.info("run '%s' -> %s", recipe.run.name, manager.run_dir)
    if rank == 0:
        manager.write_resolved_recipe(recipe_path, overrides or [])
    outcomes = []
    failed: BaseException | None = None
    with StageProgress(console, [s for s in selected if manager.enabled(s)]) as progress:
        try:
            manager.run(selected, force=force, on_event=lambda o: (outcomes.append(o), progress.update(o)))
        except PipelineError as exc:
            failed = exc
        except KeyboardInterrupt:
            failed = KeyboardInterrupt("interrupted; rerun the same command to resume")
        except SystemExit as exc:
            if exc.code != EXIT_REQUEUE:
                raise
            failed = exc
        except Exception as exc:  # a stage failed: show the summary, then the error
            failed = exc
            log.exception("stage failed")
    out.print(summary_table(recipe.run.name, outcomes, manager.run_dir))
    if isinstance(failed, SystemExit):
        _mark_requeue()
        console.print(
            f"[bold yellow]preempted:[/] a complete checkpoint was saved; rerun the same command to resume "
            f"(exit code {EXIT_REQUEUE} asks a Slurm job script to requeue)",
            highlight=False,
        )
        raise typer.Exit(EXIT_REQUEUE)
    if failed is not None:
        from .core.logs import SecretRedactor

        text = SecretRedactor((recipe.synth.api_key_env, recipe.publish.token_env)).redact(str(failed))
        console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT if isinstance(failed, PipelineError) else EXIT_STAGE_FAILED)


def _mark_requeue() -> None:
    """Leave ``$ASTROSAGE_REQUEUE_MARKER`` (set by astrosage's sbatch scripts) from the main rank.

    Launchers (torchrun, accelerate launch) do not pass a worker's exit code through, so the
    job script also looks for this file before it requeues.
    """
    marker = os.environ.get("ASTROSAGE_REQUEUE_MARKER")
    if marker and launcher_rank() == 0:
        from .core.artifacts import atomic_write_text

        atomic_write_text(marker, datetime.now().isoformat() + "\n")


@app.command()
def run(
    recipe: Path = RecipeArg,
    overrides: Optional[list[str]] = OverridesArg,
    stages: Optional[str] = typer.Option(None, "--stages", help="Comma-separated stages to run, e.g. cpt,sft (default: all enabled)."),
    force: bool = typer.Option(False, "--force", help="Rerun selected stages even if their manifest matches."),
) -> None:
    """Run the pipeline: every enabled stage in order; finished stages with matching manifests are skipped."""
    _run(recipe, overrides, stages.split(",") if stages else None, force)


def _stage_command(stage: str, summary: str, group: typer.Typer = app, name: str | None = None) -> None:
    """Add ``astrosage <stage> RECIPE`` (or ``name`` under ``group``): the same run as ``astrosage run --stages <stage>``."""

    def command(
        recipe: Path = RecipeArg,
        overrides: Optional[list[str]] = OverridesArg,
        force: bool = typer.Option(False, "--force", help="Rerun even if the manifest matches."),
    ) -> None:
        _run(recipe, overrides, [stage], force)

    def publish_command(
        recipe: Path = RecipeArg,
        overrides: Optional[list[str]] = OverridesArg,
        force: bool = typer.Option(False, "--force", help="Rerun even if the manifest matches."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Write the exact folder that would be uploaded; upload nothing (publish.dry_run=true)."),
    ) -> None:
        _run(recipe, [*(overrides or []), *(["publish.dry_run=true"] if dry_run else [])], [stage], force)

    chosen = publish_command if stage == "publish" else command
    chosen.__doc__ = f"Run only the {stage} stage: {summary}."
    group.command(name=name or stage)(chosen)


def _register_stage_commands() -> None:
    from .stages import STAGES

    for name, spec in STAGES.items():
        if name == "eval":  # `astrosage eval run RECIPE`, beside `eval model` and `eval export-lm-eval`
            _stage_command(name, spec.summary, group=eval_app, name="run")
            app.add_typer(eval_app, name="eval")
            continue
        _stage_command(name, spec.summary)


_register_stage_commands()


@app.command()
def slurm(
    recipe: Path = RecipeArg,
    overrides: Optional[list[str]] = OverridesArg,
    stage: Optional[str] = typer.Option(None, "--stage", help="Stage to run as a job: corpus, synth, cpt, sft, merge, eval or publish."),
    all_stages: bool = typer.Option(False, "--all", help="One job per enabled stage, chained with --dependency=afterok."),
    nodes: Optional[int] = typer.Option(None, "--nodes", help="Nodes for training jobs (slurm.nodes)."),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="GPUs per node (slurm.gpus_per_node)."),
    partition: Optional[str] = typer.Option(None, "--partition", help="Partition (slurm.partition)."),
    time: Optional[str] = typer.Option(None, "--time", help="Wall-time limit, e.g. 48:00:00 (slurm.time)."),
    account: Optional[str] = typer.Option(None, "--account", help="Account (slurm.account)."),
    submit: bool = typer.Option(False, "--submit", help="Submit with sbatch and print the job id(s)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the script(s); write and submit nothing."),
) -> None:
    """Render sbatch jobs for the recipe's stages: srun + accelerate launch per node, requeue on preemption.

    Without --submit the scripts are written to <output_dir>/<run name>/slurm/ and their paths printed.
    Options override the recipe's `slurm` section (and are validated like it).
    """
    from .slurm import SlurmError, enabled_stages, render_job, submit_job, write_job

    if (stage is None) == (not all_stages):
        console.print("[bold red]error:[/] give exactly one of --stage NAME or --all", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    if submit and dry_run:
        console.print("[bold red]error:[/] --submit and --dry-run exclude each other", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    typed = {
        f"slurm.{field}": value
        for field, value in (("nodes", nodes), ("gpus_per_node", gpus_per_node), ("partition", partition), ("time", time), ("account", account))
        if value is not None
    }
    loaded = _load(recipe, overrides, check_files=False, values=typed)
    stages = enabled_stages(loaded) if all_stages else [stage]
    try:
        jobs = [render_job(loaded, name, recipe, overrides or []) for name in stages]  # type: ignore[arg-type]
    except SlurmError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if not jobs:
        console.print("[bold red]error:[/] no stage is enabled in the recipe", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    if dry_run:
        for job in jobs:
            sys.stdout.write(f"# ===== {job.path} =====\n{job.script}")
        return
    previous: str | None = None
    for job in jobs:
        if submit:
            try:
                previous = submit_job(job, dependency=previous)
            except SlurmError as exc:
                console.print(f"[bold red]error:[/] {exc}", highlight=False)
                raise typer.Exit(EXIT_STAGE_FAILED) from None
            out.print(f"submitted {job.stage}: job {previous} ({job.path})")
        else:
            out.print(f"wrote {write_job(job)}  (submit with: sbatch {job.path})")


@app.command("tiny-model")
def tiny_model(
    out_dir: Path = typer.Argument(..., help="Folder to create (must not exist or be empty)."),
    variant: str = typer.Option("base", "--variant", help="'base' or 'instruct' (same tokenizer, different weights)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random weights."),
) -> None:
    """Write the offline tiny Llama model (random weights + tokenizer + chat template)."""
    from .core.tiny import build_tiny_model, count_parameters

    if variant not in ("base", "instruct"):
        console.print(f"[bold red]error:[/] --variant {variant!r} is not one of 'base', 'instruct'")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        path = build_tiny_model(out_dir, variant=variant, seed=seed)  # type: ignore[arg-type]
    except FileExistsError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    out.print(f"wrote tiny {variant} model ({count_parameters(path):,} parameters) to {path}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
