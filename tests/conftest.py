"""Shared fixtures: offline environment and session-wide tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Offline, always: no test may touch the Hub or the internet.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ASTROMLAB1_PUBLIC = SHARED_DATA / "astromlab1_public_mcq.json"
SAMPLE_MCQ = REPO_ROOT / "examples" / "mcq" / "astro_mcq_sample.json"
SAMPLE_CORPUS = REPO_ROOT / "examples" / "sample_corpus"


def all_stages_off_yaml(name: str, output_dir: Path | str) -> str:
    """A valid recipe (YAML text) with every stage disabled: for CLI / launcher plumbing tests."""
    sections = "\n".join(f"{stage}: {{enabled: false}}" for stage in ("corpus", "synth", "cpt", "sft", "merge", "eval", "publish"))
    return f"run: {{name: {name}, output_dir: '{output_dir}'}}\nmodel: {{base: 'tiny:base', base_instruct: 'tiny:instruct'}}\n{sections}\n"


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_base(tiny_models_root) -> Path:
    """A tiny random-weight Llama (seed 0) with the bundled tokenizer and chat template."""
    from astrosage.core.tiny import build_tiny_model

    return build_tiny_model(tiny_models_root / "base", variant="base", seed=0)


@pytest.fixture(scope="session")
def tiny_instruct(tiny_models_root) -> Path:
    """The tiny model's instruct sibling: same tokenizer and architecture, other weights."""
    from astrosage.core.tiny import build_tiny_model

    return build_tiny_model(tiny_models_root / "instruct", variant="instruct", seed=0)


@pytest.fixture
def astromlab1_public() -> Path:
    """The public AstroMLab-1 file from ../shared/data; skipped (with the reason) where absent."""
    if not ASTROMLAB1_PUBLIC.exists():
        pytest.skip(f"public AstroMLab-1 file not found at {ASTROMLAB1_PUBLIC} (only in the project workspace, not in a user's clone)")
    return ASTROMLAB1_PUBLIC
