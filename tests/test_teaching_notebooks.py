"""The teaching notebooks run from top to bottom with no key and no network.

nbclient executes ``notebooks/quickstart.ipynb`` and ``notebooks/tool_gallery.ipynb``
in a real kernel whose environment has no ``OPENAI_*`` settings, so every
``%%pyvision`` cell replays a shipped session while its tools run for real in
child kernels. The checks read the cells' outputs: each session must reach its
expected answer, and no cell may fail or print a usage error.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import gallery_sessions_source as source

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SECRET_SETTINGS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID",
                   "PYVISION_MODEL")


def kernel_environment() -> dict[str, str]:
    """This process's environment without endpoint settings, importing this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_SETTINGS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def execute(path: Path, workdir: Path) -> Any:
    """Run the notebook at ``path`` with ``workdir`` as its working directory."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=kernel_environment())
    return nb


def texts(nb: Any) -> list[str]:
    """The text of every code cell's outputs (streams and text/plain), one string per cell."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type == "error":
                parts.append(f"{out.ename}: {out.evalue}")
            else:
                parts.append(str(out.get("data", {}).get("text/plain", "")))
        found.append("\n".join(parts))
    return found


def assert_clean(nb: Any) -> None:
    for cell, text in zip((c for c in nb.cells if c.cell_type == "code"), texts(nb)):
        # A magic's UsageError is printed, not raised, so nbclient would not stop on it.
        assert "UsageError" not in text, f"{cell.source}\n-> {text}"
        assert not any(o.output_type == "error" for o in cell.get("outputs", [])), text


def test_quickstart_replays_edits_forks_saves_and_exports(tmp_path: Path) -> None:
    shutil.copy(NOTEBOOKS / "quickstart.ipynb", tmp_path)
    nb = execute(tmp_path / "quickstart.ipynb", tmp_path)
    assert_clean(nb)
    out = "\n".join(texts(nb))
    assert "THIS IS A REPLAY" in out
    assert "Answer: 24" in out                      # the session's static copy
    assert "status: answered\nanswer: 24" in out     # the -o result
    assert "status: ok\ncoins found: 9" in out       # the edited tool, rerun for real
    assert "fork's answer: 24" in out
    assert "loaded: 24" in out
    assert (tmp_path / "pyvision_outputs" / "coins_session.json").is_file()
    assert (tmp_path / "pyvision_outputs" / "coins_session.ipynb").is_file()
    assert any((tmp_path / "pyvision_outputs" / "coins_session_images").iterdir())


def test_tool_gallery_reaches_every_answer(tmp_path: Path) -> None:
    # Run from a copy outside the repo: the shipped sessions come from the package.
    shutil.copy(NOTEBOOKS / "tool_gallery.ipynb", tmp_path)
    nb = execute(tmp_path / "tool_gallery.ipynb", tmp_path)
    assert_clean(nb)
    out = "\n".join(texts(nb))
    for session in source.SESSIONS:
        line = f"answered; tools {['ok'] * len(session.evidence)}; answer: {session.answer}"
        if (session.needs and "Tesseract OCR missing" in out
                and not os.environ.get("CI")):
            continue  # the notebook says it skipped the OCR session; CI must run it
        assert line in out, f"{session.name}: {line!r} not in\n{out[-2000:]}"
        assert f"Answer: {session.answer}" in out


@pytest.mark.parametrize("name", ["quickstart.ipynb", "tool_gallery.ipynb"])
def test_notebooks_are_shipped_without_outputs(name: str) -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["kernelspec"]["name"] == "python3"
