"""Time that ``%load_ext pyvision_magic`` adds to a bare IPython start.

Run standalone: ``python benchmarks/load_time.py [--quick]``. Each sample is a
fresh Python process that starts an IPython shell (the baseline) and then loads
the extension (ours); the medians are reported. Goal: under 50 ms added.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

PROBE = """
import json, time
t0 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t1 = time.perf_counter()
shell.run_line_magic("load_ext", "pyvision_magic")
t2 = time.perf_counter()
assert "pyvision" in shell.magics_manager.magics["cell"], "extension did not register %%pyvision"
print(json.dumps([t1 - t0, t2 - t1]))
"""


def _sample() -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    if proc.returncode:
        raise RuntimeError(f"load probe failed: {proc.stderr.strip().splitlines()[-1:]}")
    bare, added = json.loads(proc.stdout.strip().splitlines()[-1])
    return bare, added


def run(quick: bool) -> list[dict]:
    samples = [_sample() for _ in range(2 if quick else 7)]
    bare = statistics.median(s[0] for s in samples)
    added = statistics.median(s[1] for s in samples)
    return [{
        "figure": "%load_ext pyvision_magic: time added to a bare IPython start (s)",
        "ours": round(added, 4),
        "baseline": round(bare, 4),
        "ratio": round(added / bare, 3),
        "goal": "< 0.050 s added",
    }]


if __name__ == "__main__":
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
