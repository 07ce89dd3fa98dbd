"""Where kernel folders go (`pyvision_magic.kernel._workspace`): a kernel's sockets are
files there, and a socket's path is short (103 bytes on macOS, 107 on Linux), so a
long temp folder must not stop kernels from starting.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyvision_magic.kernel import _workspace

ROOT = Path(__file__).resolve().parents[1]


def _deepest_socket(root: str) -> int:
    return len(os.path.join(root, "k-XXXXXXXX", "0" * 32, "kernel-99"))


@pytest.fixture
def short_folder():
    """A new folder with a short path (in the temp folder, itself short enough)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="r")
    if len(folder) > 30:
        pytest.skip(f"the temp folder {tempfile.gettempdir()} is too long for this test")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_root_stays_in_a_short_temp_folder(short_folder, monkeypatch):
    monkeypatch.setattr(_workspace.tempfile, "tempdir", short_folder)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/")
    assert _workspace._root_parent("pyvision-123456-") == short_folder


def test_a_long_temp_folder_gives_way_to_a_short_private_one(tmp_path, short_folder, monkeypatch):
    long_temp = tmp_path / ("t" * 70)
    long_temp.mkdir()
    monkeypatch.setattr(_workspace.tempfile, "tempdir", str(long_temp))
    monkeypatch.setenv("XDG_RUNTIME_DIR", short_folder)
    assert _workspace._root_parent("pyvision-123456-") == short_folder
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    parent = _workspace._root_parent("pyvision-123456-")
    assert parent == "/tmp"
    assert _deepest_socket(os.path.join(parent, "pyvision-123456-XXXXXXXX")) <= 103


@pytest.mark.parametrize("sandbox", ["--sandbox", "--no-sandbox"])
def test_kernels_start_under_a_temp_folder_too_long_for_socket_paths(tmp_path, sandbox):
    if sandbox == "--sandbox" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (Debian package `bubblewrap`)")
    long_temp = tmp_path / ("t" * 70)  # as long as macOS's /var/folders/.../T, and more
    long_temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(TMPDIR=str(long_temp),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("XDG_RUNTIME_DIR", None)
    with subprocess.Popen([sys.executable, "-m", "pyvision_magic", "replay", "demo", "-q", sandbox],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=tmp_path) as proc:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "24"
    # Its kernel folder went to /tmp instead, and was removed at exit.
    assert glob.glob(f"/tmp/{_workspace._ROOT_PREFIX}{proc.pid}-*") == []
    assert list(long_temp.iterdir()) == []
