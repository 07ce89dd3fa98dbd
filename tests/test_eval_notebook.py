"""notebooks/evaluation.ipynb runs top to bottom with nbclient, against the scripted loopback server."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_evaluation_notebook_runs_offline(tmp_path, monkeypatch, no_openai_env):
    monkeypatch.setenv("PYVISION_EVAL_DIR", str(tmp_path / "work"))
    nb = nbformat.read(ROOT / "notebooks" / "evaluation.ipynb", as_version=4)
    # From a folder of its own, outside the repo: nothing of tests/ is needed.
    (tmp_path / "here").mkdir()
    client = NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path / "here")}})
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
    assert (tmp_path / "work" / "results" / "accuracy_by_subtask.png").exists()
    assert os.path.exists(tmp_path / "work" / "results" / "report.json")
    assert not any((tmp_path / "here").iterdir()), "it writes only to its work folder"
