"""The model card: Hub metadata (incl. ``model-index`` eval results) + a readable description.

Built with huggingface_hub's ``ModelCardData`` / ``EvalResult`` / ``ModelCard`` and parsed back
before it is written, so a card that the Hub tools cannot read is never published.

Evaluation results come from the eval stage's ``comparison.json``. Fields used (anything else is
ignored; a missing or malformed file means "no evaluation"): ``method`` (str) and ``rows``, a list
of objects with ``checkpoint`` (e.g. ``base``, ``sft``, ``merge``, ``merge@w0.75``),
``benchmark`` (name from ``eval.benchmarks``), ``model`` (path), ``n``, ``accuracy`` (null for
unlabelled sets), ``ci95``, ``delta_vs_base``, ``ece``, ``brier``, ``nll``. The rows of the
published checkpoint (``checkpoint`` equal to its stage name, or ``model`` equal to its path)
go into ``model-index``; every row appears in the card's comparison table. ``perplexity`` (optional)
lists held-out text rows: ``checkpoint``, ``set`` (``heldout`` = the corpus's held-out papers, or
an ``eval.perplexity_sets`` name), ``model``, ``n_docs``, ``bits_per_byte``, ``perplexity``,
``delta_bpb_vs_base``; :func:`read_comparison` returns them among the rows with
``kind: "perplexity"`` and ``benchmark`` = the set name, and the card lists bits per byte beside
MCQ accuracy (in ``model-index`` too).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .core.recipe import Recipe

log = logging.getLogger("astrosage")

__all__ = ["CardInputs", "read_comparison", "rows_for_checkpoint", "build_card", "resolve_license", "is_hub_id", "sanitize", "dataset_sources"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SOURCE_URL = "https://github.com/astrosage/astrosage"
CALIBRATION = {"ece": "Expected calibration error (15 bins)", "brier": "Brier score", "nll": "Negative log-likelihood"}


def is_hub_id(ref: str | None) -> bool:
    """True for 'owner/name' references that are not local folders or tiny: models."""
    if not ref or ref.startswith(("tiny:", ".", "/", "~")) or Path(ref).expanduser().exists():
        return False
    return bool(_HUB_ID.match(ref))


def sanitize(text: str, output_dir: Path) -> str:
    """Replace local absolute paths (the runs folder, the home folder) by portable names."""
    root = str(Path(output_dir).resolve())
    text = text.replace(root + "/", f"{Path(root).name}/").replace(root, Path(root).name)
    home = str(Path.home())
    if len(home) > 1:
        text = text.replace(home + "/", "~/")
    return text


# ------------------------------------------------------------------------------------ eval results


def read_comparison(path: Path | None) -> tuple[list[dict[str, Any]], str | None]:
    """(rows, method) from the eval stage's comparison.json; ([], None) when absent or unreadable."""
    if path is None or not path.is_file():
        return [], None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return [], None
    rows = data.get("rows") if isinstance(data, dict) else data
    method = data.get("method") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return [], None
    good = [r for r in rows if isinstance(r, dict) and isinstance(r.get("checkpoint"), str) and isinstance(r.get("benchmark"), str)]
    ppl = data.get("perplexity") if isinstance(data, dict) else None
    for r in ppl if isinstance(ppl, list) else []:
        if isinstance(r, dict) and isinstance(r.get("checkpoint"), str) and isinstance(r.get("set"), str):
            good.append({**r, "kind": "perplexity", "benchmark": r["set"]})
    return good, method if isinstance(method, str) else None


