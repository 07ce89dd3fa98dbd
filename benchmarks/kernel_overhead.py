"""Overhead of ChildKernel over a bare jupyter_client round trip, and the pool's gain.

Run standalone: ``python benchmarks/kernel_overhead.py [--quick]``. ``run(quick)``
returns the rows, for aggregation with other benchmarks.

Rows
----
- ``execute x=1``: mean seconds per ``ChildKernel.execute("x=1")`` against the
  same round trip (execute request, iopub until idle, shell reply) done with
  ``AsyncKernelClient`` on an identical kernel started in this run. Goal: <= 2x.
- ``wait for a kernel``: seconds a new session waits for a ready kernel with a
  warm :class:`KernelPool` against a cold ``ChildKernel.start()``. Goal: the pool
  under 50 ms.
- ``kernel start CPU seconds``: CPU time (user + system, from ``/proc/<pid>/stat``)
  the kernel process spent until :meth:`ChildKernel.start` returned, against a
  bare ipykernel until ``wait_for_ready``. What a start costs when many kernels
  start at once on few cores (the eval runner). Kernels are forked from a
  template process (``ChildKernel.fork``, the default on Linux) that is already
  running here; the ``launched`` row starts them the usual way
  (``fork=False``). Goal: <= 1.3x. Linux only.
- ``kernel start wall seconds``: a cold ``ChildKernel.start()`` against a bare
  ipykernel start to ready (median), forked and launched. Goal: <= 1.3x.
- ``first kernel of a new process``: wall seconds of the first
  ``ChildKernel.start()`` in a fresh Python process, which starts the template
  too, against a bare ipykernel start. Goal: <= 1.3x.
- ``sandbox: start`` and ``sandbox: execute x=1``: a ``ChildKernel(sandbox=True)``
  (forked by a template inside the sandbox) against ``sandbox=False`` (forked
  outside it, the start this replaces), measured in interleaved rounds (A, B, A,
  B) so load drifts hit both: median cold start to ready, and median seconds per
  call. Goal: both <= 1.2x. Left out when bwrap is not installed. The rows above
  use the default, which is the sandbox where bwrap works.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jupyter_client import AsyncKernelManager  # noqa: E402

from pyvision_magic.kernel._child import ChildKernel  # noqa: E402
from pyvision_magic.kernel._connection import THIS_INTERPRETER, ThisInterpreterSpecs  # noqa: E402
from pyvision_magic.kernel._pool import KernelPool  # noqa: E402


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``; else NaN)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # Fields 14 and 15 of stat(5) (utime, stime), counted after the ")" of the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bare_manager(folder: str) -> AsyncKernelManager:
    return AsyncKernelManager(
        kernel_name=THIS_INTERPRETER,
        kernel_spec_manager=ThisInterpreterSpecs(),
        transport="ipc",
        ip=os.path.join(folder, "k"),
        connection_file=os.path.join(folder, "k.json"),
    )


async def _bare_start(repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) of a bare ipykernel start to ready."""
    walls, cpus = [], []
    for _ in range(repeats):
        folder = tempfile.mkdtemp(prefix="pyvision-bench-")
        km = _bare_manager(folder)
        started = time.perf_counter()
        await km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
        client = km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
            walls.append(time.perf_counter() - started)
            cpus.append(_cpu_seconds(km.provisioner.pid))  # type: ignore[union-attr]
        finally:
            client.stop_channels()
            await km.shutdown_kernel(now=True)
            shutil.rmtree(folder, ignore_errors=True)
    return statistics.median(walls), statistics.median(cpus)


async def _our_start(repeats: int, **settings: Any) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) of ``ChildKernel.start()``."""
    walls, cpus = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        kernel = ChildKernel(**settings)
        await kernel.start()
        walls.append(time.perf_counter() - started)
        cpus.append(_cpu_seconds(kernel.pid))
        await kernel.shutdown()
    return statistics.median(walls), statistics.median(cpus)


async def _start_rows(quick: bool) -> list[dict[str, Any]]:
    if not os.path.exists("/proc/self/stat"):
        return []
    repeats = 2 if quick else 7
    await _bare_start(1)  # warm the file cache for both
    await _our_start(1)
    samples: dict[str, list[tuple[float, float]]] = {"bare": [], "forked": [], "launched": []}
    for _ in range(repeats):  # interleaved rounds: load drifts hit every side alike
        samples["bare"].append(await _bare_start(1))
        samples["forked"].append(await _our_start(1))
        samples["launched"].append(await _our_start(1, fork=False))

    def medians(name: str) -> tuple[float, float]:
        return (statistics.median(w for w, _ in samples[name]),
                statistics.median(c for _, c in samples[name]))

    bare_wall, bare_cpu = medians("bare")
    our_wall, our_cpu = medians("forked")
    launched_wall, launched_cpu = medians("launched")
    first = statistics.median([await asyncio.to_thread(_first_start_in_new_process)
                               for _ in range(1 if quick else 3)])
    rows = []
    for label, wall, cpu in (("forked", our_wall, our_cpu), ("launched", launched_wall, launched_cpu)):
        rows += [
            {"figure": f"kernel start CPU seconds vs bare ipykernel ({label})", "ours": cpu,
             "baseline": bare_cpu, "ratio": cpu / bare_cpu, "goal": "<= 1.3x"},
            {"figure": f"kernel start wall seconds vs bare ipykernel ({label})", "ours": wall,
             "baseline": bare_wall, "ratio": wall / bare_wall, "goal": "<= 1.3x"},
        ]
    rows.append({"figure": "first kernel of a new process, wall seconds (template start included)",
                 "ours": first, "baseline": bare_wall, "ratio": first / bare_wall, "goal": "<= 1.3x"})
    return rows


_FIRST_START = """
import asyncio, time
from pyvision_magic.kernel._child import ChildKernel
async def main():
    kernel = ChildKernel()
    started = time.perf_counter()
    await kernel.start()
    print(time.perf_counter() - started)
    await kernel.shutdown()
