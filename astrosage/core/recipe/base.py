"""The base of every recipe section and what the sections share: strict keys, finite numbers,
integer fields that take integers only, checked ``*_env`` names, the name pattern and the token limit."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

#: names of runs and benchmarks: letters, digits, '.', '_', '-' (at most 100, the first a letter or digit)
_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Section(BaseModel):
    """Base for every recipe section: unknown keys are errors, assignments are validated, numbers are
    finite (``.inf`` is refused: it trains a model of NaNs), and integer fields take integers only
    (``max_steps: true`` or ``512.0`` is refused, not read as 1 or 512)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=False, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: Any) -> Any:
        if isinstance(value, (bool, float)) and info.field_name in cls.model_fields:
            accepted = _scalar_types(cls.model_fields[info.field_name].annotation)
            if isinstance(value, bool) and bool not in accepted and (int in accepted or float in accepted):
                raise ValueError(f"{value!r} is a boolean; this field takes a number")
            if isinstance(value, float) and int in accepted and float not in accepted:
                raise ValueError(f"{value!r} is not an integer; write it without a decimal point")
        return value

    @field_validator("*")
    @classmethod
    def _env_names(cls, value: Any, info: Any) -> Any:
        """``*_env`` fields name an environment variable; a pasted token would land in cards and manifests."""
        if info.field_name.endswith("_env") and isinstance(value, str):
            from ..logs import looks_like_token

            if looks_like_token(value):
                raise ValueError(
                    "this looks like a secret token, not the name of an environment variable; export the token "
                    "(e.g. `export HF_TOKEN=...`) and put the variable's name here"
                )
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", value):
                raise ValueError("not an environment variable name (letters, digits and '_', not starting with a digit)")
        return value


def _scalar_types(annotation: Any) -> set[Any]:
    """The plain types an annotation accepts at its top level (``int | None`` -> {int, NoneType})."""
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_scalar_types(a) for a in typing.get_args(annotation)))
    return {annotation}


#: the longest sequence/generation any field takes (tokens): 1,048,576; beyond is a typo, not a plan
MAX_TOKENS = 1 << 20