def rows_for_checkpoint(rows: list[dict[str, Any]], stage: str, model_path: str) -> list[dict[str, Any]]:
    """The comparison rows that score the published model."""
    resolved = str(Path(model_path).resolve()) if Path(model_path).exists() else model_path
    picked = []
    for row in rows:
        path = row.get("model")
        same_path = isinstance(path, str) and Path(path).exists() and str(Path(path).resolve()) == resolved
        if row["checkpoint"] == stage or same_path:
            picked.append(row)
    return picked


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def eval_results(rows: list[dict[str, Any]], recipe: Recipe, method: str | None) -> list[Any]:
    """huggingface_hub EvalResults (accuracy and calibration metrics) for the published model's rows."""
    from huggingface_hub import EvalResult

    benches = {b.name: b for b in recipe.eval.benchmarks}
    sets = {s.name: s for s in recipe.eval.perplexity_sets}
    results = []
    for row in rows:
        if row.get("kind") == "perplexity":
            results += _perplexity_results(row, sets.get(row["benchmark"]))
            continue
        bench = benches.get(row["benchmark"])
        dataset_type = bench.path if bench is not None and is_hub_id(bench.path) else row["benchmark"]
        common = dict(
            task_type="text-generation",
            task_name=f"Astronomy multiple-choice QA ({method or 'letter'} scoring)",
            dataset_type=dataset_type,
            dataset_name=row["benchmark"],
            dataset_split=bench.split if bench is not None else None,
            source_name="astrosage eval",
            source_url=SOURCE_URL,
        )
        acc = _number(row.get("accuracy"))
        if acc is not None:
            results.append(EvalResult(metric_type="accuracy", metric_value=acc, metric_name="Accuracy", **common))
        if acc is None:
            continue  # unlabelled benchmark: calibration is undefined too
        for key, name in CALIBRATION.items():
            value = _number(row.get(key))
            if value is not None:
                results.append(EvalResult(metric_type=key, metric_value=value, metric_name=name, **common))
    return results


def _perplexity_results(row: dict[str, Any], ref: Any) -> list[Any]:
    """Bits per byte (and perplexity) on a held-out text set, as model-index results."""
    from huggingface_hub import EvalResult

    held = row["benchmark"] == "heldout"
    common = dict(
        task_type="text-generation",
        task_name="Held-out astronomy text (language modelling)" if held else "Language modelling",
        dataset_type=ref.path if ref is not None and is_hub_id(ref.path) else row["benchmark"],
        dataset_name="held-out arXiv astro-ph papers (corpus split)" if held else row["benchmark"],
        dataset_config=ref.config if ref is not None else None,
        dataset_split=ref.split if ref is not None and is_hub_id(ref.path) else None,
        source_name="astrosage eval",
        source_url=SOURCE_URL,
    )
    out = []
    bpb = _number(row.get("bits_per_byte"))
    if bpb is not None:
        out.append(EvalResult(metric_type="bits_per_byte", metric_value=bpb, metric_name="Bits per byte", **common))
    ppl = _number(row.get("perplexity"))
    if ppl is not None:
        out.append(EvalResult(metric_type="perplexity", metric_value=ppl, metric_name="Perplexity (per token)", **common))
    return out


# ------------------------------------------------------------------------------------ the card


@dataclass
class CardInputs:
    """Everything the card is made from."""

    recipe: Recipe
    model_stage: str
    model_path: str
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_rows: list[dict[str, Any]] = field(default_factory=list)
    eval_method: str | None = None
    mergekit_yaml: str | None = None
    sweep_table: str | None = None
    licences: dict[str, str] = field(default_factory=dict)
    license: str = "other"  # resolved by resolve_license()
    license_source: str = "unknown"

    @property
    def name(self) -> str:
        repo = self.recipe.publish.repo_id
        return repo.split("/", 1)[1] if repo else self.recipe.run.name


def dataset_sources(recipe: Recipe, licences: dict[str, str]) -> list[dict[str, str]]:
    """Training data: name, stage, licence, note (corpora themselves are never published)."""
    out: list[dict[str, str]] = []
    c = recipe.corpus
    if c.enabled and (recipe.cpt.enabled or recipe.synth.enabled):
        cats = ", ".join(c.categories + (["gr-qc"] if c.include_gr_qc else []))
        span = f", {c.date_from or '…'} to {c.date_to or '…'}" if (c.date_from or c.date_to) else ""
        out.append(
            {
                "name": f"arXiv papers ({cats}{span}; source: {c.source})",
                "stage": "cpt" + (", synth" if recipe.synth.enabled else ""),
                "licence": "each paper under its authors' choice (arXiv non-exclusive distribution licence, CC BY, "
                "CC BY-SA, CC BY-NC-SA, CC BY-NC-ND or CC0)",
                "note": "full texts used for training only; not redistributed",
            }
        )
    if recipe.synth.enabled and recipe.sft.enabled:
        teacher = recipe.synth.teacher_model or recipe.model.base_instruct or "unknown"
        out.append(
            {
                "name": f"synthetic QA generated by {teacher} from the corpus",
                "stage": "sft",
                "licence": f"subject to the terms of use of {teacher}",
                "note": "not redistributed",
            }
        )
    mixes = [("cpt", m) for m in recipe.cpt.general_mix if recipe.cpt.enabled]
    mixes += [("sft", m) for m in recipe.sft.general_mix if recipe.sft.enabled]
    for stage, mix in mixes:
        out.append(_external_dataset(mix.path, stage, licences, f"general mix, weight {mix.weight:g}"))
    if recipe.sft.enabled and recipe.sft.dataset:
        out.append(_external_dataset(recipe.sft.dataset.path, "sft", licences, "conversational data"))
    return out