asyncio.run(main())
"""


def _first_start_in_new_process() -> float:
    """Wall seconds of the first ChildKernel start in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", _FIRST_START], capture_output=True, text=True,
                          check=True, cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    return float(done.stdout.strip().splitlines()[-1])


async def _kernel_wait(repeats: int) -> tuple[float, float]:
    cold, _ = await _our_start(repeats)
    warm = []
    async with KernelPool(size=1) as pool:
        for _ in range(repeats):
            while pool.ready < 1:  # a session arriving after the pool refilled
                await asyncio.sleep(0.05)
            started = time.perf_counter()
            kernel = await pool.acquire()
            warm.append(time.perf_counter() - started)
            await kernel.shutdown()
    return statistics.median(warm), cold


async def _sandbox_rows(quick: bool) -> list[dict[str, Any]]:
    if shutil.which("bwrap") is None:
        return []
    repeats, n = (3, 40) if quick else (9, 200)
    # Templates up and the one-time bwrap check done: neither is part of a start.
    await _our_start(1, sandbox=True)
    await _our_start(1, sandbox=False)
    boxed_starts, plain_starts = [], []
    for _ in range(repeats):  # interleaved, so load drifts hit both alike
        boxed_starts.append((await _our_start(1, sandbox=True))[0])
        plain_starts.append((await _our_start(1, sandbox=False))[0])
    boxed_times, plain_times = [], []
    async with ChildKernel(sandbox=True) as boxed, ChildKernel(sandbox=False) as plain:
        for kernel in (boxed, plain):
            for _ in range(5):
                await kernel.execute("x=1")
        for _ in range(n):
            for kernel, times in ((boxed, boxed_times), (plain, plain_times)):
                started = time.perf_counter()
                await kernel.execute("x=1")
                times.append(time.perf_counter() - started)
    boxed_start, plain_start = statistics.median(boxed_starts), statistics.median(plain_starts)
    boxed, plain = statistics.median(boxed_times), statistics.median(plain_times)
    return [
        {"figure": "sandbox: kernel start (s), forked in the sandbox vs forked outside it",
         "ours": boxed_start, "baseline": plain_start, "ratio": boxed_start / plain_start,
         "goal": "<= 1.2x"},
        {"figure": "sandbox: execute x=1 (s per call, median), sandboxed vs outside",
         "ours": boxed, "baseline": plain, "ratio": boxed / plain, "goal": "<= 1.2x"},
    ]


async def _interleaved_executes(n: int) -> tuple[list[float], list[float]]:
    """``x=1`` round trips, ours and a bare jupyter_client's, alternating call by call."""
    from _bare import bare_execute

    folder = tempfile.mkdtemp(prefix="pyvision-bench-")
    km = _bare_manager(folder)
    await km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)

        async def bare() -> float:
            return await bare_execute(client)

        async with ChildKernel() as kernel:
            async def ours() -> float:
                started = time.perf_counter()
                result = await kernel.execute("x=1")
                assert result.status == "ok", result
                return time.perf_counter() - started

            for _ in range(5):  # the first executions warm up caches on both sides
                await bare()
                await ours()
            mine, theirs = [], []
            for _ in range(n):
                theirs.append(await bare())
                mine.append(await ours())
            return mine, theirs
    finally:
        client.stop_channels()
        await km.shutdown_kernel(now=True)
        shutil.rmtree(folder, ignore_errors=True)


async def _run(quick: bool) -> list[dict[str, Any]]:
    n = 50 if quick else 300
    ours, bare = await _interleaved_executes(n)
    # Ratios of medians over blocks of 25 alternating calls: min and median across blocks.
    block = 25
    ratios = [statistics.median(ours[i:i + block]) / statistics.median(bare[i:i + block])
              for i in range(0, n - block + 1, block)]
    warm, cold = await _kernel_wait(1 if quick else 3)
    return [
        {"figure": f"execute x=1 (s per call, median; calls alternate with the bare client's; "
                   f"ratio over {len(ratios)} blocks of {block}: min {min(ratios):.2f}, "
                   f"median {statistics.median(ratios):.2f})",
         "ours": statistics.median(ours), "baseline": statistics.median(bare),
         "ratio": statistics.median(ratios), "goal": "<= 2x"},
        {"figure": "wait for a kernel (s): pool vs cold start", "ours": warm, "baseline": cold,
         "ratio": warm / cold, "goal": "pool < 0.05 s"},
        *await _start_rows(quick),
        *await _sandbox_rows(quick),
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure and return the rows (see the module docstring)."""
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
