"""Recipe section ``publish``: the Hub repository, model-card license and token variable."""

from __future__ import annotations

from pydantic import Field

from .base import _Section


class PublishSection(_Section):
    enabled: bool = Field(default=True, description="Run this stage.")
    repo_id: str | None = Field(default=None, description="Hub repository, 'user/name'.", pattern=r"^[\w.-]+/[\w.-]+$")
    private: bool = Field(
        default=True, description="Create the Hub repository as private (an existing public repository is then refused, not uploaded to)."
    )
    dry_run: bool = Field(default=False, description="Write the exact folder that would be uploaded, upload nothing.")
    license: str | None = Field(
        default=None,
        description="License id for the model card; default: the base model's, read from its model card (a local folder's "
        "README.md, or the Hub card when online), else 'other' with a warning.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
    )
    token_env: str = Field(default="HF_TOKEN", description="Env variable holding the Hub token (never logged); else the cached login.")
