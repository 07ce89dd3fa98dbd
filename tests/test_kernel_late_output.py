"""No output of one execution reaches another, and odd output still arrives as text.

Real child kernels throughout (see ``_bootstrap``): threads, timers,
pools, processes and timed-out tools that print after their execution ended;
lone surrogates and bytes; GUI matplotlib backends; images that are broken or
claim to be huge.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator

import pytest
from PIL import Image
from test_kernel import images_of, loop, run, text_of  # noqa: F401

from pyvision_magic.kernel._child import ChildKernel

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


def test_low_level_thread_prints_nowhere_later(loop, kernel):  # noqa: F811
    started = run(loop, kernel, "import _thread, time\n"
                  f"_thread.start_new_thread(lambda: (time.sleep(0.5), print('{LATE}')), ())\n"
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
            f"shell = subprocess.Popen(['sh', '-c', 'sleep 30; echo {LATE}'])\n"
            "daemon = subprocess.Popen(['sh', '-c', 'sleep 60 & echo $!'], stdout=subprocess.PIPE,"
            " start_new_session=True)\n"
            "orphan = int(daemon.stdout.readline())\n"
            # That sh exits right after its echo; under load it may not have yet, and
            # would be counted. Waiting makes the count the same on any machine.
            "daemon.wait()\n"
            "print(shell.pid, orphan)")
    result = run(loop, kernel, code)
    assert result.status == "ok", text_of(result)
    shell_pid, orphan_pid = map(int, text_of(result).split("\n")[0].split())
    # sh and its sleep (alive for 30 s: the count does not depend on the machine's
    # speed), and the sleep the other sh left behind (re-parented to the kernel).
    notes = [o.text for o in result.outputs if o.stream == "stderr"]
    assert notes == ["[pyvision] stopped 3 background processes the tool left running "
                     "(processes end with the tool that started them).\n"]
    # Looked for from inside the kernel: in the sandbox its pids are its own.
    alive = run(loop, kernel, (
        "import os\n"
        "def running(pid):\n"
        "    try:\n"
        "        return open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0] not in 'ZX'\n"
        "    except OSError:\n"
        "        return False\n"
        f"print([pid for pid in ({shell_pid}, {orphan_pid}) if running(pid)])"))
    assert text_of(alive) == "[]\n"
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


# -- text that is not quite text -------------------------------------------------


def test_lone_surrogates_become_replacement_characters(loop, kernel):  # noqa: F811
    printed = run(loop, kernel, "print('a\\ud800 b\\udcff c'); print('pair \\ud83d\\ude00')")
    assert printed.status == "ok" and text_of(printed) == "a\ufffd b\ufffd c\npair \U0001f600\n"
    raised = run(loop, kernel, "print('before'); raise ValueError('bad \\ud800 name')")
    assert raised.status == "error" and text_of(raised).startswith("before\n")
    assert raised.outputs[-1].evalue == "bad \ufffd name"


def test_bytes_written_arrive_as_text(loop, kernel):  # noqa: F811
    code = ("import os, sys\n"
            "sys.stdout.buffer.write(b'buffer \\xff \\xe2\\x82'); sys.stdout.buffer.write(b'\\xac\\n')\n"
            "sys.stdout.flush()\n"
            "os.write(1, b'fd \\xfe \\xe2\\x82'); _ = os.write(1, b'\\xac\\n')")
    result = run(loop, kernel, code)
    assert result.status == "ok", text_of(result)
    assert text_of(result) == "buffer \ufffd \u20ac\nfd \ufffd \u20ac\n"


# -- matplotlib ------------------------------------------------------------------


@pytest.fixture
def fresh(loop) -> Iterator[ChildKernel]:  # noqa: F811
    child = ChildKernel(timeout=30.0)
    loop.run(child.start())
    yield child
    loop.run(child.shutdown())


NOTE = "[pyvision] matplotlib backend {!r} needs a screen"


def test_gui_backend_chosen_before_pyplot_is_replaced(loop, fresh):  # noqa: F811
    result = run(loop, fresh, "import matplotlib\nmatplotlib.use('TkAgg')\nimport matplotlib.pyplot as p\n"
                 "p.plot([1, 2]); p.show()")
    assert result.status == "ok", text_of(result)
    assert NOTE.format("TkAgg") in text_of(result) and len(images_of(result)) == 1
    later = run(loop, fresh, "plt.plot([1]); plt.show()\nmatplotlib.use('QtAgg'); plt.plot([2]); plt.show()\n"
                "plt.switch_backend('gtk3agg'); plt.plot([3]); plt.show(); print(plt.get_backend())")
    assert later.status == "ok", text_of(later)
    assert len(images_of(later)) == 3
    assert NOTE.format("QtAgg") in text_of(later) and NOTE.format("gtk3agg") in text_of(later)
    assert text_of(later).endswith("module://_pyvision_mpl_backend\n")


def test_matplotlib_magic_with_a_gui_keeps_plots_working(loop, fresh):  # noqa: F811
    magic = run(loop, fresh, "%matplotlib tk")
    assert magic.status == "ok" and text_of(magic).count("[pyvision]") == 1
    plotted = run(loop, fresh, "plt.plot([1, 2]); plt.show(); print('drawn')")
    assert plotted.status == "ok" and len(images_of(plotted)) == 1 and "drawn" in text_of(plotted)


# -- images displayed by other means than ours -----------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height``, with nearly no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("data, says", [
    (b"\x89PNG garbage", "an invalid image (cannot identify image file)"),
    (png_claiming(20000, 20000), "an oversized image"),
    (png_claiming(7000, 7500), "an oversized image (7000x7500 pixels)"),
    (png_claiming(200, 100), "an invalid image"),
], ids=["garbage", "20000x20000", "7000x7500", "truncated"])
def test_broken_or_huge_image_becomes_a_line_of_text(loop, kernel, data, says):  # noqa: F811
    code = f"from IPython.display import Image as I, display\ndisplay(I(data={data!r}))\nI(data={data!r})"
    result = run(loop, kernel, code)
    assert result.status == "ok" and images_of(result) == []
    texts = [o.text for o in result.outputs]
    assert len(texts) == 2 and all(f"[pyvision] the tool displayed {says}" in t for t in texts)


def test_displayed_image_over_the_budget_arrives_shrunk(loop, kernel):  # noqa: F811
    result = run(loop, kernel, "from IPython.display import Image as I, display\nimport io\n"
                 "buffer = io.BytesIO(); Image.new('RGB', (3000, 2000), 'red').save(buffer, 'JPEG')\n"
                 "display(I(data=buffer.getvalue()))")
    (image,) = images_of(result)
    assert image.mime == "image/png" and image.width * image.height <= kernel.max_image_pixels
    with Image.open(io.BytesIO(base64.b64decode(image.data))) as decoded:
        assert decoded.size == (image.width, image.height) and abs(decoded.width / decoded.height - 1.5) < 0.01


def test_displayed_images_count_against_the_cap(loop, kernel):  # noqa: F811
    result = run(loop, kernel, "from IPython.display import Image as I, display\nimport io\n"
                 "buffer = io.BytesIO(); Image.new('RGB', (30, 20)).save(buffer, 'PNG')\n"
                 "for _ in range(12):\n    display(I(data=buffer.getvalue()))")
    assert len(images_of(result)) == kernel.max_images and "4 more image(s)" in result.note
