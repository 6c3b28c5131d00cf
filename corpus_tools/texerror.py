"""The error every LaTeX assembly step raises: a short machine-readable ``reason`` + detail."""

from __future__ import annotations

class LatexError(ValueError):
    """The sources cannot be turned into one document; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
