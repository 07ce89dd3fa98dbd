"""Kernels forked from the template process, and the launch path they replace.

Every kernel test in ``test_kernel.py`` runs on forked kernels, the default on
Linux (in the sandbox, where a template inside it forks them). Here, outside the
sandbox (``sandbox=False``), where this process sees the template's pids: what
forking must keep equal to a launched kernel (paths, secrets, randomness,
interrupts, deaths), what it adds (a dead template costs one restart; the
orphans of a dead kernel: test_kernel_lifecycle.py), the fallback to a launch, and the
main behaviours of the launch path itself (``fork=False``). The template inside
the sandbox has its own tests in ``test_kernel_sandbox.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
from test_kernel import loop, png_input, process_gone, run, text_of  # noqa: F401

from pyvision_magic.kernel import _forkserver
from pyvision_magic.kernel._child import ChildKernel as _ChildKernel
from pyvision_magic.kernel._env import child_environment

pytestmark = pytest.mark.skipif(not _forkserver.fork_supported(),
                                reason="kernels are forked on Linux only")


def ChildKernel(**options):  # noqa: N802 - stands for the class, outside the sandbox
    return _ChildKernel(sandbox=False, **options)

# The folder goes as its parts: the model gets the working folder's name shortened to ".".
_PROBE = ("import json, os, sys\n"
          "print(json.dumps({'path': sys.path, 'cwd': os.getcwd().split(os.sep), 'ppid': os.getppid(),"
          " 'pid': os.getpid(), 'argv0': os.path.basename(sys.argv[0]),"
          " 'random': __import__('numpy').random.rand(),"
          " 'key': os.environ.get('OPENAI_API_KEY'),"
          " 'marker': os.environ.get('PYVISION_KERNEL_ID')}))")


def _probe(loop, kernel):  # noqa: F811 - the fixture's name
    result = run(loop, kernel, _PROBE)
    assert result.status == "ok", text_of(result)
    found = json.loads(text_of(result))
    found["cwd"] = os.sep.join(found["cwd"])
    return found


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        data = stat.read()
    return int(data[data.rfind(b")") + 2:].split()[1])


def _environ_of(pid: int) -> bytes:
    with open(f"/proc/{pid}/environ", "rb") as environ:
        return environ.read()


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-forktest-0123456789abcdef")


def test_forked_kernel_matches_a_launched_one(loop, secret_env):  # noqa: F811
    forked, launched = ChildKernel(), ChildKernel(fork=False)
    assert forked.forked and not launched.forked
    loop.run(forked.start())
    loop.run(launched.start())
    try:
        a, b = _probe(loop, forked), _probe(loop, launched)
        other = ChildKernel()
        loop.run(other.start())
        c = _probe(loop, other)
        loop.run(other.shutdown())
        server = _forkserver.server_for(child_environment(os.environ))
        template = server.template_pid
    finally:
        loop.run(forked.shutdown())
        loop.run(launched.shutdown())
    # Forked from the template, which runs this interpreter.
    assert template is not None and a["ppid"] == template and c["ppid"] == template
    assert os.path.realpath(f"/proc/{template}/exe") == os.path.realpath(sys.executable)
    # Same import path, same script name, own working directory.
    assert a["path"] == b["path"] and a["argv0"] == b["argv0"] == "ipykernel_launcher.py"
    assert a["cwd"] != b["cwd"] and os.path.basename(a["cwd"]).startswith("s-")
    # No secret, in the kernel or in the template's memory image of its environment.
    assert a["key"] is None and b["key"] is None
    assert b"sk-forktest" not in _environ_of(template)
    # Each kernel has its own marker and its own random numbers.
    assert a["marker"] and c["marker"] and a["marker"] != c["marker"]
    assert a["random"] != c["random"]


def test_interrupt_and_death_of_a_forked_kernel(loop):  # noqa: F811
    kernel = ChildKernel(timeout=1.0, interrupt_grace=10.0)  # grace only waits if the interrupt fails
    loop.run(kernel.start())
    try:
        loop.run(kernel.bind_images([png_input()]))
        timed_out = run(loop, kernel, "import time\nprint('go', flush=True)\ntime.sleep(30)")
        assert timed_out.status == "timeout" and "go" in text_of(timed_out)
        assert "restarted" not in timed_out.note  # the interrupt reached it: no restart
        pid = kernel.pid
        died = run(loop, kernel, "import os; os.kill(os.getpid(), 9)")
        assert died.status == "died" and "SIGKILL" in died.note
        assert kernel.pid != pid
        assert text_of(run(loop, kernel, "print(image_clue_0.size)")) == "(40, 30)\n"
    finally:
        loop.run(kernel.shutdown())


def test_a_dead_template_costs_one_restart(loop):  # noqa: F811
    kernel = ChildKernel(timeout=20.0)
    loop.run(kernel.start())
    try:
        run(loop, kernel, "x = 1")
        server = _forkserver.server_for(child_environment(os.environ))
        old_template, old_pid = server.template_pid, kernel.pid
        os.kill(old_template, signal.SIGKILL)
        # The kernel dies with its template (PR_SET_PDEATHSIG).
        deadline = time.monotonic() + 10
        while not process_gone(old_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_gone(old_pid)
        result = run(loop, kernel, "print('x' in globals())")
        if result.status == "died":  # the death was seen by this execution
            result = run(loop, kernel, "print('x' in globals())")
        assert result.status == "ok" and text_of(result) == "False\n"
        assert server.template_pid not in (None, old_template)
        assert _parent_of(kernel.pid) == server.template_pid
    finally:
        loop.run(kernel.shutdown())


def test_a_template_that_cannot_start_falls_back_to_a_launch(loop, monkeypatch, caplog):  # noqa: F811
    broken = _forkserver.ForkServer(child_environment(os.environ),
                                           python="/nonexistent/python3")
    monkeypatch.setattr(_forkserver, "server_for", lambda env, **sandbox: broken)
    kernel = ChildKernel()
    with caplog.at_level("WARNING"):
        loop.run(kernel.start())
    try:
        assert "launching it the usual way" in caplog.text
        assert _parent_of(kernel.pid) == os.getpid()
        assert text_of(run(loop, kernel, "print(6 * 7)")) == "42\n"
    finally:
        loop.run(kernel.shutdown())


# -- the launch path, no longer the default on Linux ------------------------------


def test_launched_kernel_times_out_dies_and_recovers(loop):  # noqa: F811
    kernel = ChildKernel(fork=False, timeout=1.0, interrupt_grace=10.0)
    loop.run(kernel.start())
    try:
        assert _parent_of(kernel.pid) == os.getpid()
        loop.run(kernel.bind_images([png_input()]))
        run(loop, kernel, "kept = 41")
        timed_out = run(loop, kernel, "import time\ntime.sleep(30)")
        assert timed_out.status == "timeout"
        assert text_of(run(loop, kernel, "kept + 1")).strip() == "42"
        died = run(loop, kernel, "import os; os.kill(os.getpid(), 9)")
        assert died.status == "died" and "SIGKILL" in died.note
        assert text_of(run(loop, kernel, "print(image_clue_0.size)")) == "(40, 30)\n"
        assert _parent_of(kernel.pid) == os.getpid()
    finally:
        loop.run(kernel.shutdown())


_PRIORITY = ("import os\n"
             "group = open('/proc/self/autogroup').read().split()[-1] "
             "if os.path.exists('/proc/self/autogroup') else 'none'\n"
             "print(os.nice(0), group)")


@pytest.mark.parametrize("fork", [True, False])
def test_tools_run_at_lower_priority(loop, fork):  # noqa: F811
    """Nice 10, for the process and its scheduling group (autogroup), forked or launched."""
    kernel = ChildKernel(fork=fork)
    plain = ChildKernel(fork=fork, nice=None)
    loop.run(kernel.start())
    loop.run(plain.start())
    try:
        assert kernel.forked == fork
        niceness, group = text_of(run(loop, kernel, _PRIORITY)).split()
        assert niceness == "10" and group in ("10", "none")
        niceness, group = text_of(run(loop, plain, _PRIORITY)).split()
        assert niceness == str(os.nice(0)) and group in ("0", "none")
    finally:
        loop.run(kernel.shutdown())
        loop.run(plain.shutdown())


def test_a_forked_child_process_starts_its_own_template(loop):  # noqa: F811
    """After os.fork (multiprocessing), the child must not talk to the parent's template."""
    kernel = ChildKernel()
    loop.run(kernel.start())
    loop.run(kernel.shutdown())
    env = child_environment(os.environ)
    assert _forkserver.server_for(env).template_pid is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only look, nothing that could wait on the parent's threads
        try:
            server = _forkserver.server_for(env)
            os.write(write, json.dumps([server.template_pid, server.alive]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        template_pid, alive = json.loads(answer.read())
    os.waitpid(pid, 0)
    assert template_pid is None and alive is False


def test_process_listings_name_the_kernel_template(loop):  # noqa: F811
    kernel = ChildKernel()
    loop.run(kernel.start())
    try:
        with open(f"/proc/{kernel.pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
        assert argv[1] == b"-c" and argv[2].startswith(b"# pyvision_magic kernel template\n")
    finally:
        loop.run(kernel.shutdown())
