"""The top-level :class:`Recipe`: one section per concern and stage, and the rules that span sections."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from .base import _Section
from .corpus import CorpusSection
from .errors import _CrossFieldErrors
from .eval import EvalSection
from .merge import MergeSection
from .publish import PublishSection
from .run import LoggingSection, ModelSection, RunSection
from .slurm import SlurmSection
from .synth import SynthSection
from .training import CptSection, SftSection

#: Pipeline stages in execution order; each has a recipe section of the same name.
STAGE_SECTIONS: tuple[str, ...] = ("corpus", "synth", "cpt", "sft", "merge", "eval", "publish")


class Recipe(_Section):
    """A whole astrosage run: one section per concern, one per stage."""

    run: RunSection = Field(description="Name, output folder and seed.")
    model: ModelSection = Field(description="Base model, its instruct sibling, dtype and attention kernel.")
    corpus: CorpusSection = Field(default_factory=CorpusSection, description="arXiv corpus stage.")
    synth: SynthSection = Field(default_factory=SynthSection, description="Synthetic QA / MCQ stage.")
    cpt: CptSection = Field(default_factory=CptSection, description="Continued-pretraining stage.")
    sft: SftSection = Field(default_factory=SftSection, description="Supervised fine-tuning stage.")
    merge: MergeSection = Field(default_factory=MergeSection, description="Model-merging stage.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Benchmark evaluation stage.")
    publish: PublishSection = Field(default_factory=PublishSection, description="Hub publishing stage.")
    slurm: SlurmSection = Field(default_factory=SlurmSection, description="Defaults for `astrosage slurm`.")
    logging: LoggingSection = Field(default_factory=LoggingSection, description="Metrics logging.")

    @model_validator(mode="after")
    def _cross_section_rules(self) -> "Recipe":
        problems: list[tuple[str, Any, str]] = []
        if self.merge.enabled and self.model.base_instruct is None and self.merge.mergekit_yaml is None:
            problems.append(("model.base_instruct", None, "the merge stage is enabled and needs model.base_instruct (or set merge.enabled=false)"))
        if self.publish.enabled and not self.publish.dry_run and self.publish.repo_id is None:
            problems.append(("publish.repo_id", None, "publishing is enabled and needs publish.repo_id (or publish.dry_run=true)"))
        if self.merge.enabled and (self.merge.sweep or self.merge.sweep_density):
            names = [b.name for b in self.eval.benchmarks]
            if not names:
                problems.append(("eval.benchmarks", [], "a merge sweep (merge.sweep) is scored on a labelled benchmark; add one to eval.benchmarks"))
            elif self.merge.select_benchmark is not None and self.merge.select_benchmark not in names:
                problems.append(("merge.select_benchmark", self.merge.select_benchmark, f"'{self.merge.select_benchmark}' is not one of eval.benchmarks ({', '.join(names)})"))
        if self.eval.enabled and not self.eval.benchmarks:
            problems.append(("eval.benchmarks", [], "the eval stage is enabled and needs at least one benchmark"))
        if self.corpus.enabled and self.corpus.source == "local" and self.corpus.local_dir is None:
            problems.append(("corpus.local_dir", None, "corpus.source is 'local' and needs corpus.local_dir"))
        if self.corpus.enabled and self.corpus.source in ("arxiv_api", "oai_pmh") and not self.corpus.contact_email:
            problems.append(("corpus.contact_email", None, f"corpus.source '{self.corpus.source}' needs a contact e-mail for arXiv's User-Agent rule"))
        if self.synth.enabled and self.synth.backend == "openai" and not self.synth.api_base:
            problems.append(("synth.api_base", None, "synth.backend 'openai' needs synth.api_base"))
        if self.synth.enabled and self.synth.teacher_model is None and self.model.base_instruct is None:
            problems.append(("synth.teacher_model", None, "the synth stage needs synth.teacher_model or model.base_instruct"))
        if self.sft.enabled and self.sft.chat_template == "instruct" and self.model.base_instruct is None:
            problems.append(("sft.chat_template", "instruct", "'instruct' takes model.base_instruct's chat template; set model.base_instruct"))
        if problems:
            raise _CrossFieldErrors(problems)
        return self
