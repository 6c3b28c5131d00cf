"""The layers of docs/architecture.md hold: who may import whom, where stages live, module size.

Imports are read from the source with ``ast`` (every ``import`` / ``from ... import``, also the
ones inside functions), so a lazy upward import counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("astrosage", "corpus_tools", "eval")
MAX_LINES = 500

#: layer of each module prefix, bottom up; a module may import its own layer or lower ones
LAYERS = {
    "astrosage.core": 0, "astrosage.resources": 0,
    "corpus_tools": 1, "eval": 1, "astrosage.training": 1, "astrosage.merging": 1, "astrosage.publishing": 1,
    "astrosage.stages": 2,
    "astrosage.runner": 3, "astrosage.run_lock": 3, "astrosage.run_state": 3, "astrosage.input_checks": 3, "astrosage.slurm": 3,
    "astrosage.cli": 4, "astrosage.cli_eval": 4, "astrosage.__main__": 4,
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int | None:
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return None if best is None else best[1]


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {n for n in names if n.split(".")[0] in PACKAGES}


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if m != "astrosage" and _layer(m) is None]
    assert not unplaced, f"modules outside every layer of docs/architecture.md: {unplaced}"


@pytest.mark.parametrize("module", [m for m in MODULES if _layer(m) is not None])
def test_no_module_imports_a_layer_above_it(module):
    own = _layer(module)
    upward = sorted(
        name for name in _imports(module, MODULES[module])
        if name in MODULES and _layer(name) is not None and _layer(name) > own
    )
    assert not upward, f"{module} (layer {own}) imports {upward} from a layer above it"


def test_no_module_is_over_the_size_limit():
    big = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_stages_are_registered_by_import_in_pipeline_order():
    from astrosage import stages
    from astrosage.core.stage import StageSpec

    adapters = sorted(p.stem for p in (REPO / "astrosage" / "stages").glob("*.py") if p.stem not in ("__init__", "sections"))
    assert sorted(stages.STAGES) == adapters
    assert stages.STAGE_ORDER == ("corpus", "synth", "cpt", "sft", "merge", "eval", "publish")
    for name, spec in stages.STAGES.items():
        assert isinstance(spec, StageSpec) and spec.name == name
        # the entry is a function of the adapter module itself: no "module:function" strings
        assert callable(spec.run) and spec.run.__module__ == f"astrosage.stages.{name}", (name, spec.run)
        assert spec.outputs, f"stage {name} declares no outputs"


def test_importing_the_cli_and_the_stages_loads_no_heavy_library():
    import subprocess
    import sys

    code = ("import sys, astrosage.cli, astrosage.stages; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'mergekit', 'datasets', 'datatrove') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
    assert out == "[]", f"`astrosage --help` would import {out}"
