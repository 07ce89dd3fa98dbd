"""No output of one execution reaches another.

Real child kernels throughout (see ``_kernel_bootstrap``): threads, timers,
pools, processes and timed-out tools that print after their execution ended.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_kernel import loop, process_gone, run, text_of  # noqa: F401

from pyvision_magic._kernel import ChildKernel

LATE = "late-output-marker"


@pytest.fixture(scope="module")
def kernel(loop) -> Iterator[ChildKernel]:  # noqa: F811
    child = ChildKernel(timeout=10.0, interrupt_grace=3.0)
    loop.run(child.start())
    yield child
    loop.run(child.shutdown())


def later_outputs(loop, kernel, wait: float = 1.5) -> str:  # noqa: F811
    """Everything the next two executions show: one waits while the leftovers would print."""
    waited = run(loop, kernel, f"import time; time.sleep({wait}); print('waited')")
    assert waited.status == "ok" and text_of(waited) == "waited\n", text_of(waited)
    after = run(loop, kernel, "print('after')")
    return text_of(waited) + text_of(after) + waited.note + after.note


def stream_text(result, stream: str) -> str:
    return "".join(o.text for o in result.outputs if o.stream == stream)


# -- threads ---------------------------------------------------------------------


def test_thread_left_running_prints_nowhere_later(loop, kernel):  # noqa: F811
    started = run(loop, kernel, "import threading, time\n"
                  f"threading.Thread(target=lambda: (time.sleep(0.5), print('{LATE}'))).start()\n"
                  "print('started')")
    assert text_of(started) == "started\n"
    assert LATE not in later_outputs(loop, kernel)


def test_timer_prints_nowhere_later(loop, kernel):  # noqa: F811
    run(loop, kernel, f"import threading; threading.Timer(0.5, print, ['{LATE}']).start()")
    assert LATE not in later_outputs(loop, kernel)


def test_thread_displaying_later_shows_nothing_later(loop, kernel):  # noqa: F811
    run(loop, kernel, "import threading\nthreading.Timer(0.5, lambda: (display(Image.new('RGB', "
                      f"(8, 8))), display('{LATE}'))).start()")
    waited = run(loop, kernel, "import time; time.sleep(1.5)")
    assert waited.outputs == []


def test_thread_of_timed_out_tool_prints_nowhere_later(loop, kernel):  # noqa: F811
    # The thread prints 1.5 s after the interrupt reached the tool's loop, when the
    # execution is over (its traceback is formatted, its hooks have run).
    code = ("import threading, time\n"
            "stopped = threading.Event()\n"
            f"threading.Thread(target=lambda: (stopped.wait(), time.sleep(1.5), print('{LATE}'))).start()\n"
            "print('looping', flush=True)\n"
            "try:\n    while True:\n        time.sleep(0.05)\n"
            "finally:\n    stopped.set()")
    result = run(loop, kernel, code, timeout=2.0)
    assert result.status == "timeout" and "kept" in result.note  # interrupted, not restarted
    assert text_of(result) == "looping\n"
    assert LATE not in later_outputs(loop, kernel, wait=2.5)


def test_joined_thread_and_reused_pool_print_in_their_own_cell(loop, kernel):  # noqa: F811
    joined = run(loop, kernel, "import threading\nt = threading.Thread(target=print, args=('in thread',))\n"
                 "t.start(); t.join(); print('main')")
    assert text_of(joined) == "in thread\nmain\n"
    made = run(loop, kernel, "from concurrent.futures import ThreadPoolExecutor\n"
               "pool = ThreadPoolExecutor(1)\npool.submit(print, 'first').result()")
    assert text_of(made) == "first\n"
    # The worker was started by the cell above; the work is this cell's.
    reused = run(loop, kernel, "pool.submit(print, 'second').result()")
    assert text_of(reused) == "second\n"


# -- processes -------------------------------------------------------------------


def test_processes_left_running_are_stopped_and_reported(loop, kernel):  # noqa: F811
    code = ("import subprocess\n"
            f"shell = subprocess.Popen(['sh', '-c', 'sleep 0.5; echo {LATE}'])\n"
            "daemon = subprocess.Popen(['sh', '-c', 'sleep 60 & echo $!'], stdout=subprocess.PIPE,"
            " start_new_session=True)\n"
            "print(shell.pid, int(daemon.stdout.readline()))")
    result = run(loop, kernel, code)
    assert result.status == "ok", text_of(result)
    shell_pid, orphan_pid = map(int, text_of(result).split("\n")[0].split())
    # sh and its sleep, and the sleep that sh left behind (re-parented to the kernel).
    notes = [o.text for o in result.outputs if o.stream == "stderr"]
    assert notes == ["[pyvision] stopped 3 background processes the tool left running "
                     "(processes end with the tool that started them).\n"]
    assert process_gone(shell_pid) and process_gone(orphan_pid)
    assert LATE not in later_outputs(loop, kernel)


def test_output_of_finished_processes_arrives_in_their_cell(loop, kernel):  # noqa: F811
    code = ("import os, subprocess, sys\n"
            "subprocess.run(['echo', 'inherited'])\n"
            "subprocess.run(['echo', 'given sys.stdout'], stdout=sys.stdout)\n"
            "os.system('echo from os.system >&2')\n"
            "_ = os.write(sys.stdout.fileno(), b'fd write\\n')")
    result = run(loop, kernel, code)
    assert stream_text(result, "stdout") == "inherited\ngiven sys.stdout\nfd write\n"
    assert stream_text(result, "stderr") == "from os.system\n"


def test_process_started_by_a_late_thread_prints_nowhere(loop, kernel):  # noqa: F811
    run(loop, kernel, "import subprocess, threading\n"
                      f"threading.Timer(0.5, subprocess.run, [['echo', '{LATE}']]).start()")
    assert LATE not in later_outputs(loop, kernel)
