"""Tests of the bubblewrap sandbox around the child kernel, with real kernels.

One sandboxed kernel is shared by most tests. Tests that need bwrap are skipped
when it is not installed (CI installs the Debian package ``bubblewrap``); the
tests of a missing or unusable bwrap run everywhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_kernel import _LoopThread, images_of, loop, png_input, process_gone, text_of  # noqa: F401

from pyvision_magic._errors import KernelStartError
from pyvision_magic.kernel._child import ChildKernel

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bubblewrap is not installed (Debian package `bubblewrap`; CI installs it)",
)


@pytest.fixture(scope="module")
def sandboxed(loop: _LoopThread) -> Iterator[ChildKernel]:
    child = ChildKernel(sandbox=True, timeout=10.0, interrupt_grace=4.0)
    loop.run(child.start())
    yield child
    loop.run(child.shutdown())


def run(loop: _LoopThread, kernel: ChildKernel, code: str, **kw):
    return loop.run(kernel.execute(code, **kw))


# -- what the sandbox keeps out ------------------------------------------------------


@needs_bwrap
def test_no_network_even_to_loopback_servers(loop, sandboxed):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = run(loop, sandboxed, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)")
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # nobody came
            server.accept()
    assert result.status == "error"
    assert result.outputs[-1].ename in ("ConnectionRefusedError", "OSError", "TimeoutError")


@needs_bwrap
def test_writes_only_in_scratch_and_private_tmp(loop, sandboxed):
    name = f"pyvision-sandbox-probe-{uuid.uuid4().hex}"
    targets = [Path(__file__).parent / name, Path.home() / name, Path("/etc") / name]
    code = (
        "import errno\n"
        f"for path in {[str(t) for t in targets]!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', errno.errorcode[exc.errno])\n"
        f"open('in-scratch.txt', 'w').write('ok'); _ = open('/tmp/{name}', 'w').write('private')\n"
    )
    result = run(loop, sandboxed, code)
    assert result.status == "ok", text_of(result)
    assert text_of(result) == "refused EROFS\n" * 3
    assert not any(target.exists() for target in targets)
    assert (sandboxed.scratch_path / "in-scratch.txt").read_text() == "ok"
    assert not Path("/tmp", name).exists()  # the sandbox's /tmp is its own


@needs_bwrap
def test_sandbox_runs_without_capabilities_and_with_own_pids(loop, sandboxed):
    result = run(loop, sandboxed, "import os\nprint(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
                 "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit())[:2])")
    assert text_of(result) == "0000000000000000\n[1, 2]\n"
    # kernel.pid is the kernel as seen from here, not bwrap and not its inner pid:
    # a process of the sandbox's namespace (two pids in NSpid), neither its init
    # nor the kernel template, which are 1 and 2 there.
    with open(f"/proc/{sandboxed.pid}/status") as status:
        nspid = next(line for line in status if line.startswith("NSpid:")).split()[1:]
    assert len(nspid) == 2 and int(nspid[1]) > 2
    with open(f"/proc/{sandboxed.pid}/cmdline", "rb") as cmdline:
        command = cmdline.read()
    # Forked from the template (its command line) or launched by bwrap.
    assert b"kernel template" in command or b"ipykernel_launcher" in command.split(b"\0")


# -- what still works inside ----------------------------------------------------------


@needs_bwrap
def test_execute_and_image_binding(loop, sandboxed):
    assert loop.run(sandboxed.bind_images([png_input(40, 30)])) == ["image_clue_0"]
    result = run(loop, sandboxed, "print(image_clue_0.size)\nplt.imshow(np.asarray(image_clue_0)); plt.show()")
    assert result.status == "ok" and text_of(result) == "(40, 30)\n"
    (shown,) = images_of(result)
    assert shown.variable == "image_clue_1"
    assert sandboxed.python_version and sandboxed.python_executable


@needs_bwrap
def test_timeout_interrupts_inside_the_sandbox(loop, sandboxed):
    run(loop, sandboxed, "kept = 41")
    result = run(loop, sandboxed, "import time\nwhile True:\n    time.sleep(0.05)", timeout=1.0)
    assert result.status == "timeout" and "are kept" in result.note
    assert text_of(run(loop, sandboxed, "kept + 1")).strip() == "42"


@needs_bwrap
def test_swallowed_interrupt_restarts_sandboxed_kernel(loop, sandboxed):
    loop.run(sandboxed.bind_images([png_input()]))
    old_pid = sandboxed.pid
    run(loop, sandboxed, "lost = 1")
    code = ("import time\nwhile True:\n    try:\n        time.sleep(0.1)\n"
            "    except KeyboardInterrupt:\n        pass")
    result = run(loop, sandboxed, code, timeout=1.0)
    assert result.status == "timeout" and "restarted" in result.note
    assert sandboxed.pid != old_pid and process_gone(old_pid)
    after = run(loop, sandboxed, "print('lost' in globals(), image_clue_0.size)")
    assert text_of(after) == "False (40, 30)\n"


@needs_bwrap
def test_death_and_restart_in_sandbox_write_nothing_through_planted_links(loop, sandboxed, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    loop.run(sandboxed.bind_images([png_input(40, 30)]))
    # The parent writes the input image again after the restart: a link planted there
    # by a tool must not turn that into a write outside the sandbox.
    code = ("import os\nos.remove('inputs/image_clue_0.png')\n"
            f"os.symlink({str(victim)!r}, 'inputs/image_clue_0.png')\nos.kill(os.getpid(), 9)")
    result = run(loop, sandboxed, code)
    assert result.status == "died" and "SIGKILL" in result.note
    assert victim.read_text() == "precious"
    assert text_of(run(loop, sandboxed, "gone = print(image_clue_0.size)")) == "(40, 30)\n"
    loop.run(sandboxed.restart())
    assert text_of(run(loop, sandboxed, "print('gone' in globals())")) == "False\n"


# -- when the sandbox cannot be had ---------------------------------------------------


def test_missing_bwrap_fails_at_once_with_advice(loop):
    child = ChildKernel(sandbox=True, bwrap_path="/nonexistent/bin/bwrap")
    with pytest.raises(KernelStartError, match=r"bubblewrap.*Debian package `bubblewrap`"):
        loop.run(child.start(), timeout=5)
    assert child.scratch_path is None  # failed before making anything
    loop.run(child.shutdown())


def test_bwrap_without_namespaces_fails_with_advice(loop, tmp_path):
    # A stand-in for bwrap on a machine without user namespaces.
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    child = ChildKernel(sandbox=True, bwrap_path=str(fake))
    with pytest.raises(KernelStartError, match="No permissions to create new namespace.*user namespaces"):
        loop.run(child.start(), timeout=5)
    loop.run(child.shutdown())


def test_python_paths_under_tmp_stay_visible_in_the_sandbox(loop, tmp_path, monkeypatch):
    # A virtualenv or an editable checkout may live under /tmp, which the sandbox
    # replaces with an empty tmpfs: such paths are bound back read-only.
    from pyvision_magic.kernel._sandbox import interpreter_paths

    modules = tmp_path / "mods"
    modules.mkdir()
    (modules / "pyvision_probe_module.py").write_text("ANSWER = 42\n")
    monkeypatch.setenv("PYTHONPATH", str(modules))
    assert str(modules.resolve()) in interpreter_paths() or any(
        str(modules.resolve()).startswith(p + os.sep) for p in interpreter_paths())

    async def scenario():
        async with ChildKernel(sandbox=True) as kernel:
            return await kernel.execute(
                "import pyvision_probe_module\nprint(pyvision_probe_module.ANSWER)\n"
                f"open({str(modules / 'x.txt')!r}, 'w')")

    result = loop.run(scenario())
    assert text_of(result).startswith("42")
    assert result.status == "error", "bound back read-only, not writable"
    assert not (modules / "x.txt").exists()