def _external_dataset(ref: str, stage: str, licences: dict[str, str], note: str) -> dict[str, str]:
    if is_hub_id(ref):
        licence = licences.get(ref) or "see the dataset card"
        return {"name": f"[{ref}](https://huggingface.co/datasets/{ref})", "stage": stage, "licence": licence, "note": note}
    return {"name": f"local file {Path(ref).name}", "stage": stage, "licence": "see the data's source", "note": note}


def resolve_license(recipe: Recipe, base_ref: str) -> tuple[str, str]:
    """The card's licence and where it came from: publish.license, else the base model's card."""
    if recipe.publish.license:
        return recipe.publish.license, "publish.license"
    from huggingface_hub import ModelCard, constants

    readme = Path(base_ref) / "README.md"
    card_ref = str(readme) if readme.is_file() else (base_ref if is_hub_id(base_ref) and not constants.is_offline_mode() else None)
    if card_ref is not None:
        try:
            licence = ModelCard.load(card_ref).data.license
        except Exception:  # a missing or unreadable card is not fatal: fall through to 'other'
            licence = None
        if isinstance(licence, str) and licence:
            return licence, f"from the base model's card ({recipe.model.base})"
    log.warning("publish: the base model's licence is unknown (no readable model card); the card says 'other': set publish.license")
    return "other", "unknown: set publish.license"


def build_card(inputs: CardInputs) -> Any:
    """Assemble the ModelCard; raises ValueError if huggingface_hub cannot read it back."""
    from huggingface_hub import ModelCard, ModelCardData

    recipe = inputs.recipe
    results = eval_results(rows_for_checkpoint(inputs.eval_rows, inputs.model_stage, inputs.model_path), recipe, inputs.eval_method)
    bases = [ref for ref in (recipe.model.base, recipe.model.base_instruct if inputs.model_stage == "merge" else None) if is_hub_id(ref)]
    datasets = sorted({m.path for m in recipe.cpt.general_mix + recipe.sft.general_mix if is_hub_id(m.path)} | (
        {recipe.sft.dataset.path} if recipe.sft.dataset and is_hub_id(recipe.sft.dataset.path) else set()
    ))
    tags = ["astronomy", "astrophysics", "astrosage"] + (["merge", "mergekit"] if inputs.model_stage == "merge" else [])
    extra: dict[str, Any] = {}
    if bases:
        extra["base_model_relation"] = "merge" if inputs.model_stage == "merge" and len(bases) > 1 else "finetune"
    data = ModelCardData(
        language="en",
        license=inputs.license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
        base_model=bases or None,
        datasets=datasets or None,
        model_name=inputs.name,
        eval_results=results or None,
        **extra,
    )
    body = sanitize(_body(inputs, results), recipe.run.output_dir)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    parsed = ModelCard(str(card))  # the Hub tools must read back what we wrote
    if len(parsed.data.eval_results or []) != len(results):
        raise ValueError("model card: huggingface_hub did not read back the model-index eval results")
    return card


