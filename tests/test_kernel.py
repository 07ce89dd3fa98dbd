"""Tests of the child-kernel executor against real ipykernel processes.

Most tests share one module-scoped kernel; tests that need a fresh environment
or shut the kernel down start their own. Coroutines run on one background event
loop, since the kernel's zmq sockets belong to the loop that made them.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from PIL import Image

from pyvision_magic._errors import KernelStartError
from pyvision_magic.kernel._child import ChildKernel
from pyvision_magic.kernel._pool import KernelPool
from pyvision_magic.kernel._output import OutputCollector
from pyvision_magic.kernel._env import child_environment, looks_secret
from pyvision_magic._records import ExecutionResult, ImageInput

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread, fed coroutines from the test thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[_LoopThread]:
    runner = _LoopThread()
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def kernel(loop: _LoopThread) -> Iterator[ChildKernel]:
    child = ChildKernel(timeout=10.0, interrupt_grace=4.0)  # waits only if the interrupt fails
    loop.run(child.start())
    yield child
    loop.run(child.shutdown())


def png_input(width: int = 40, height: int = 30, color: str = "red") -> ImageInput:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return ImageInput(name="input.png", data=buffer.getvalue(), mime="image/png", width=width, height=height)


def run(loop: _LoopThread, kernel: ChildKernel, code: str, **kw: Any) -> ExecutionResult:
    return loop.run(kernel.execute(code, **kw))


def text_of(result: ExecutionResult) -> str:
    return "".join(o.text for o in result.outputs if o.kind in ("text", "error"))


def images_of(result: ExecutionResult) -> list:
    return [o for o in result.outputs if o.kind == "image"]


def decoded_size(output: Any) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(output.data))) as image:
        return image.size


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has ended; only its parent's wait is missing


# -- basic execution -------------------------------------------------------------


def test_result_streams_and_preloaded_names(loop, kernel):
    result = run(loop, kernel, "print('out'); import sys; print('err', file=sys.stderr)\n"
                 "print(np.__name__, cv2.__name__, Image.__name__, plt.__name__)\n1+1")
    assert result.status == "ok"
    kinds = [(o.kind, o.stream) for o in result.outputs]
    assert ("text", "stderr") in kinds and ("text", "result") in kinds
    assert "out\n" in text_of(result)
    assert "numpy cv2 PIL.Image matplotlib.pyplot" in text_of(result)
    assert result.outputs[-1].text.strip() == "2"


def test_consecutive_stream_chunks_are_merged(loop, kernel):
    result = run(loop, kernel, "import sys\nfor i in range(5):\n    print(i); sys.stdout.flush()")
    stdout = [o for o in result.outputs if o.stream == "stdout"]
    assert len(stdout) == 1 and stdout[0].text == "0\n1\n2\n3\n4\n"


def test_exception_after_print_keeps_both(loop, kernel):
    result = run(loop, kernel, "print('before the error')\ndef f():\n    raise ValueError('bad value')\nf()")
    assert result.status == "error"
    assert result.outputs[0].text == "before the error\n"
    error = result.outputs[-1]
    assert error.kind == "error" and error.ename == "ValueError" and error.evalue == "bad value"
    assert "Traceback" in error.text and "f()" in error.text and "\x1b[" not in error.text


def test_input_fails_fast(loop, kernel):
    result = run(loop, kernel, "input('name? ')", timeout=20)
    assert result.status == "error"
    assert result.outputs[-1].ename == "StdinNotImplementedError"
    assert result.duration < 10  # far below the limit: it did not wait for input


# -- images ----------------------------------------------------------------------


def test_show_in_loop_function_and_open_figures(loop, kernel):
    loop_result = run(loop, kernel, "for i in range(3):\n    plt.plot([0, i])\n    plt.show()")
    assert loop_result.status == "ok" and len(images_of(loop_result)) == 3
    func_result = run(loop, kernel, "def draw():\n    plt.figure(); plt.plot([1, 2]); plt.show()\ndraw()")
    assert len(images_of(func_result)) == 1
    open_result = run(loop, kernel, "plt.figure(); plt.plot([3, 1])\nfig, ax = plt.subplots(); ax.plot([1, 3])")
    assert len(images_of(open_result)) == 2
    # Figures are closed after being shown, so nothing repeats.
    assert images_of(run(loop, kernel, "x = 1")) == []


def test_display_of_figure_is_not_repeated(loop, kernel):
    result = run(loop, kernel, "fig, ax = plt.subplots(); ax.plot([1, 2]); display(fig)")
    assert len(images_of(result)) == 1


def test_images_bound_as_next_clues(loop, kernel):
    names = loop.run(kernel.bind_images([png_input(40, 30)]))
    assert names == ["image_clue_0"]
    first = run(loop, kernel, "plt.imshow(np.asarray(image_clue_0)); plt.show()")
    (shown,) = images_of(first)
    assert shown.variable == "image_clue_1"
    assert decoded_size(shown) == (shown.width, shown.height)
    second = run(loop, kernel, "print(type(image_clue_1).__name__, image_clue_1.size, image_clue_0.size)")
    assert text_of(second).strip() == f"Image ({shown.width}, {shown.height}) (40, 30)"
    # The input image sits in the scratch dir, not inlined in code, with no handle open.
    third = run(loop, kernel, "import os; print(sorted(os.listdir('inputs')), "
                "[f for f in os.listdir('/proc/self/fd') if 'image_clue' in os.path.realpath('/proc/self/fd/' + f)])")
    assert text_of(third).strip() == "['image_clue_0.png'] []"


def test_large_figure_is_downscaled_in_kernel(loop, kernel):
    result = run(loop, kernel, "plt.figure(figsize=(40, 40), dpi=100); plt.plot([0, 1]); plt.show()")
    (image,) = images_of(result)
    assert image.width * image.height <= kernel.max_image_pixels
    assert image.width > 900 and decoded_size(image) == (image.width, image.height)


def test_pil_show_cv2_imshow_and_last_expression(loop, kernel):
    code = (
        "Image.new('RGB', (3000, 1500), 'blue').show()\n"
        "cv2.imshow('w', np.zeros((20, 30, 3), np.uint8) + np.array([255, 0, 0], np.uint8)); cv2.waitKey(0)\n"
        "Image.new('L', (10, 10))"
    )
    result = run(loop, kernel, code)
    assert result.status == "ok", text_of(result)
    big, bgr, last = images_of(result)
    assert big.width * big.height <= kernel.max_image_pixels and big.width == 2 * big.height
    with Image.open(io.BytesIO(base64.b64decode(bgr.data))) as image:
        assert image.convert("RGB").getpixel((0, 0)) == (0, 0, 255)  # BGR blue shown as blue
    assert (last.width, last.height) == (10, 10)
    assert [big.variable, bgr.variable, last.variable] == sorted({big.variable, bgr.variable, last.variable},
                                                                   key=lambda n: int(n.rsplit("_", 1)[1]))


def test_image_count_is_capped(loop, kernel):
    result = run(loop, kernel, "for i in range(11):\n    plt.figure(figsize=(1, 1)); plt.show()")
    assert len(images_of(result)) == kernel.max_images
    assert "3 more image(s) were not shown" in result.note


# -- output caps -----------------------------------------------------------------


def test_huge_print_keeps_head_and_tail(loop, kernel):
    result = run(loop, kernel, "print('<HEAD>' + 'x' * 10**7 + '<TAIL>')")
    text = text_of(result)
    assert text.startswith("<HEAD>") and text.rstrip().endswith("<TAIL>")
    assert len(text) < kernel.max_output_chars + 200
    assert "characters of output dropped" in text


def test_many_small_prints_are_capped(loop, kernel):
    # A generous limit: on a loaded machine 10**5 prints can take longer than the default.
    result = run(loop, kernel, "for i in range(10**5):\n    print(i)", timeout=60)
    text = text_of(result)
    assert text.startswith("0\n1\n2\n") and text.endswith("99998\n99999\n")
    assert len(text) < kernel.max_output_chars + 200
    dropped = int(text.split("[... ")[1].split(" ")[0])
    assert dropped + kernel.max_output_chars == sum(len(f"{i}\n") for i in range(10**5))


def test_collected_cap_handles_images_between_text():
    collected = OutputCollector(max_chars=10, max_images=2, max_pixels=None)
    from pyvision_magic._records import Output

    collected.add_text("abcdefgh", "stdout")
    collected.add_image(Output(kind="image", data="AA", mime="image/png"))
    collected.add_text("ijklmnop", "stdout")
    outputs = collected.outputs()
    texts = "".join(o.text for o in outputs if o.kind == "text")
    assert texts.startswith("abcde") and texts.endswith("lmnop") and "6 characters" in texts
    assert sum(o.kind == "image" for o in outputs) == 1


# -- lazy preloads: np, cv2 and plt are imported on first use ----------------------


@pytest.fixture
def fresh(loop: _LoopThread) -> Iterator[ChildKernel]:
    """A kernel of its own, in the state right after start."""
    child = ChildKernel(timeout=30.0)
    loop.run(child.start())
    yield child
    loop.run(child.shutdown())


BLUE_BGR = "np.zeros((20, 30, 3), np.uint8) + np.array([255, 0, 0], np.uint8)"


def is_blue(output: Any) -> bool:
    with Image.open(io.BytesIO(base64.b64decode(output.data))) as image:
        return image.convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_preloads_are_imported_on_first_use_then_replaced(loop, fresh):
    loop.run(fresh.bind_images([png_input()]))
    heavy = "[m for m in ('numpy', 'matplotlib', 'cv2') if m in sys.modules]"
    start = run(loop, fresh, f"import sys\nprint({heavy}, type(plt).__name__ == 'module')")
    # A forked kernel shares the numpy its template imported; nothing else is loaded.
    assert text_of(start) == ("['numpy'] False\n" if fresh.forked else "[] False\n")
    shown = run(loop, fresh, "plt.figure(); plt.plot([1, 2]); plt.show()\n"
                f"cv2.imshow('w', {BLUE_BGR})\n"
                "print(type(plt).__name__, type(cv2).__name__, type(np).__name__, plt.get_backend())")
    assert shown.status == "ok", text_of(shown)
    assert text_of(shown) == "module module module module://_pyvision_mpl_backend\n"
    figure, bgr = images_of(shown)
    assert is_blue(bgr) and (figure.variable, bgr.variable) == ("image_clue_1", "image_clue_2")


def test_imports_written_by_the_tool_are_patched_in_the_same_cell(loop, fresh):
    code = ("import matplotlib.pyplot as plt2\nplt2.plot([0, 1]); plt2.show()\n"
            "import cv2 as c\nimport numpy as np\n"
            f"c.imshow('w', {BLUE_BGR}); c.waitKey(0); c.destroyAllWindows()\n"
            "print(type(plt).__name__ == 'module', plt.figure is plt2.figure)")
    result = run(loop, fresh, code)
    assert result.status == "ok", text_of(result)
    figure, bgr = images_of(result)
    assert is_blue(bgr) and figure.width > 100
    # The stand-in was untouched until the last line, and then gave the same module.
    assert text_of(result) == "False True\n"


def test_modules_imported_by_other_code_are_patched(loop, fresh):
    # A Figure made without pyplot is displayed without importing pyplot.
    alone = run(loop, fresh, "import matplotlib.figure, sys\nfig = matplotlib.figure.Figure(figsize=(2, 2))\n"
                "fig.add_subplot().plot([1, 2]); display(fig)\nprint('matplotlib.pyplot' in sys.modules)")
    assert alone.status == "ok" and len(images_of(alone)) == 1, text_of(alone)
    assert text_of(alone) == "False\n"
    helper = "import matplotlib.pyplot as p\ndef draw():\n    p.plot([1, 2]); p.show()\n"
    result = run(loop, fresh, f"open('helper.py', 'w').write({helper!r})\nimport helper\nhelper.draw()\n"
                 "print('shown', len(helper.p.get_fignums()))")
    assert result.status == "ok", text_of(result)
    assert len(images_of(result)) == 1 and text_of(result) == "shown 0\n"


def test_backend_chosen_before_the_import_is_kept(loop, fresh):
    code = ("import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as p\n"
            "print(p.get_backend())\n_ = p.plot([1, 2])")
    result = run(loop, fresh, code)
    # As when the tool switches after the import: the figure left open is still shown.
    assert text_of(result) == "agg\n" and len(images_of(result)) == 1


# -- timeouts and deaths ---------------------------------------------------------


def test_timeout_interrupts_and_no_stale_output(loop, kernel):
    loop.run(kernel.bind_images([png_input()]))
    run(loop, kernel, "kept = 41")
    code = "import time\nprint('started')\nwhile True:\n    print('tick'); time.sleep(0.05)"
    result = run(loop, kernel, code, timeout=1.0)
    assert result.status == "timeout" and "time limit of 1 s" in result.note
    assert "started" in text_of(result)
    assert all(o.ename != "KeyboardInterrupt" for o in result.outputs)
    after = run(loop, kernel, "1+1")
    assert after.status == "ok" and text_of(after).strip() == "2"
    assert "tick" not in text_of(run(loop, kernel, "kept + 1"))
    assert text_of(run(loop, kernel, "kept + 1")).strip() == "42"


def test_swallowed_interrupt_restarts_kernel(loop, kernel):
    loop.run(kernel.bind_images([png_input()]))
    run(loop, kernel, "lost = 1")
    code = ("import time\nwhile True:\n    try:\n        print('stale', flush=True); time.sleep(0.1)\n"
            "    except KeyboardInterrupt:\n        pass")
    result = run(loop, kernel, code, timeout=1.0)
    assert result.status == "timeout" and "restarted" in result.note and "image_clue_0" in result.note
    assert "stale" in text_of(result)
    after = run(loop, kernel, "print('fresh', 'lost' in globals(), image_clue_0.size)")
    assert text_of(after) == "fresh False (40, 30)\n"


@pytest.mark.parametrize(
    "code, signal_name",
    [("import os; print('bye', flush=True); os.kill(os.getpid(), 9)", "SIGKILL"),
     ("import ctypes; ctypes.string_at(0)", "SIGSEGV")],
)
def test_kernel_death_is_reported_and_recovered(loop, kernel, code, signal_name):
    loop.run(kernel.bind_images([png_input()]))
    old_pid = kernel.pid
    result = run(loop, kernel, code)
    assert result.status == "died" and signal_name in result.note
    # Noticed at once, not at the time limit; the duration includes the restart,
    # which takes seconds on a busy machine.
    assert result.duration < kernel.timeout
    assert kernel.pid != old_pid
    after = run(loop, kernel, "print(1+1, image_clue_0.size)")
    assert after.status == "ok" and text_of(after) == "2 (40, 30)\n"


def test_memory_limit_gives_memory_error(loop, kernel):
    result = run(loop, kernel, "buffer = bytearray(50 * 2**30)")
    assert result.status == "error" and result.outputs[-1].ename == "MemoryError"
    assert text_of(run(loop, kernel, "print('still here')")) == "still here\n"


# -- own kernels: environment, lifecycle -----------------------------------------


def test_secrets_not_passed_and_start_is_shared(loop, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    child = ChildKernel(extra_env={"TOOL_SETTING": "on"}, file_size_limit=10**6)

    async def scenario() -> tuple[list, ExecutionResult]:
        starts = [asyncio.ensure_future(child.start()) for _ in range(3)]
        first = await child.execute("import os; print(os.getpid())")
        await asyncio.gather(*starts)
        probe = await child.execute(
            "import os; print(os.environ.get('OPENAI_API_KEY'), os.environ.get('MY_SECRET_TOKEN'),"
            " os.environ.get('LC_ALL'), os.environ.get('TOOL_SETTING'),"
            # In the sandbox the scratch folder is seen at another path, same name.
            " os.path.basename(os.getcwd()) == %r)" % child.scratch_path.name
        )
        big_file = await child.execute("open('big.bin', 'wb').write(b'x' * 2 * 10**6)")
        await child.shutdown()
        return [first, big_file], probe

    (first, big_file), probe = loop.run(scenario())
    assert first.status == "ok"
    assert text_of(probe) == "None None C.UTF-8 on True\n"
    # Past the file size cap the write fails; the kernel is not killed by SIGXFSZ.
    assert big_file.status == "error" and "File too large" in big_file.outputs[-1].evalue


def test_env_filter_rules():
    env = child_environment(
        {"PATH": "/bin", "HF_TOKEN": "x", "AWS_REGION": "eu", "OPENBLAS_NUM_THREADS": "1",
         "LD_LIBRARY_PATH": "/lib", "RANDOM": "1", "HOME": "/h", "LC_API_KEY": "k"}
    )
    assert env["PATH"] == "/bin" and env["OPENBLAS_NUM_THREADS"] == "1" and env["HOME"] == "/h"
    assert not {"HF_TOKEN", "AWS_REGION", "RANDOM", "LC_API_KEY"} & set(env)
    assert env["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"
    assert looks_secret("PATH", "sk-abcdefghijklmnop")


def test_shutdown_ends_the_kernel_and_removes_its_folders(loop):
    # The processes a tool starts: test_kernel_lifecycle.py, in every launch mode.
    async def scenario() -> tuple[str, int]:
        async with ChildKernel() as child:
            await child.execute("open('left.txt', 'w').write('x')")
            scratch = str(child.scratch_path)
            kernel_pid = child.pid
            assert os.path.exists(os.path.join(scratch, "left.txt"))
        await child.shutdown()  # a second shutdown is harmless
        return scratch, kernel_pid

    scratch, kernel_pid = loop.run(scenario())
    deadline = time.monotonic() + 5
    while not process_gone(kernel_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_gone(kernel_pid)
    assert not os.path.exists(scratch)


def test_unknown_kernelspec_fails_with_one_sentence(loop):
    child = ChildKernel(kernel_name="no-such-kernel-anywhere")
    with pytest.raises(KernelStartError, match="no Jupyter kernel named 'no-such-kernel-anywhere'"):
        loop.run(child.start())
    loop.run(child.shutdown())


def test_importable_libraries(loop, kernel):
    libraries = loop.run(kernel.importable_libraries())
    names = [entry.split()[0] for entry in libraries]
    assert {"numpy", "cv2", "PIL", "matplotlib"} <= set(names)
    assert all(len(entry.split()) == 2 for entry in libraries if entry.split()[0] in ("numpy", "cv2"))


def test_libraries_and_python_known_before_the_kernel_started(loop, caplog):
    log = logging.getLogger("test-child-kernel")
    child = ChildKernel(log=log)
    assert child.python_version == platform.python_version()
    assert child.python_executable == sys.executable

    async def scenario() -> tuple[bool, list[str], list[str]]:
        starting = asyncio.ensure_future(child.start())
        await asyncio.sleep(0)  # the start is under way
        libraries = await child.importable_libraries()
        answered_before_start = not starting.done()
        await starting
        from pyvision_magic.kernel._interpreter import NOTABLE_LIBRARIES

        in_kernel = await child._conn.call(f"probe_libraries({NOTABLE_LIBRARIES!r})")
        await child.shutdown()
        return answered_before_start, libraries, in_kernel

    with caplog.at_level(logging.INFO, logger="test-child-kernel"):
        answered_before_start, libraries, in_kernel = loop.run(scenario())
    assert answered_before_start
    assert libraries == in_kernel  # the parent's probe says what the kernel would
    where = " in the sandbox" if child.sandboxed else ""
    assert f"Tools run{where} in this Python, {platform.python_version()} ({sys.executable})" in caplog.text


def test_named_kernelspec_is_asked_once_started(loop):
    # ipykernel's own "python3" spec runs this interpreter too, but by name.
    child = ChildKernel(kernel_name="python3")
    assert child.python_version is None and child.python_executable is None

    async def scenario() -> tuple[bool, list[str]]:
        libraries = await child.importable_libraries()
        started = child.is_ready
        await child.shutdown()
        return started, libraries

    started, libraries = loop.run(scenario())
    assert started and libraries == loop.run(ChildKernel().importable_libraries())
    assert child.python_version == platform.python_version()


def test_other_interpreter_is_named_in_the_log():
    from pyvision_magic.kernel._interpreter import describe_interpreter

    line = describe_interpreter({"executable": "/opt/py310/bin/python", "version": "3.10.4"},
                                kernel_name="py310", sandboxed=False)
    assert "Python 3.10.4 (/opt/py310/bin/python) from kernelspec 'py310'" in line
    assert f"not in this Python {platform.python_version()}" in line


# -- stage 2: pool and leaks -------------------------------------------------------


def test_pool_hands_over_ready_kernels_and_refills(loop):
    async def scenario() -> tuple[bool, str, int]:
        async with KernelPool(size=1) as pool:
            assert pool.ready == 1
            kernel = await pool.acquire()
            was_ready = kernel.is_ready
            answer = text_of(await kernel.execute("print(np.add(2, 3))"))
            await kernel.shutdown()
            deadline = time.monotonic() + 30
            while pool.ready < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            refilled = pool.ready
        return was_ready, answer, refilled

    was_ready, answer, refilled = loop.run(scenario())
    assert was_ready and answer == "5\n" and refilled == 1


def test_pool_hands_over_a_kernel_still_starting_without_waiting(loop):
    async def scenario() -> tuple[bool, str, bool]:
        pool = KernelPool(size=1)
        pool._refill()  # started, not waited for
        kernel = await pool.acquire(wait=False)
        handed_over_starting = not kernel.is_ready
        await kernel.start()  # waits for the start already under way
        answer = text_of(await kernel.execute("print(6 * 7)"))
        await kernel.shutdown()
        await pool.shutdown()
        return handed_over_starting, answer, kernel.is_ready

    handed_over_starting, answer, _ = loop.run(scenario())
    assert handed_over_starting and answer == "42\n"


def test_a_kernel_handed_over_starting_reports_its_own_failed_start(loop):
    from pyvision_magic import KernelStartError

    async def scenario() -> str:
        pool = KernelPool(size=1)
        pool.config.ChildKernel.kernel_name = "no-such-kernelspec"
        pool._refill()
        kernel = await pool.acquire(wait=False)
        try:
            await kernel.start()
        except KernelStartError as exc:
            return str(exc)
        finally:
            await kernel.shutdown()
            await pool.shutdown()
        return "started"

    message = loop.run(scenario())
    assert "no-such-kernelspec" in message


def _children() -> set[int]:
    from pyvision_magic.kernel._env import kernel_tree

    return kernel_tree(os.getpid())


def test_start_stop_cycles_leak_no_processes_or_fds(loop):
    """50 start/stop cycles (PYVISION_KERNEL_CYCLES sets another count while developing)."""
    cycles = int(os.environ.get("PYVISION_KERNEL_CYCLES", "50"))

    async def cycle() -> None:
        async with ChildKernel() as child:
            await child.execute("import subprocess; subprocess.Popen(['sleep', '60'])")

    loop.run(cycle())  # first use opens lazily created files (imports, the loop's fds)
    fds_before, children_before = len(os.listdir("/proc/self/fd")), _children()

    async def all_cycles() -> None:
        for _ in range(0, cycles, 2):  # two at a time: 2 cores
            await asyncio.gather(cycle(), cycle())

    loop.run(all_cycles(), timeout=60 + 5 * cycles)
    deadline = time.monotonic() + 5
    while _children() - children_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {pid for pid in _children() - children_before if not process_gone(pid)}
    assert len(os.listdir("/proc/self/fd")) <= fds_before


def test_shutdown_during_execution_ends_it(loop):
    async def scenario() -> ExecutionResult:
        child = ChildKernel()
        await child.start()
        running = asyncio.ensure_future(child.execute("import time; time.sleep(30)"))
        await asyncio.sleep(0.5)
        await child.shutdown()
        return await asyncio.wait_for(running, 10)

    result = loop.run(scenario())
    assert result.status == "died" and "shut down" in result.note
