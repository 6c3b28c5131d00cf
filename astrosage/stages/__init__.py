"""The pipeline's stages, one thin adapter module each, registered by import.

Each module defines ``SPEC`` (a :class:`astrosage.core.stage.StageSpec` whose ``run`` is the
adapter) and imports its heavy libraries inside ``run``, so importing this package stays cheap.
``STAGES`` maps stage names to specs in pipeline order.
"""

from __future__ import annotations

from ..core.stage import StageSpec
from . import corpus, cpt, eval, merge, publish, sft, synth

STAGES: dict[str, StageSpec] = {m.SPEC.name: m.SPEC for m in (corpus, synth, cpt, sft, merge, eval, publish)}
STAGE_ORDER: tuple[str, ...] = tuple(STAGES)

__all__ = ["STAGES", "STAGE_ORDER", "StageSpec"]
