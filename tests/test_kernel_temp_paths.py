"""Kernels start whatever the length of ``$TMPDIR``.

A kernel's sockets are files under this process's kernel folder, and a Unix
socket's path is limited to about a hundred bytes: with a long temp dir (macOS
gives ~50 characters) every kernel used to fail with "File name too long". The
kernel folder then goes in /tmp; if that cannot be used either, the error says
what to set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pyvision_magic._errors import KernelStartError
from pyvision_magic.kernel import _workspace

_SCRIPT = r"""
import asyncio, json, os, sys
from pyvision_magic.kernel._child import ChildKernel
from pyvision_magic.kernel._workspace import process_root

async def one(**options):
    async with ChildKernel(**options) as kernel:
        result = await kernel.execute("print(6 * 7)")
        text = "".join(o.text or "" for o in result.outputs)
        return {"text": text, "sandboxed": kernel.isolation.sandboxed, "forked": kernel.forked}

async def main():
    kernels = [await one(), await one(sandbox=False, fork=False)]
    print(json.dumps({"root": process_root(), "kernels": kernels}))

asyncio.run(main())
"""


def test_kernels_start_under_a_temp_dir_too_long_for_sockets(tmp_path: Path) -> None:
    long_temp = tmp_path / ("a-temp-folder-with-a-long-name-" * 3)
    long_temp.mkdir()
    env = {**os.environ, "TMPDIR": str(long_temp)}
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert [k["text"] for k in report["kernels"]] == ["42\n", "42\n"]
    assert report["kernels"][1]["forked"] is False
    root = report["root"]
    assert os.path.dirname(root) == "/tmp" and not root.startswith(str(long_temp))
    assert not os.path.exists(root)  # removed at exit, as under $TMPDIR
    assert os.listdir(long_temp) == [] or all(
        not name.startswith("pyvision-") for name in os.listdir(long_temp))


def test_no_usable_short_folder_is_one_sentence(tmp_path: Path, monkeypatch) -> None:
    long_temp = tmp_path / ("x" * 80)
    long_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_temp))
    monkeypatch.setattr(_workspace, "_SHORT_TEMP", str(tmp_path / "missing"))
    monkeypatch.setattr(_workspace, "_ROOT", {})  # this process's folder is made anew
    with pytest.raises(KernelStartError, match=r"set TMPDIR to a writable folder whose path "
                                              r"is at most \d+ characters long"):
        _workspace.process_root()
    assert os.listdir(long_temp) == []  # nothing made


def test_the_temp_dir_is_kept_when_it_leaves_room(monkeypatch) -> None:
    short = tempfile.mkdtemp(prefix="pvt-", dir="/tmp")
    try:
        monkeypatch.setattr(tempfile, "tempdir", short)
        monkeypatch.setattr(_workspace, "_ROOT", {})
        root = _workspace.process_root()
        assert os.path.dirname(root) == short
    finally:
        shutil.rmtree(short)
