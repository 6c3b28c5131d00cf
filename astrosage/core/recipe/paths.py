"""Checking, before a stage runs, that the local files and folders a recipe names exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models import is_local_reference
from .errors import RecipeError, _short
from .recipe import Recipe


def check_paths(recipe: Recipe, source: str = "<recipe>") -> None:
    """Check that every local file/folder the enabled stages read exists; raise RecipeError if not.

    Relative paths are resolved against the current directory, as the stages will do.
    """
    problems: list[tuple[str, str, str]] = []

    def need(dotted: str, value: Any, is_dir: bool = False) -> None:
        path = Path(str(value)).expanduser()
        ok = path.is_dir() if is_dir else path.exists()
        if not ok:
            kind = "folder" if is_dir else "file"
            problems.append((source, dotted, f"{kind} {str(value)!r} does not exist (resolved to {path.resolve()})"))

    # the run folder goes under run.output_dir: a file anywhere on that path makes every stage fail
    existing = Path(str(recipe.run.output_dir)).expanduser() / recipe.run.name
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        problems.append((source, "run.output_dir", f"{_short(str(recipe.run.output_dir))}: {existing} is a file, not a folder"))

    for field_name in ("base", "base_instruct", "tokenizer"):
        ref = getattr(recipe.model, field_name)
        if ref and is_local_reference(ref):
            need(f"model.{field_name}", ref, is_dir=True)
    if recipe.corpus.enabled:
        if recipe.corpus.source == "local" and recipe.corpus.local_dir is not None:
            need("corpus.local_dir", recipe.corpus.local_dir, is_dir=True)
        for i, p in enumerate(recipe.corpus.decontamination.benchmarks):
            need(f"corpus.decontamination.benchmarks[{i}]", p)
    for stage in ("cpt", "sft"):
        section = getattr(recipe, stage)
        if section.enabled and section.deepspeed is not None:
            need(f"{stage}.deepspeed", section.deepspeed)
        if section.enabled:
            for i, mix in enumerate(section.general_mix):
                if is_local_reference(mix.path):
                    need(f"{stage}.general_mix[{i}].path", mix.path)
    if recipe.synth.enabled and not recipe.corpus.enabled and recipe.synth.docs is not None:
        need("synth.docs", recipe.synth.docs)
    if recipe.synth.enabled and recipe.synth.prompt_dir is not None:
        need("synth.prompt_dir", recipe.synth.prompt_dir, is_dir=True)
    if recipe.corpus.enabled and recipe.corpus.source == "s3_bulk":
        import glob

        for i, pattern in enumerate(recipe.corpus.bulk_tars):
            if "://" not in pattern and not glob.glob(str(Path(pattern).expanduser())):
                problems.append((source, f"corpus.bulk_tars[{i}]", f"{pattern!r} matches no file"))
    if recipe.sft.enabled and recipe.sft.dataset and is_local_reference(recipe.sft.dataset.path):
        need("sft.dataset.path", recipe.sft.dataset.path)
    if recipe.sft.enabled and recipe.sft.chat_template not in ("model", "instruct", "chatml", "llama3"):
        need("sft.chat_template", recipe.sft.chat_template)
    if recipe.cpt.enabled and not recipe.corpus.enabled and recipe.cpt.dataset and is_local_reference(recipe.cpt.dataset):
        need("cpt.dataset", recipe.cpt.dataset)
    if recipe.merge.enabled and recipe.merge.mergekit_yaml is not None:
        need("merge.mergekit_yaml", recipe.merge.mergekit_yaml)
    if recipe.eval.enabled or recipe.corpus.enabled or recipe.synth.enabled:
        for i, bench in enumerate(recipe.eval.benchmarks):
            if is_local_reference(bench.path):
                need(f"eval.benchmarks[{i}].path", bench.path)
    if problems:
        raise RecipeError(problems)
