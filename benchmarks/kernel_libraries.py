"""Kernel start with the seed libraries installed: lazy, so it does not grow.

Run standalone: ``python benchmarks/kernel_libraries.py [--quick]``.

The default install gives tools pandas, scikit-learn, scikit-image, scipy and
sympy; none of them is imported when a kernel starts (a tool's ``import`` pays
for what it uses). Rows, each from interleaved rounds (A, B, A, B ...) so load
drifts hit both alike, min and median reported:

- ``start before/after``: wall and kernel CPU seconds of a ``ChildKernel.start()``
  (template already warm) with this tree against the commit where it left ``main``
  (``git merge-base``; ``git archive`` into a temporary folder), each in a fresh process.
  Left out without git or a ``main`` branch. Goal: <= 1.1x.
- ``start lazy vs eager``: the same start against a start that then imports the
  five libraries, which is what binding them at start would cost. Goal: < 0.5x.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kernel_overhead import _cpu_seconds  # noqa: E402

from pyvision_magic.kernel._child import ChildKernel  # noqa: E402

SEED = ["pandas", "sklearn", "skimage", "scipy", "sympy"]

_STARTS = """
import asyncio, json, os, sys, time
sys.path.insert(0, os.getcwd())
from pyvision_magic.kernel._child import ChildKernel
def cpu(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
async def main():
    out = []
    for i in range(int(sys.argv[1]) + 1):
        started = time.perf_counter()
        kernel = ChildKernel()
        await kernel.start()
        sample = (time.perf_counter() - started, cpu(kernel.pid))
        await kernel.shutdown()
        if i:  # the first starts the template: not part of a start
            out.append(sample)
    print(json.dumps(out))
asyncio.run(main())
"""


def _starts_in(tree: str, n: int) -> list[list[float]]:
    env = {**os.environ, "PYTHONPATH": tree, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", _STARTS, str(n)], capture_output=True,
                          text=True, check=True, cwd=tree, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _main_tree(folder: str) -> str | None:
    """The ``main`` branch's files in ``folder``, or None without git or a main branch."""
    if shutil.which("git") is None:
        return None
    # Where this branch left main (main itself once merged): the code before the change.
    base = subprocess.run(["git", "-C", ROOT, "merge-base", "main", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "main"
    archive = subprocess.run(["git", "-C", ROOT, "archive", base, "pyvision_magic"],
                             capture_output=True)
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return folder


def _row(figure: str, ours: list[float], baseline: list[float], goal: str) -> dict[str, Any]:
    mine, theirs = statistics.median(ours), statistics.median(baseline)
    return {"figure": f"{figure} (min {min(ours):.3f} vs {min(baseline):.3f})", "ours": mine,
            "baseline": theirs, "ratio": mine / theirs, "goal": goal}


async def _start(eager: bool) -> tuple[float, float]:
    started = time.perf_counter()
    kernel = ChildKernel()
    await kernel.start()
    if eager:
        result = await kernel.execute("import " + ", ".join(SEED))
        assert result.status == "ok", result.outputs
    sample = (time.perf_counter() - started, _cpu_seconds(kernel.pid))
    await kernel.shutdown()
    return sample


async def _lazy_rows(rounds: int) -> list[dict[str, Any]]:
    await _start(False)  # the template
    lazy: list[tuple[float, float]] = []
    eager: list[tuple[float, float]] = []
    for _ in range(rounds):
        lazy.append(await _start(False))
        eager.append(await _start(True))
    return [
        _row("kernel start wall s, seed libraries lazy vs imported at start",
             [s[0] for s in lazy], [s[0] for s in eager], "< 0.5x"),
        _row("kernel start CPU s, seed libraries lazy vs imported at start",
             [s[1] for s in lazy], [s[1] for s in eager], "< 0.5x"),
    ]


def _before_after_rows(rounds: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="pyvision-bench-main-") as folder:
        tree = _main_tree(folder)
        if tree is None:
            return []
        ours: list[list[float]] = []
        before: list[list[float]] = []
        for _ in range(rounds):
            ours += _starts_in(os.path.abspath(ROOT), 2)
            before += _starts_in(tree, 2)
    return [
        _row("kernel start wall s, this tree vs before (merge-base with main)", [s[0] for s in ours],
             [s[0] for s in before], "<= 1.1x"),
        _row("kernel start CPU s, this tree vs before (merge-base with main)", [s[1] for s in ours],
             [s[1] for s in before], "<= 1.1x"),
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure and return the rows (see the module docstring)."""
    if not os.path.exists("/proc/self/stat"):
        return [{"figure": "kernel_libraries: needs Linux /proc for CPU times"}]
    rows = _before_after_rows(2 if quick else 8)
    rounds = 2 if quick else 5
    rows += asyncio.run(_lazy_rows(rounds))
    return rows


if __name__ == "__main__":
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
