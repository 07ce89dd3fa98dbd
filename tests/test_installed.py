"""The newcomer path: the package installed from a wheel into a fresh venv, alone.

A wheel of this checkout is installed in a new venv with nothing else. There,
``python -m benchmarks --quick`` runs from a copy of ``benchmarks/`` outside the
repo. Then nbclient is added (what running a notebook needs) and every notebook of
``notebooks/`` runs top to bottom from a copy outside the repo, with no key and no
endpoint configured: replays and the package's own loopback server stand in for
the model. Nothing of the checkout is on ``sys.path`` there. Where the OS lets a user
make a network namespace (``unshare -rn``), the notebooks run in one with only a
loopback interface: no network at all. Their temp folder is one the test owns, and
afterwards it may hold nothing but the evaluation notebook's own folder, private to
the user (mode 0700).

This costs a few minutes (the venv's install most of all), so it runs when
``PYVISION_INSTALLED_TESTS=1``; ``.ci/run`` sets it for its first Python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

pytestmark = [
    pytest.mark.skipif(os.environ.get("PYVISION_INSTALLED_TESTS") != "1",
                       reason="builds a venv (minutes): set PYVISION_INSTALLED_TESTS=1"),
    pytest.mark.timeout(1500),
]


def _env(venv: Path) -> dict[str, str]:
    """A newcomer's environment: the venv first on PATH, no key, no endpoint, no checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "PYVISION_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 900
         ) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory) -> Path:
    """A venv holding only the wheel of this checkout (and what it depends on)."""
    work = tmp_path_factory.mktemp("installed")
    build_env = dict(os.environ, PYVISION_SKIP_JS_BUILD="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "wheel"),
          str(ROOT)], build_env, work)
    (wheel,) = (work / "wheel").glob("pyvision_magic-*.whl")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], build_env, work)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], _env(venv), work)
    return venv


def _offline_prefix() -> list[str]:
    """A command prefix that runs a program with no network but loopback, or [] if the OS
    does not allow it here (no unprivileged user namespaces)."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if not unshare or not ip:
        return []
    prefix = [unshare, "-rn", "sh", "-c", f'{ip} link set lo up && exec "$0" "$@"']
    probe = subprocess.run([*prefix, sys.executable, "-c", "import socket; "
                            "socket.create_server(('127.0.0.1', 0)).close()"],
                           capture_output=True, timeout=60)
    return prefix if probe.returncode == 0 else []


def test_the_benchmarks_run_on_the_plain_install(plain_venv, tmp_path):
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks",
                    ignore=shutil.ignore_patterns("results", "__pycache__"))
    env = _env(plain_venv)
    probe = _run([str(plain_venv / "bin" / "python"), "-c",
                  "import pyvision_magic, importlib.util as u; print(pyvision_magic.__file__); "
                  "print(u.find_spec('pytest'), u.find_spec('nbclient'))"], env, tmp_path)
    assert str(plain_venv) in probe.stdout and "None None" in probe.stdout, probe.stdout
    done = _run([str(plain_venv / "bin" / "python"), "-m", "benchmarks", "--quick",
                 "--json", str(tmp_path / "rows.json")], env, tmp_path, timeout=1200)
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert not [row for row in rows if "FAILED" in row["figure"]], done.stdout[-3000:]
    skipped = [row["figure"] for row in rows if row.get("skipped")]
    # Only the figures needing a test tool skip: nbclient, and the Kernel Gateway.
    assert skipped and all("pip install nbclient" in figure or "pip install jupyter_kernel_gateway"
                           in figure for figure in skipped), skipped
    assert len(rows) - len(skipped) >= 10, done.stdout[-3000:]


@pytest.mark.parametrize("notebook", [p.name for p in NOTEBOOKS])
def test_every_notebook_runs_from_a_copy_on_the_plain_install(plain_venv, tmp_path,
                                                              tmp_path_factory, notebook):
    env = _env(plain_venv)
    _run([str(plain_venv / "bin" / "python"), "-m", "pip", "install", "-q", "nbclient"], env,
         tmp_path)
    # The temp folder of the notebook, its kernels and their tools: one this test owns,
    # outside the notebook's folder, so that what is left there can be checked.
    temp = tmp_path_factory.mktemp("temp")
    env["TMPDIR"] = str(temp)
    shutil.copy(ROOT / "notebooks" / notebook, tmp_path / notebook)
    # Every cell runs even after an error, so that a failure shows what came before it.
    run = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(nb, timeout=600, kernel_name='python3', allow_errors=True,\n"
        "               resources={'metadata': {'path': '.'}}).execute()\n"
        "nbformat.write(nb, sys.argv[1])\n"
    )
    _run([*_offline_prefix(), str(plain_venv / "bin" / "python"), "-c", run, notebook], env,
         tmp_path, timeout=1200)
    import nbformat

    nb = nbformat.read(str(tmp_path / notebook), as_version=4)
    printed, failed = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") + json.dumps(out.get("data", {}).get("text/plain", ""))
            if out.get("output_type") == "error":
                text = f"{out.ename}: {out.evalue}"
            printed.append(text)
            if out.get("output_type") == "error" or "UsageError" in text or "Traceback" in text:
                failed.append(cell.source)
    assert failed == [], "\n".join(printed)[-6000:]
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert written <= {notebook, "pyvision_outputs"}, \
        f"the notebook wrote outside its own output folder: {sorted(written)}"
    left = sorted(temp.iterdir())
    if notebook == "evaluation.ipynb":  # a folder of the user's own, kept for them
        assert [p.name[:len("pyvision_eval_")] for p in left] == ["pyvision_eval_"], left
        assert left[0].stat().st_mode & 0o777 == 0o700
        assert (left[0] / "results" / "report.md").is_file()
    else:
        assert left == [], f"the notebook left files in the temp folder: {left}"
    if notebook == "tool_gallery.ipynb":  # the plain install has no pytesseract
        program = "the tesseract program (apt-get install tesseract-ocr) and " \
            if shutil.which("tesseract") is None else ""
        assert f"Tesseract OCR missing: {program}its Python wrapper (pip install pytesseract)" \
            in "".join(printed)
