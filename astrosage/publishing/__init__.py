"""Publishing: the model card and the Hub upload (the library behind the publish stage).

* ``results``: the eval stage's ``comparison.json`` -> huggingface_hub ``EvalResult`` s (``model-index``);
* ``card``: the ``ModelCard`` from ``ModelCardData`` and the Jinja template
  ``astrosage/resources/model_card.md.j2``, sanitized of local paths;
* ``hub``: the exact upload folder (model files only, never corpus data, secrets redacted) and the
  private-by-default upload.
"""

from .card import CardInputs, build_card, dataset_sources, hub_datasets, portable_merge_config, resolve_license, sanitize
from .hub import PublishError, dataset_licences, prepare_upload, upload
from .results import read_comparison, rows_for_checkpoint

__all__ = [
    "CardInputs", "build_card", "dataset_sources", "hub_datasets", "portable_merge_config", "resolve_license", "sanitize",
    "PublishError", "dataset_licences", "prepare_upload", "upload", "read_comparison", "rows_for_checkpoint",
]
