"""Every command block in README.md runs (issue 12 #8), offline, in the order the README gives them.

Each command line of every ```bash block is handled in exactly one way, decided by the table
below; a command the table does not cover fails the test, so a new README command cannot go
untested silently:

* run: executed as written in a scratch copy of the recipes and sample data (``/tmp/...`` paths
  go to the test's own folder), must exit 0;
* dry-run: a command that would submit to a cluster, executed with ``--submit`` replaced by
  ``--dry-run``;
* parse: a command that needs GPUs, the network or an 8B checkpoint: its recipe is validated with
  ``astrosage validate`` (for real) and its whole command line is parsed by the real parsers
  (astrosage's CLI, ``accelerate launch``, ``torchrun``) without running the stage;
* excluded: listed in EXCLUDED with the reason (installation lines, ``make`` targets that run this
  very suite or the demo, commands that follow a live cluster).

```yaml blocks introduced with a file name in backticks (e.g. `recipes/my-cluster.yaml`) are
written to that file first, as a reader would.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BIN = Path(sys.executable).parent

#: Command prefixes not run here, with the reason (matched against the start of the command).
EXCLUDED = {
    "make demo": "runs recipes/tiny-cpu.yaml end to end, which `astrosage run recipes/tiny-cpu.yaml` below does",
    "make test": "runs this test suite itself",
    "python3.11 -m venv": "installation: creates the environment these tests run in",
    "pip install": "installation: needs the package index (tests/test_robustness_install.py installs the wheel offline)",
    "squeue": "lists a live cluster's queue; the jobs are rendered with --dry-run instead",
    "tail -f": "follows a running job's log forever",
}

#: Commands that need GPUs, the network (arXiv, the Hub) or an 8B checkpoint: parsed, recipe validated.
NEEDS_CLUSTER_OR_NETWORK = re.compile(r"recipes/astrosage-(8b|70b)\.yaml|multi-gpu\.yaml|^torchrun ")


@dataclass
class Command:
    line: int
    text: str

    @property
    def id(self) -> str:
        return f"L{self.line}-" + re.sub(r"[^A-Za-z0-9]+", "-", self.text)[:60].strip("-")


def _blocks() -> list[tuple[str, int, list[str], str]]:
    """(language, first line number, lines, the paragraph line just before) of each fenced block."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m:
            start, body = i + 1, []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            before = next((lines[j] for j in range(start - 2, -1, -1) if lines[j].strip()), "")
            blocks.append((m.group(1), start + 1, body, before))
        i += 1
    return blocks


def _commands() -> list[Command]:
    commands = []
    for lang, first, body, _ in _blocks():
        if lang != "bash":
            continue
        pending, at = "", 0
        for offset, raw in enumerate(body):
            text = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
            if not pending:
                at = first + offset
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            text = (pending + text).strip()
            pending = ""
            if text:
                commands.append(Command(at, " ".join(text.split())))
    return commands


COMMANDS = _commands()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A reader's folder: the recipes (plus any recipe file the README writes) and the sample data."""
    ws = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "recipes", ws / "recipes")
    shutil.copytree(REPO / "examples", ws / "examples")
    (ws / "tmp").mkdir()
    for lang, _, body, before in _blocks():
        named = re.search(r"`(recipes/[\w.-]+\.ya?ml)`", before)
        if lang == "yaml" and named:
            (ws / named.group(1)).write_text("\n".join(body) + "\n")
    return ws


def _env(ws: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1", HOME=str(ws / "home"))
    return env


def _shell(ws: Path, text: str, timeout: float = 600) -> subprocess.CompletedProcess:
    text = re.sub(r"(?<![\w/.])/tmp/", f"{ws}/tmp/", text)
    return subprocess.run(["bash", "-c", text], cwd=ws, env=_env(ws), capture_output=True, text=True, timeout=timeout)


def _parse_only(ws: Path, text: str) -> None:
    """Parse the whole command line with the real parsers; validate the recipe it names."""
    import typer.main

    from astrosage.cli import app

    argv = shlex.split(text)
    if argv[0] == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        assert argv[1] == "launch"
        args = launch_command_parser().parse_args(argv[2:])
        assert args.module and args.training_script == "astrosage.cli", text
        assert (ws / args.config_file).is_file(), f"{args.config_file} does not exist"
        argv = ["astrosage", *args.training_script_args]
    elif argv[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        args = get_args_parser().parse_args(argv[1:])
        assert args.module and args.training_script == "astrosage.cli", text
        argv = ["astrosage", *args.training_script_args]
    assert argv[0] == "astrosage", f"no rule for {text!r}"
    command = typer.main.get_command(app)  # typer's own click: no `import click` here
    ctx, rest = None, argv[1:]
    name = "astrosage"
    while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):  # a group: find the subcommand
        ctx = command.context_class(command, info_name=name, parent=ctx)
        name, command = rest[0], command.get_command(ctx, rest[0])
        assert command is not None, f"{text!r}: no command {name!r}"
        rest = rest[1:]
    sub_ctx = command.make_context(name, rest, parent=ctx)  # raises on an unknown option or a bad value
    recipe = sub_ctx.params.get("recipe")
    assert recipe is not None, f"{text!r} names no recipe"
    overrides = list(sub_ctx.params.get("overrides") or [])
    result = _shell(ws, shlex.join(["astrosage", "validate", str(recipe), *overrides]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_readme_command_has_a_rule():
    assert len(COMMANDS) >= 20  # the parser found the blocks
    for command in COMMANDS:
        excluded = [p for p in EXCLUDED if command.text.startswith(p)]
        known = excluded or command.text.split()[0] in ("astrosage", "accelerate", "torchrun", "lm_eval")
        assert known, f"README line {command.line}: no rule for {command.text!r}; add one in {__file__}"
    # every exclusion still matches a README command (no stale entries hiding nothing)
    assert {p for p in EXCLUDED if any(c.text.startswith(p) for c in COMMANDS)} == set(EXCLUDED)


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if not any(c.text.startswith(p) for p in EXCLUDED)], ids=lambda c: c.id)
def test_readme_command(command, workspace):
    text = command.text
    if NEEDS_CLUSTER_OR_NETWORK.search(text) and not text.startswith("astrosage slurm") and not re.match(r"astrosage validate ", text):
        _parse_only(workspace, text)
        return
    if text.startswith("astrosage slurm") and "--submit" in text:
        text = text.replace("--submit", "--dry-run")
    result = _shell(workspace, text)
    assert result.returncode == 0, f"README line {command.line}: {text}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if text.startswith("astrosage slurm") and "--dry-run" in text:
        assert "#SBATCH --job-name=" in result.stdout
        assert not (workspace / "runs" / "astrosage-8b" / "slurm").exists()  # a dry run writes nothing


def test_parse_only_check_can_fail(workspace):
    """The parse-only rule is a real check: a wrong option, a wrong value or a bad recipe fail it."""
    for text in ("astrosage cpt recipes/astrosage-8b.yaml --bogus",
                 "torchrun --nproc-per-node 8 -m astrosage.cli sft recipes/astrosage-8b.yaml --nodes two",
                 "accelerate launch --config_file recipes/accelerate/nope.yaml -m astrosage.cli cpt recipes/astrosage-8b.yaml",
                 "astrosage cpt recipes/astrosage-8b.yaml cpt.learning_rate=-1"):
        with pytest.raises(Exception):
            _parse_only(workspace, text)
