"""`python -m benchmarks --quick` as a smoke test: every figure is produced (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)  # every benchmark, small: ~90 s on an idle 2-core machine
def test_quick_benchmarks_produce_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    measured = [r for r in rows if "ratio" in r]
    names = {r["benchmark"] for r in measured}
    assert {"session_overhead", "session_view", "kernel_overhead", "image_bytes", "tokens", "memory"} <= names
    for row in measured:
        assert isinstance(row["ours"], (int, float)) and isinstance(row["baseline"], (int, float)), row
        assert row["ratio"] is None or row["ratio"] >= 0
    assert "figure" in proc.stdout and "ratio" in proc.stdout, "the table is printed"