def _body(inputs: CardInputs, results: list[Any]) -> str:
    r = inputs.recipe
    stage = inputs.model_stage
    out = [f"# {inputs.name}", ""]
    steps = []
    if r.cpt.enabled:
        steps.append("continued pretraining on astronomy papers from arXiv")
    if r.sft.enabled:
        steps.append("supervised fine-tuning on synthetic astronomy question-answer pairs" + (" with reasoning chains" if r.sft.reasoning_fraction > 0 else ""))
    if stage == "merge":
        steps.append(f"a {r.merge.method} merge with {r.model.base_instruct}")
    out += [
        f"An astronomy-specialised language model built with [astrosage](https://github.com/astrosage/astrosage) from "
        f"**{r.model.base}**: {'; '.join(steps) or 'no training stage'} — the recipe of AstroSage-8B/70B "
        "(AstroMLab; arXiv:2411.09012, arXiv:2505.17592).",
        "",
        "## Model details",
        "",
        f"- Base model: `{r.model.base}`" + (f" (revision `{r.model.revision}`)" if r.model.revision else ""),
    ]
    if r.model.base_instruct:
        out.append(f"- Instruct sibling: `{r.model.base_instruct}`")
    out += [f"- Published checkpoint: output of the `{stage}` stage", f"- Licence: `{inputs.license}` ({inputs.license_source})", ""]
    out += _data_section(inputs)
    out += _training_section(inputs)
    if stage == "merge":
        out += _merge_section(inputs)
    out += _eval_section(inputs, results)
    out += _use_and_limits(r)
    out += ["## Recipe", "", "The enabled sections of the astrosage recipe that produced this model (values that differ from "
            "the defaults):", "", "```yaml", yaml.safe_dump(_recipe_view(r), sort_keys=False, width=120).rstrip(), "```", ""]
    return "\n".join(out)


#: recipe values left out of the card (contact details, private endpoints, local layout)
_PRIVATE_FIELDS = {"run": ("output_dir",), "corpus": ("contact_email",), "synth": ("api_base",)}


def _recipe_view(r: Recipe) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for name in ("run", "model", "corpus", "synth", "cpt", "sft", "merge", "eval"):
        section = getattr(r, name)
        if not getattr(section, "enabled", True):
            continue
        values = section.model_dump(mode="json", exclude_defaults=True)
        for key in _PRIVATE_FIELDS.get(name, ()):
            values.pop(key, None)
        view[name] = values
    return view


def _data_section(inputs: CardInputs) -> list[str]:
    sources = dataset_sources(inputs.recipe, inputs.licences)
    out = ["## Training data", ""]
    if not sources:
        return out + ["No training data: this checkpoint was not trained by astrosage (see the recipe below).", ""]
    out += ["| data | used in | licence | note |", "|---|---|---|---|"]
    out += [f"| {s['name']} | {s['stage']} | {s['licence']} | {s['note']} |" for s in sources]
    return out + ["", "The training corpora are not part of this repository and are never uploaded.", ""]


def _training_section(inputs: CardInputs) -> list[str]:
    out = ["## Training procedure", ""]
    r = inputs.recipe
    for name in ("corpus", "synth", "cpt", "sft", "merge"):
        manifest = inputs.manifests.get(name)
        if manifest is None:
            continue
        line = f"**{name}**"
        section = getattr(r, name)
        if name in ("cpt", "sft"):
            line += (f": lr {section.learning_rate:g} ({section.lr_scheduler}, warm-up {section.warmup_ratio:g}), "
                     f"{section.max_steps or section.num_epochs} {'steps' if section.max_steps else 'epoch(s)'}, "
                     f"sequence length {section.max_seq_len}")
        out += [line, ""]
        stats = {**_scalars(manifest.get("counts")), **_scalars(manifest.get("metrics"))}
        if manifest.get("duration_s") is not None:
            stats["duration_s"] = manifest["duration_s"]
        pk = manifest.get("packages") or {}
        versions = ", ".join(f"{k} {pk[k]}" for k in ("torch", "transformers", "trl", "mergekit") if k in pk)
        out += [f"- {k}: {v}" for k, v in list(stats.items())[:15]]
        if versions:
            out.append(f"- software: {versions}")
        out.append("")
    if len(out) == 2:
        out += ["No stage manifests were found for this run.", ""]
    return out


def _scalars(mapping: Any) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        return {}
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in mapping.items() if isinstance(v, (int, float, str, bool))}


