"""The recipe schema: one typed, documented description of a whole astrosage run.

A recipe is a YAML file whose top-level keys are the sections (plus an optional
``extends: other.yaml``). Every field has a description, most have defaults, and unknown keys
are errors. Loading never imports torch/transformers, so a bad recipe fails in a fraction of a
second, before any download or GPU allocation.

    recipe = load_recipe("recipes/tiny-cpu.yaml", overrides=["cpt.learning_rate=1e-4"])

The package is split by concern: ``base`` (the strict section base), one module per section group
(``run``, ``corpus``, ``synth``, ``training``, ``merge``, ``eval``, ``publish``, ``slurm``), ``recipe``
(the top-level model and its cross-section rules), ``loader``, ``errors``, ``paths`` and ``doc``.
"""

from __future__ import annotations

from .errors import RecipeError
from .eval import BenchmarkRef
from .loader import MAX_YAML_VALUES, load_recipe, load_recipe_dict, parse_override, section_hash
from .merge import MergeSection
from .paths import check_paths
from .recipe import STAGE_SECTIONS, Recipe
from .run import LoggingSection, ModelSection
from .synth import SynthSection
from .training import DataSource

__all__ = [
    "MAX_YAML_VALUES",
    "STAGE_SECTIONS",
    "BenchmarkRef",
    "DataSource",
    "LoggingSection",
    "MergeSection",
    "ModelSection",
    "Recipe",
    "RecipeError",
    "SynthSection",
    "check_paths",
    "load_recipe",
    "load_recipe_dict",
    "parse_override",
    "section_hash",
]
