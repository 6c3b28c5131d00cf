"""astrosage: turn a general LLM into an astronomy specialist, the AstroSage way.

The pipeline (corpus -> synth -> cpt -> sft -> merge -> eval -> publish) is driven by one recipe;
see ``astrosage.core.recipe`` for the schema and ``astrosage.runner`` for the run manager.
"""

__version__ = "0.1.0"