def _merge_section(inputs: CardInputs) -> list[str]:
    m = inputs.recipe.merge
    out = ["## Merge", ""]
    if m.mergekit_yaml is not None:
        out.append("Merged with [mergekit](https://github.com/arcee-ai/mergekit) from a user-supplied configuration:")
    else:
        detail = f"weight {m.weight:g} for the trained model, {1 - m.weight:g} for the instruct model"
        if m.method in ("ties", "dare_ties"):
            detail += f", density {m.density:g}" if m.density is not None else ""
        out.append(f"Merged with [mergekit](https://github.com/arcee-ai/mergekit), method `{m.method}` ({detail}):")
    if inputs.mergekit_yaml:
        out += ["", "```yaml", inputs.mergekit_yaml.rstrip(), "```"]
    if inputs.sweep_table:
        body = [line for line in inputs.sweep_table.splitlines() if not line.startswith("# ")]
        out += ["", "Merge sweep (the selected setting is the published model):", *body]
    return out + [""]


def _eval_section(inputs: CardInputs, results: list[Any]) -> list[str]:
    out = ["## Evaluation", ""]
    if not inputs.eval_rows:
        return out + ["No evaluation was run for this model by astrosage: the card reports no benchmark results.", ""]
    method = inputs.eval_method or "letter"
    out += [f"Multiple-choice astronomy benchmarks (AstroMLab-1 style), scoring method `{method}`; "
            "calibration from the softmax over the four letters.", ""]
    mcq = [row for row in inputs.eval_rows if row.get("kind") != "perplexity"]
    ppl = [row for row in inputs.eval_rows if row.get("kind") == "perplexity"]
    out += ["| checkpoint | benchmark | n | accuracy | vs base | ECE | Brier | NLL |", "|---|---|---|---|---|---|---|---|"]
    for row in mcq:
        acc, delta = _number(row.get("accuracy")), _number(row.get("delta_vs_base"))
        cells = [
            row["checkpoint"], row["benchmark"], str(row.get("n", "")),
            f"{100 * acc:.1f}%" if acc is not None else "n/a (unlabelled)",
            f"{100 * delta:+.1f} pts" if delta is not None else "",
            *[f"{v:.4f}" if (v := _number(row.get(k))) is not None else "" for k in ("ece", "brier", "nll")],
        ]
        out.append("| " + " | ".join(cells) + " |")
    if ppl:
        out += ["", "Bits per byte on held-out text (lower is better; `heldout` = corpus papers never trained on): token "
                "NLL in bits per UTF-8 byte, so models with different tokenizers compare fairly.", "",
                "| checkpoint | text | documents | bits per byte | vs base | perplexity |", "|---|---|---|---|---|---|"]
        for row in ppl:
            bpb, delta, px = (_number(row.get(k)) for k in ("bits_per_byte", "delta_bpb_vs_base", "perplexity"))
            out.append(f"| {row['checkpoint']} | {row['benchmark']} | {row.get('n_docs', '')} | "
                       f"{f'{bpb:.4f}' if bpb is not None else 'n/a'} | {f'{delta:+.4f}' if delta is not None else ''} | "
                       f"{f'{px:.2f}' if px is not None else ''} |")
    if not results:
        out += ["", f"None of these rows has a labelled score for the published checkpoint (`{inputs.model_stage}`), "
                "so the metadata carries no model-index results."]
    return out + [""]


def _use_and_limits(r: Recipe) -> list[str]:
    cutoff = f" Its astronomy knowledge stops at the corpus cut-off ({r.corpus.date_to})." if r.corpus.enabled and r.corpus.date_to else ""
    return [
        "## Intended use",
        "",
        "Research and teaching assistance in astronomy and astrophysics: answering and explaining questions, "
        "summarising concepts, brainstorming. Outputs are to be checked by someone who knows the field.",
        "",
        "## Limitations",
        "",
        "- It can state wrong facts, numbers and references with confidence; it does not cite its sources reliably."
        + cutoff,
        "- Scores come from multiple-choice benchmarks; they do not measure open-ended reasoning, calculation or "
        "research quality.",
        "- Synthetic training answers were written by a teacher model and inherit its errors and biases; the arXiv "
        "corpus over-represents recent, English-language work.",
        "- Not for safety-critical or operational decisions (e.g. observatory or spacecraft operations). The base "
        "model's licence and acceptable-use policy apply.",
        "",
    ]
