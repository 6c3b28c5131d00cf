"""Issue 12 #4/#8: bad recipe files and typed CLI options give clear errors, never tracebacks or hangs.

Each bad input is checked for the error naming the file (and line/field/value where there is
one), exit code 2 from the CLI, and nothing written.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astrosage.cli import EXIT_BAD_INPUT, app
from astrosage.core.recipe import MAX_YAML_VALUES, RecipeError, load_recipe, parse_override

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

OFF = """
corpus: {enabled: false}
synth: {enabled: false}
merge: {enabled: false}
eval: {enabled: false}
publish: {enabled: false}
"""


def write(path: Path, text: str) -> Path:
    """The recipe text (dedented) with every stage but cpt/sft disabled."""
    path.write_text(textwrap.dedent(text) + OFF)
    return path


def problems(exc: pytest.ExceptionInfo[RecipeError]) -> str:
    return "\n".join(f"{src}: {path}: {msg}" for src, path, msg in exc.value.problems)


# ---------------------------------------------------------------------------------- encoding


def test_non_utf8_recipe_names_file_line_and_byte(tmp_path):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("run:\n  name: t\n  output_dir: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    text = problems(exc)
    assert str(recipe) in text and "not UTF-8" in text and "0xe9" in text and "line 3" in text
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "not UTF-8" in result.output and "Traceback" not in result.output


def test_recipe_path_that_is_a_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RecipeError, match="is a folder"):
        load_recipe(tmp_path)


# ---------------------------------------------------------------------------------- merge keys


def test_yaml_merge_keys_are_supported_and_own_keys_win(tmp_path):
    recipe = write(tmp_path / "m.yaml", """
        x-train: &train            # 'x-' top-level keys hold anchors, they are not sections
          max_steps: 5
          learning_rate: 1.0e-3
        run: {name: m, output_dir: runs}
        model: {base: "tiny:base"}
        cpt:
          <<: *train
          max_steps: 7
        sft:
          <<: *train
    """)
    loaded = load_recipe(recipe)
    assert (loaded.cpt.max_steps, loaded.cpt.learning_rate) == (7, 1e-3)
    assert (loaded.sft.max_steps, loaded.sft.learning_rate) == (5, 1e-3)


def test_alias_shared_by_two_sections_is_copied_so_an_override_changes_one(tmp_path):
    recipe = write(tmp_path / "a.yaml", """
        run: {name: a, output_dir: runs}
        model: {base: "tiny:base"}
        cpt: &train {max_steps: 5, learning_rate: 1.0e-3}
        sft: *train
    """)
    loaded = load_recipe(recipe, ["sft.learning_rate=2e-5"])
    assert loaded.sft.learning_rate == 2e-5 and loaded.cpt.learning_rate == 1e-3


def test_duplicate_keys_are_still_refused_next_to_merge_keys(tmp_path):
    recipe = write(tmp_path / "d.yaml", """
        x-base: &base {max_steps: 5}
        run: {name: d, output_dir: runs}
        cpt:
          <<: *base
          max_steps: 6
          max_steps: 7
    """)
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    assert "duplicate key 'max_steps'" in problems(exc) and "line 6" in problems(exc)


# ---------------------------------------------------------------------------------- alias bombs


BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{n}: &{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi")),
    ]
) + "\n"


def test_billion_laughs_recipe_is_refused_fast_in_a_subprocess(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 400  # the 306-byte kind of file
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "astrosage.cli", "validate", str(bomb)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    assert "aliases" in proc.stderr and f"{MAX_YAML_VALUES:,}" in proc.stderr and str(bomb) in proc.stderr
    assert len(proc.stderr) < 2000  # no expanded value printed
    assert time.monotonic() - start < 60


def test_big_value_in_an_error_is_shortened(tmp_path):
    # under the alias cap, but a 20k-item list where a string goes: the error must not print it all
    recipe = tmp_path / "big.yaml"
    recipe.write_text("run:\n  name: [" + ", ".join(["x"] * 20000) + "]\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    text = problems(exc)
    assert "run.name" in text and len(text) < 1000


def test_self_referencing_alias_is_a_clear_error(tmp_path):
    recipe = tmp_path / "loop.yaml"
    recipe.write_text("run: &r\n  name: t\n  again: *r\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    assert str(recipe) in problems(exc) and "recursive" in problems(exc) and "line 1" in problems(exc)


# ---------------------------------------------------------------------------------- output_dir


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    recipe = write(tmp_path / "o.yaml", f"""
        run: {{name: o, output_dir: {blocker}}}
        model: {{base: "tiny:base"}}
    """)
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "run.output_dir" in result.output and "not a folder" in result.output
    result = runner.invoke(app, ["run", str(recipe)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "run.output_dir" in result.output and "NotADirectoryError" not in result.output
    assert blocker.read_text() == "not a folder"


# ---------------------------------------------------------------------------------- typed options (#8)


@pytest.mark.parametrize(
    ("option", "value", "line"),
    [
        ("--time", "48:00:00", "#SBATCH --time=48:00:00"),
        ("--time", "1:30", "#SBATCH --time=1:30"),
        ("--account", "12345", "#SBATCH --account=12345"),
        ("--account", "0777", "#SBATCH --account=0777"),
        ("--partition", "on", "#SBATCH --partition=on"),
        ("--partition", "null", "#SBATCH --partition=null"),
        ("--partition", "1e3", "#SBATCH --partition=1e3"),
    ],
)
def test_typed_slurm_options_are_never_reparsed_as_yaml(tmp_path, option, value, line):
    result = runner.invoke(app, ["slurm", str(REPO / "recipes" / "astrosage-8b.yaml"), "--stage", "cpt", option, value, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert line + "\n" in result.output


def test_typed_slurm_option_still_validated_by_the_schema():
    result = runner.invoke(app, ["slurm", str(REPO / "recipes" / "astrosage-8b.yaml"), "--stage", "cpt",
                                 "--partition", "h100; rm -rf ~", "--dry-run"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "command line: slurm.partition" in result.output and "rm -rf" in result.output


def test_wall_time_in_a_recipe_file_or_override_stays_a_string(tmp_path):
    recipe = write(tmp_path / "s.yaml", """
        run: {name: s, output_dir: runs}
        model: {base: "tiny:base"}
        slurm: {time: 48:00:00}
    """)
    assert load_recipe(recipe).slurm.time == "48:00:00"
    assert load_recipe(recipe, ["slurm.time=2:00:00"]).slurm.time == "2:00:00"
    assert parse_override("slurm.time=12:30") == (["slurm", "time"], "12:30")
    # ordinary numbers are unchanged
    assert parse_override("cpt.max_steps=1_000") == (["cpt", "max_steps"], 1000)
    assert parse_override("cpt.learning_rate=1e-4") == (["cpt", "learning_rate"], 1e-4)
