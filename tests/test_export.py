"""Export of a session to a plain notebook, which runs without the model."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from pyvision_magic._errors import ConfigError
from pyvision_magic._export import export_notebook, write_notebook
from pyvision_magic._transcript import Transcript

PROJECT = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def coins() -> Transcript:
    path = resources.files("pyvision_magic") / "data" / "coins_session.json"
    return Transcript.load(str(path))


def test_cells_follow_the_turns(coins):
    nb = export_notebook(coins)
    nbformat.validate(nb)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[:2] == ["markdown", "code"]
    code_cells = [c for c in nb.cells[2:] if c.cell_type == "code"]
    assert [c.source for c in code_cells] == [t.code for t in coins.turns if t.code]
    assert "image_clue_0" in nb.cells[1].source
    assert nb.cells[-1].source == "**Answer:** 24"
    assert code_cells[0].outputs[0]["output_type"] == "stream"


def test_the_exported_notebook_runs_without_the_model(coins, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [PROJECT, os.environ.get("PYTHONPATH")])))
    path = write_notebook(coins, tmp_path / "coins.ipynb")
    assert (tmp_path / "coins_images" / "image_clue_0.png").exists()
    nb = nbformat.read(str(path), 4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    NotebookClient(nb, timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs if o.output_type == "stream")
    recorded = "".join(o.text for t in coins.turns for o in t.outputs if o.kind == "text")
    assert "24" in printed
    assert printed.strip().splitlines()[-1] == recorded.strip().splitlines()[-1]


def test_only_ipynb_paths(coins, tmp_path):
    with pytest.raises(ConfigError, match="Export to a .ipynb file"):
        write_notebook(coins, tmp_path / "x.json")
