"""notebooks/evaluation.ipynb runs top to bottom with nbclient, against the scripted loopback server."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_evaluation_notebook_runs_offline(tmp_path, monkeypatch, no_openai_env):
    monkeypatch.setenv("PYVISION_EVAL_DIR", str(tmp_path))
    nb = nbformat.read(ROOT / "notebooks" / "evaluation.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    text = "\n".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        + str(out.get("data", {}).get("text/markdown", ""))
        for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "SCRIPTED loopback server" in text
    assert "exit code 0" in text
    # The scripted model answers right with tools and always "1" without.
    assert "tools 100.0 % of 16" in text and "baseline" in text
    assert (tmp_path / "results" / "accuracy_by_subtask.png").exists()
    assert os.path.exists(tmp_path / "results" / "report.json")
