"""`astrosage eval`: the evaluator's sub-commands.

    astrosage eval run RECIPE [section.field=value ...] [--force]    # the pipeline's eval stage
    astrosage eval model --model PATH --benchmark FILE --out DIR [--method letter|choices|generate]
                   [--batch-size N] [--limit N] ...                  # one checkpoint, standalone
    astrosage eval export-lm-eval --benchmark FILE --out DIR         # lm-evaluation-harness task

``run`` is added by :mod:`astrosage.cli` (it is ``astrosage run --stages eval``); this module holds
the standalone commands, which need no recipe. Exit code 2 with a clear message on bad input (bad
file, bad option, missing model) and for the old forms ``astrosage eval RECIPE`` /
``astrosage eval --model ...``, naming the sub-command to use instead.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from .core.exitcodes import BAD_INPUT as EXIT_BAD_INPUT

EXPORT = "export-lm-eval"
#: options of the standalone form (``model``): given without a sub-command they mean the old form
STANDALONE_OPTIONS = ("--model", "--benchmark", "--out", "--method", "--batch-size", "--limit", "--dtype", "--backend")

console = Console(stderr=True)
out = Console()


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


def _fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


class EvalGroup(TyperGroup):
    """The ``eval`` group: points the old one-command forms at their sub-command instead of 'No such command'."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        """Reject ``astrosage eval RECIPE`` and ``astrosage eval --model ...``, naming the new form."""
        first = args[0] if args else None
        if first is None or first in self.commands or first in ctx.help_option_names or ctx.resilient_parsing:
            return super().parse_args(ctx, args)
        given = " ".join(args)
        if any(a.lower().endswith((".yaml", ".yml")) for a in args if not a.startswith("-")) or not first.startswith("-"):
            _fail(f"the pipeline's eval stage is now `astrosage eval run RECIPE`: astrosage eval run {' '.join(_as_overrides(args))} "
                  f"(sub-commands: {', '.join(self.list_commands(ctx))}; see astrosage eval --help)")
        if first.split("=", 1)[0] in STANDALONE_OPTIONS:
            _fail(f"scoring one checkpoint is now `astrosage eval model`: astrosage eval model {given} "
                  "(see astrosage eval model --help)")
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        """``run`` (the pipeline stage) first, then the standalone commands."""
        return sorted(self.commands, key=lambda name: name != "run")


#: options of the old recipe form, now written as overrides of the eval section
_RECIPE_OPTIONS = {"--method": "eval.method", "--batch-size": "eval.batch_size", "--limit": "eval.limit"}


def _as_overrides(args: list[str]) -> list[str]:
    """The old recipe form's arguments as ``eval run`` takes them: the recipe first, ``--limit 3`` as ``eval.limit=3``."""
    out, i = [], 0
    while i < len(args):
        option, _, value = args[i].partition("=")
        if option in _RECIPE_OPTIONS and (value or i + 1 < len(args)):
            if not value:
                i += 1
                value = args[i]
            out.append(f"{_RECIPE_OPTIONS[option]}={value}")
        else:
            out.append(args[i])
        i += 1
    positional = [i for i, a in enumerate(out) if not a.startswith("-")]
    at = next((i for i in positional if out[i].lower().endswith((".yaml", ".yml"))), positional[0] if positional else 0)
    return [out[at], *out[:at], *out[at + 1:]] if out else out


eval_app = typer.Typer(
    name="eval",
    cls=EvalGroup,
    help=(
        "Score checkpoints on AstroMLab-style multiple-choice benchmarks.\n\n"
        "[bold]astrosage eval run RECIPE \\[overrides][/]: the pipeline's eval stage (base model + every checkpoint).\n\n"
        "[bold]astrosage eval model --model PATH --benchmark FILE --out DIR[/]: score one model; reports, predictions and plots go to DIR.\n\n"
        "[bold]astrosage eval export-lm-eval --benchmark FILE --out DIR[/]: write an lm-evaluation-harness task (YAML + data)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# ------------------------------------------------------------------------------------ eval model


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
    """The final table of ``astrosage eval model``."""
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


@eval_app.command("model", no_args_is_help=True)
def model_command(
    model: Optional[str] = typer.Option(None, "--model", help="Model folder, Hub id or tiny:base."),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="MCQ file (json/jsonl/csv/parquet), saved dataset folder or Hub dataset."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder for report.json/md, predictions and plots."),
    method: Method = typer.Option(Method.letter, "--method", help="Scoring method."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Questions per batch."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Score only the first N questions."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of a Hub dataset."),
    dtype: Dtype = typer.Option(Dtype.float32, "--dtype", help="Model dtype."),
    backend: Backend = typer.Option(Backend.transformers, "--backend", help="Generation engine for --method generate."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="Generation budget (--method generate)."),
    thinking: bool = typer.Option(False, "--thinking", help="Let the model reason in <think> first (--method generate)."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name in the reports (default: the folder name)."),
) -> None:
    """Score one checkpoint on one benchmark, without a recipe; reports, predictions and plots go to --out."""
    if not model or not benchmark or out_dir is None:
        _fail("astrosage eval model needs --model PATH --benchmark FILE --out DIR")
    from eval.evaluator import EvalSettings

    try:
        settings = EvalSettings(method=method.value, batch_size=batch_size, limit=limit, dtype=dtype.value,
                                backend=backend.value, max_new_tokens=max_new_tokens, thinking=thinking)
    except ValueError as exc:
        _fail(str(exc))
    _score_one(model, benchmark, out_dir, settings, split, name)


def _score_one(model: str, benchmark: str, out_dir: Path, settings: Any, split: Optional[str], name: Optional[str]) -> None:
    from eval.data import BenchmarkError
    from eval.evaluator import evaluate
    from eval.generate import BackendNotAvailable
    from eval.scoring import ScoringError

    from .core.models import resolve_model

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


# ------------------------------------------------------------------------------------ eval export-lm-eval


@eval_app.command(EXPORT, no_args_is_help=True)
def export_command(
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="MCQ file (json/jsonl/csv/parquet), saved dataset folder or Hub dataset."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the task YAML and its data."),
    method: Method = typer.Option(Method.letter, "--method", help="letter or choices (lm-eval scores by log-likelihood)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of a Hub dataset."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Export only the first N questions."),
    name: Optional[str] = typer.Option(None, "--name", help="Task name (default: from the benchmark file name)."),
    unlabelled: bool = typer.Option(False, "--unlabelled", help="Allow questions without answers (placeholder targets)."),
) -> None:
    """Write an lm-evaluation-harness task (YAML + JSONL) for a benchmark; lm-eval loads the model itself."""
    from eval.data import BenchmarkError
    from eval.lm_eval_export import export_lm_eval

    if not benchmark or out_dir is None:
        _fail(f"{EXPORT} needs --benchmark FILE and --out DIR")
    if method is Method.generate:
        _fail(f"{EXPORT} supports --method letter or choices")
    try:
        path = export_lm_eval(benchmark, out_dir, task=name, method=method.value, split=split, limit=limit, allow_unlabelled=unlabelled)
    except (BenchmarkError, ValueError) as exc:
        _fail(str(exc))
    out.print(f"wrote {path} and {path.with_suffix('.jsonl')}")
    out.print(f"run it with: lm_eval --model hf --model_args pretrained=MODEL --include_path {out_dir} --tasks {path.stem}")
