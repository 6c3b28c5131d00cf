"""Helpers shared by the eval tests (no tests here): small labelled MCQ sets written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

SUBJECTS = [
    ("flat rotation curves of spiral galaxies", "dark matter halos", "GA"),
    ("the cosmic microwave background anisotropies", "the baryon density", "CO"),
    ("hot Jupiter exoplanets on short orbits", "inward migration in the protoplanetary disk", "EP"),
    ("X-ray binaries with a neutron star", "accretion from a companion star", "HE"),
    ("adaptive optics on large telescopes", "correction of atmospheric turbulence", "IM"),
    ("red giant stars after the main sequence", "hydrogen shell burning", "SR"),
    ("Type Ia supernovae as distance indicators", "standardisable peak luminosity", "CO"),
    ("the Tully-Fisher relation of disc galaxies", "luminosity and rotation speed", "GA"),
]
DISTRACTORS = ["magnetic reconnection in the corona", "tidal heating by a moon", "radiative cooling of dust", "photo-evaporation by UV light"]


def make_rows(n: int = 16, labelled: bool = True) -> list[dict]:
    """``n`` distinct, deterministic questions with answers spread over A-D."""
    rows = []
    for i in range(n):
        subject, right, topic = SUBJECTS[i % len(SUBJECTS)]
        answer = "ABCD"[(i * 7 + i // 4) % 4]
        wrong = [d for d in DISTRACTORS if d != right][: 3]
        options = wrong[: "ABCD".index(answer)] + [right] + wrong["ABCD".index(answer):]
        row = {
            "question": f"Question {i + 1}: what best explains {subject}?" + (" Consider the observations." if i % 3 else ""),
            "A": options[0],
            "B": options[1],
            "C": options[2] + ("." if i % 2 else ""),
            "D": options[3],
            "topic": topic,
            "id": f"t{i:03d}",
        }
        if labelled:
            row["answer"] = answer
        rows.append(row)
    return rows


def write_json(path: Path, rows: list[dict]) -> Path:
    """Write rows as a JSON list."""
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def letter_sensitive_model(src: Path, dst: Path) -> Path:
    """A copy of a tiny model whose " A".." D" output rows are redrawn at a larger scale.

    Random tiny models give nearly the same letter to every question; with these rows the
    letter depends on the question, so prediction-agreement checks can fail when they should.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src)
    ids = tok.convert_tokens_to_ids(["ĠA", "ĠB", "ĠC", "ĠD"])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.lm_head.weight[ids] = torch.randn(4, model.config.hidden_size, generator=gen)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst
