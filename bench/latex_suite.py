"""LaTeX -> text conversion suite: pass rate per class for corpus_tools, pylatexenc and pandoc.

    python bench/latex_suite.py                 # all three (pandoc when on PATH)
    python bench/latex_suite.py --install-pandoc  # apt-get install pandoc first when absent (root)
    python bench/latex_suite.py --failures      # also list each failing case per converter

The cases (tests/conversion/cases.yaml) are small real-shaped arXiv constructs with binary
checks (contains / not contains / verbatim math / order / rejection reason), in the spirit of
olmOCR-Bench. corpus_tools runs the corpus stage's real path on the packed e-print; pylatexenc
(``LatexNodes2Text(math_mode='verbatim')``) and pandoc (``-f latex -t plain``) get the main file
(pandoc with the other files beside it, so its own ``\\input`` handling works). A crash or a
timeout counts as a lost paper. Each baseline case runs under a 30 s limit.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conversion.suite import check, load_cases, ours, pandoc, pandoc_available, pylatexenc  # noqa: E402


class _Timeout(Exception):
    pass


def _run_limited(fn, case, seconds: int = 30):
    def fire(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        return fn(case)
    except _Timeout:
        return "", "timeout", None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--install-pandoc", action="store_true", help="apt-get install pandoc when it is absent")
    ap.add_argument("--failures", action="store_true", help="list failing case ids per converter")
    args = ap.parse_args()
    if args.install_pandoc and not pandoc_available() and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "pandoc"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    converters = {"corpus_tools": ours}
    try:
        import pylatexenc as _  # noqa: F401

        converters["pylatexenc"] = pylatexenc
    except ImportError:
        print("pylatexenc not installed (pip install pylatexenc): column omitted")
    if pandoc_available():
        converters["pandoc"] = pandoc
    else:
        print("pandoc not on PATH (--install-pandoc, or apt-get install pandoc): column omitted")

    cases = load_cases()
    passed: dict[str, dict[str, int]] = {name: defaultdict(int) for name in converters}
    total: dict[str, int] = defaultdict(int)
    failing: dict[str, list[str]] = defaultdict(list)
    for case in cases:
        total[case.cls] += 1
        for name, fn in converters.items():
            text, reason, fallback = _run_limited(fn, case)
            if check(case, text, reason, fallback):
                failing[name].append(f"{case.cls}/{case.id}")
            else:
                passed[name][case.cls] += 1

    names = list(converters)
    print(f"\nLaTeX -> text conversion suite: {len(cases)} cases, {len(total)} classes (passed / cases)\n")
    print("| class | cases | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for cls in total:
        cells = [f"{passed[n][cls]}/{total[cls]}" for n in names]
        print(f"| {cls} | {total[cls]} | " + " | ".join(cells) + " |")
    all_cells = [f"**{sum(passed[n].values())}/{len(cases)} ({100 * sum(passed[n].values()) / len(cases):.0f}%)**" for n in names]
    print(f"| **all** | {len(cases)} | " + " | ".join(all_cells) + " |")
    if args.failures:
        for n in names:
            print(f"\n{n} fails {len(failing[n])}: " + ", ".join(failing[n]))


if __name__ == "__main__":
    main()
