"""The teaching notebooks run from top to bottom with no key and no network.

nbclient executes ``notebooks/quickstart.ipynb`` and ``notebooks/tool_gallery.ipynb``
in a real kernel whose environment has no ``OPENAI_*`` settings, so every
``%%pyvision`` cell replays a shipped session while its tools run for real in
child kernels. The checks read the cells' outputs: each session must reach its
expected answer, and no cell may fail or print a usage error. What the quickstart
writes must be git-ignored where it ships, and the gallery must say which part of
Tesseract (the program, its Python wrapper) is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
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
    # Run where it ships (notebooks/), it must leave git nothing new to show.
    written = [f"notebooks/{p.relative_to(tmp_path).as_posix()}" for p in tmp_path.rglob("*")
               if p.is_file() and p.name != "quickstart.ipynb"]
    assert written and git_ignores(written) == written


def git_ignores(paths: list[str]) -> list[str]:
    """Which of ``paths`` (relative to the checkout) its .gitignore files ignore."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--stdin"], input="\n".join(paths),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return done.stdout.splitlines()


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


def test_tool_gallery_says_which_part_of_tesseract_is_missing(tmp_path: Path) -> None:
    """The gallery's first cell, in a real kernel, with the program and the wrapper each
    present or not: a fake ``tesseract`` on PATH, an empty ``pytesseract`` module."""
    import nbformat
    from nbclient import NotebookClient

    gallery = nbformat.read(NOTEBOOKS / "tool_gallery.ipynb", as_version=4)
    check = next(c.source for c in gallery.cells if c.cell_type == "code")
    # Only the check: the extension (its kernel pool) has no part in it.
    check = check.replace("%load_ext pyvision_magic\n", "")
    assert "HAVE_TESSERACT" in check
    program = tmp_path / "bin" / "tesseract"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\nexit 1\n")
    program.chmod(0o755)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "pytesseract.py").write_text("")
    # PATH without any real tesseract, so that only the fake one can be found.
    bare_path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                                if d and not (Path(d) / "tesseract").exists())
    cases = {
        (True, True): "Tesseract OCR available.",
        (True, False): "Tesseract OCR missing: its Python wrapper (pip install pytesseract)",
        (False, True): "Tesseract OCR missing: the tesseract program (apt-get install tesseract-ocr)",
        (False, False): "Tesseract OCR missing: the tesseract program (apt-get install "
                        "tesseract-ocr) and its Python wrapper (pip install pytesseract)",
    }
    nb = nbformat.v4.new_notebook()
    for has_program, has_wrapper in cases:
        path = os.pathsep.join([str(program.parent), bare_path] if has_program else [bare_path])
        setup = (f"import os, sys\nos.environ['PATH'] = {path!r}\n"
                 f"sys.modules.pop('pytesseract', None)\nsys.path[:] = [p for p in sys.path "
                 f"if p != {str(tmp_path / 'lib')!r}]\n")
        setup += (f"sys.path.insert(0, {str(tmp_path / 'lib')!r})" if has_wrapper
                  else "sys.modules['pytesseract'] = None  # find_spec says: not installed")
        nb.cells += [nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(check)]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=kernel_environment())
    assert_clean(nb)
    shown = [text.strip() for text in texts(nb)[1::2]]
    assert shown == list(cases.values())


@pytest.mark.parametrize("name", ["quickstart.ipynb", "tool_gallery.ipynb"])
def test_notebooks_are_shipped_without_outputs(name: str) -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["kernelspec"]["name"] == "python3"
