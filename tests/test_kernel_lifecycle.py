"""Every process a tool starts dies with its kernel, in every way a kernel runs.

The tool's process hides as well as it can: its own session, an empty
environment (no marker variable), a double fork. It is found from here by a
unique word on its command line, which works inside the sandbox too.
"""

from __future__ import annotations

import sys
import time
import uuid

import pytest
from test_isolation import _need_bwrap
from test_kernel import loop, png_input, run, text_of  # noqa: F401

from pyvision_magic.kernel._child import ChildKernel
from pyvision_magic.kernel._env import proc_pids
from pyvision_magic.kernel._isolation import landlock_abi

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")

MODES = {
    "sandbox, forked": {"sandbox": True},
    "sandbox, launched": {"sandbox": True, "fork": False},
    "no sandbox, forked": {"sandbox": False},
    "no sandbox, launched": {"sandbox": False, "fork": False},
}


def _spawn_hidden(word: str) -> str:
    """Tool code that leaves a process behind, detached every way it can."""
    return (
        "import os, subprocess, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', "
        f"{word!r}], env={{}}, start_new_session=True)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
    )


def _running(word: str) -> list[int]:
    found = []
    for pid in proc_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if word.encode() in cmdline.read().split(b"\0"):
                    with open(f"/proc/{pid}/stat", "rb") as stat:
                        if stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X"):
                            found.append(pid)
        except OSError:
            pass
    return found


def _wait_gone(word: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while _running(word) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _running(word)


@pytest.fixture(params=list(MODES))
def kernel(request, loop):  # noqa: F811
    options = MODES[request.param]
    if options["sandbox"]:
        _need_bwrap()
    elif landlock_abi() < 1 and not options.get("fork", True):
        pytest.skip("the launched kernel's guard needs Landlock")
    child = ChildKernel(timeout=20.0, **options)
    loop.run(child.start())
    yield child
    loop.run(child.shutdown())


def test_processes_of_a_dead_kernel_die_with_it(loop, kernel):  # noqa: F811
    word = f"pyvision-orphan-{uuid.uuid4().hex}"
    code = _spawn_hidden(word) + (
        "import time\n"
        "def cmdline(p):\n"  # a process may end between listdir and open (seen under load)
        "    try:\n"
        "        with open(f'/proc/{p}/cmdline', 'rb') as f:\n"
        "            return f.read()\n"
        "    except OSError:\n"
        "        return b''\n"
        "for _ in range(100):\n"  # until the hidden process runs (it has no other parent)
        f"    if any({word!r}.encode() in cmdline(p)\n"
        "           for p in os.listdir('/proc') if p.isdigit()):\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "else:\n"
        "    raise RuntimeError('the hidden process did not start')\n"
        "os._exit(3)\n")
    died = run(loop, kernel, code)
    assert died.status == "died", died
    assert _wait_gone(word) == []
    assert text_of(run(loop, kernel, "print('fresh')")) == "fresh\n"


def test_processes_of_a_running_kernel_die_at_its_shutdown(loop, kernel):  # noqa: F811
    word = f"pyvision-orphan-{uuid.uuid4().hex}"
    # Still running while the tool runs; the kernel is shut down under it.
    code = _spawn_hidden(word) + "import time\ntime.sleep(30)\n"

    async def scenario() -> None:
        import asyncio

        task = asyncio.ensure_future(kernel.execute(code))
        deadline = time.monotonic() + 10
        while not _running(word) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _running(word), "the tool's process did not start"
        await kernel.shutdown()
        await task

    loop.run(scenario())
    assert _wait_gone(word) == []


@pytest.mark.parametrize("sandbox", [True, False])
def test_a_tool_that_deletes_its_folders_and_dies_costs_one_restart(loop, sandbox):  # noqa: F811
    if sandbox:
        _need_bwrap()
    kernel = ChildKernel(timeout=20.0, sandbox=sandbox)
    loop.run(kernel.start())
    try:
        loop.run(kernel.bind_images([png_input()]))
        # Outside the sandbox the folder itself goes; inside, only what is in it.
        died = run(loop, kernel, "import os, shutil\n"
                                 "shutil.rmtree(os.getcwd(), ignore_errors=True)\nos._exit(1)")
        assert died.status == "died"
        # The folder and the input images are back; the kernel works.
        assert text_of(run(loop, kernel, "print(image_clue_0.size)")) == "(40, 30)\n"
    finally:
        loop.run(kernel.shutdown())
