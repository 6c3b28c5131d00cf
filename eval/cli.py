"""`astrosage eval`: one command, three forms.

    astrosage eval RECIPE [section.field=value ...] [--force]        # the pipeline's eval stage
    astrosage eval --model PATH --benchmark FILE --out DIR [--method letter|choices|generate]
                   [--batch-size N] [--limit N]                       # one checkpoint, standalone
    astrosage eval export-lm-eval --benchmark FILE --out DIR          # lm-evaluation-harness task

Exit code 2 with a clear message on bad input (bad file, bad option, missing model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from enum import Enum

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

EXIT_BAD_INPUT = 2
EXPORT = "export-lm-eval"

console = Console(stderr=True)


class Method(str, Enum):
    """Scoring methods."""

    letter = "letter"
    choices = "choices"
    generate = "generate"


class Dtype(str, Enum):
    """Model dtypes."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Backend(str, Enum):
    """Generation engines."""

    transformers = "transformers"
    vllm = "vllm"

out = Console()

HELP = (
    "Score checkpoints on AstroMLab-style multiple-choice benchmarks.\n\n"
    "[bold]astrosage eval RECIPE \\[overrides][/]: run the pipeline's eval stage (base model + every checkpoint).\n\n"
    "[bold]astrosage eval --model PATH --benchmark FILE --out DIR[/]: score one model; reports, predictions and plots go to DIR.\n\n"
    "[bold]astrosage eval export-lm-eval --benchmark FILE --out DIR[/]: write an lm-evaluation-harness task (YAML + data)."
)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    )


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    if pct:
        return f"{100 * x:.1f}%"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def results_table(report: dict[str, Any], out_dir: Path) -> Table:
    """The final table of the standalone form."""
    table = Table(title=f"{report['model_name']} on {report['benchmark_name']} ({report['method']})  ->  {out_dir}", title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    ci = report.get("accuracy_ci95")
    table.add_row("questions", f"{report['n']} (scored now {report['scored_now']}, cached {report['from_cache']})")
    table.add_row("accuracy", _fmt(report["accuracy"], True) + (f"  [{_fmt(ci[0], True)}, {_fmt(ci[1], True)}]" if ci else ""))
    if "accuracy_norm" in report:
        table.add_row("accuracy (length-normalised)", _fmt(report["accuracy_norm"], True))
    if "extraction_failure_rate" in report:
        table.add_row("extraction failures", _fmt(report["extraction_failure_rate"], True))
    for key in ("ece", "brier", "nll", "mean_confidence"):
        table.add_row(key, _fmt(report[key]))
    if report.get("questions_per_second"):
        table.add_row("questions / s", f"{report['questions_per_second']:.1f}")
    if not report["labelled"]:
        table.add_row("submission", str(out_dir / "submission.txt"))
    return table


def _standalone(model: str, benchmark: str, out_dir: Path, settings: Any, split: Optional[str], name: Optional[str]) -> None:
    from astrosage.core.models import resolve_model

    from .data import BenchmarkError
    from .evaluator import evaluate
    from .generate import BackendNotAvailable
    from .scoring import ScoringError

    try:
        model_path = resolve_model(model, Path("runs"))
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    with _progress_bar() as progress:
        task = progress.add_task(f"{settings.method}: {Path(benchmark).name}", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            report = evaluate(model_path, benchmark, out_dir, settings, name=name or Path(model).name, split=split, on_progress=on_progress)
        except (BenchmarkError, BackendNotAvailable, ScoringError, ValueError) as exc:
            progress.stop()
            _fail(str(exc))
        except OSError as exc:  # e.g. an unknown Hub id or a Hub model with no network
            progress.stop()
            _fail(f"{type(exc).__name__}: {exc}")
    out.print(results_table(report, out_dir))


def _export(benchmark: str, out_dir: Path, method: str, task: Optional[str], split: Optional[str], limit: Optional[int],
            allow_unlabelled: bool = False) -> None:
    from .data import BenchmarkError
    from .lm_eval_export import export_lm_eval

    try:
        path = export_lm_eval(benchmark, out_dir, task=task, method=method, split=split, limit=limit, allow_unlabelled=allow_unlabelled)
    except (BenchmarkError, ValueError) as exc:
        _fail(str(exc))
    task_name = path.stem
    out.print(f"wrote {path} and {path.with_suffix('.jsonl')}")
    out.print(f"run it with: lm_eval --model hf --model_args pretrained=MODEL --include_path {out_dir} --tasks {task_name}")


def register(app: typer.Typer, run_stage: Callable[[Path, Optional[list[str]], Optional[list[str]], bool], None]) -> None:
    """Add the `eval` command to the astrosage app; ``run_stage`` runs pipeline stages of a recipe."""

    @app.command("eval", help=HELP, no_args_is_help=True)
    def eval_command(
        args: Optional[list[str]] = typer.Argument(
            None, metavar="[RECIPE [OVERRIDES]... | export-lm-eval]", help="A recipe (and section.field=value overrides), or export-lm-eval."
        ),
        model: Optional[str] = typer.Option(None, "--model", help="Standalone: model folder, Hub id or tiny:base."),
        benchmark: Optional[str] = typer.Option(None, "--benchmark", help="MCQ file (json/jsonl/csv/parquet), saved dataset folder or Hub dataset."),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder for reports (or the lm-eval task)."),
        method: Optional[Method] = typer.Option(None, "--method", help="Scoring method (default letter)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Questions per batch (default 8)."),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Score only the first N questions."),
        split: Optional[str] = typer.Option(None, "--split", help="Split of a Hub dataset."),
        dtype: Dtype = typer.Option(Dtype.float32, "--dtype", help="Model dtype (standalone)."),
        backend: Backend = typer.Option(Backend.transformers, "--backend", help="Generation engine for --method generate."),
        max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="Generation budget (--method generate)."),
        thinking: bool = typer.Option(False, "--thinking", help="Let the model reason in <think> first (--method generate)."),
        name: Optional[str] = typer.Option(None, "--name", help="Model name in reports (standalone) or task name (export)."),
        force: bool = typer.Option(False, "--force", help="Recipe form: rerun the stage even if its manifest matches."),
        unlabelled: bool = typer.Option(False, "--unlabelled", help="export-lm-eval: allow questions without answers (placeholder targets)."),
    ) -> None:
        args = list(args or [])
        method_name = method.value if method is not None else None
        if args and args[0] == EXPORT:
            if len(args) > 1:
                _fail(f"unexpected argument(s) after {EXPORT}: {' '.join(args[1:])}")
            if model is not None:
                _fail(f"{EXPORT} does not take --model (lm-eval loads the model itself)")
            if not benchmark or out_dir is None:
                _fail(f"{EXPORT} needs --benchmark FILE and --out DIR")
            if method_name == "generate":
                _fail(f"{EXPORT} supports --method letter or choices")
            _export(benchmark, out_dir, method_name or "letter", name, split, limit, unlabelled)
            return
        if model is not None:
            if args:
                _fail(f"give either a recipe or --model, not both (got {' '.join(args)!r} and --model {model})")
            if not benchmark or out_dir is None:
                _fail("the standalone form needs --model PATH --benchmark FILE --out DIR")
            from .evaluator import EvalSettings

            try:
                settings = EvalSettings(
                    method=method_name or "letter", batch_size=batch_size or 8, limit=limit, dtype=dtype.value,
                    backend=backend.value, max_new_tokens=max_new_tokens, thinking=thinking,
                )
            except ValueError as exc:
                _fail(str(exc))
            _standalone(model, benchmark, out_dir, settings, split, name)
            return
        if not args:
            _fail("give a recipe (astrosage eval RECIPE), --model/--benchmark/--out, or export-lm-eval; see --help")
        if benchmark or out_dir is not None:
            _fail("--benchmark/--out belong to the standalone form (with --model); a recipe lists its benchmarks under eval.benchmarks")
        overrides = args[1:]
        overrides += [f"eval.method={method_name}"] if method_name else []
        overrides += [f"eval.batch_size={batch_size}"] if batch_size else []
        overrides += [f"eval.limit={limit}"] if limit else []
        _check_recipe_benchmarks(Path(args[0]), overrides)
        run_stage(Path(args[0]), overrides, ["eval"], force)


def _check_recipe_benchmarks(recipe_path: Path, overrides: list[str]) -> None:
    """Fail with exit 2 before any model is loaded if a benchmark of the recipe is unusable.

    An invalid recipe is left to ``run_stage``, which reports it in the pipeline's own words.
    """
    from astrosage.core.recipe import RecipeError, load_recipe

    from .data import BenchmarkError, iter_raw_rows, make_question

    try:
        recipe = load_recipe(recipe_path, overrides)
    except RecipeError:
        return
    for bench in recipe.eval.benchmarks:
        if not Path(bench.path).expanduser().exists():
            continue  # Hub datasets are checked when the stage loads them
        try:
            for i, (row, where) in enumerate(iter_raw_rows(bench.path, bench.split)):
                make_question(row, i, f"{bench.path}: {where}")
        except BenchmarkError as exc:
            _fail(f"eval.benchmarks '{bench.name}': {exc}")
