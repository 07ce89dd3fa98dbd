"""Memory: parent growth over 20 sessions (no leak), and the child kernel's size.

Run standalone: ``python benchmarks/memory.py [--quick]``. The sessions replay the
shipped demo (three turns, real tools, images) in one warm ChildKernel, so what
grows is what the parent keeps per session. Growth is the resident set after the
last session minus after the first five (warm-up), per session, against the
parent's resident size after warm-up. The child is measured after its preloads,
against a bare ipykernel started by jupyter_client in the same run.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)


def _rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _sessions(n: int) -> tuple[list[int], int]:
    from pyvision_magic import ChildKernel, ReplayModel, Session, Transcript

    saved = Transcript.load("demo")  # the shipped session, from the installed package
    rss = []
    async with ChildKernel() as kernel:
        for _ in range(n):
            session = Session(saved.question, saved.images, model=ReplayModel(saved), executor=kernel)
            await session._async_run()
            assert session.transcript.answer == "24"
            del session
            gc.collect()
            rss.append(_rss_kib())
        child = _rss_kib(kernel.pid)
    return rss, child


async def _bare_kernel_rss() -> int:
    from jupyter_client import AsyncKernelManager

    folder = tempfile.mkdtemp(prefix="pyvision-bench-")
    km = AsyncKernelManager(transport="ipc", ip=os.path.join(folder, "k"))
    await km.start_kernel()
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        return _rss_kib(km.provisioner.process.pid)
    finally:
        client.stop_channels()
        await km.shutdown_kernel(now=True)
        shutil.rmtree(folder, ignore_errors=True)


def run(quick: bool) -> list[dict]:
    n = 8 if quick else 20
    rss, child = asyncio.run(_sessions(n))
    bare_child = asyncio.run(_bare_kernel_rss())
    warm = rss[min(4, len(rss) - 1)]
    per_session = (rss[-1] - warm) / max(1, len(rss) - 5)
    return [
        {
            "figure": f"parent RSS growth per session over {n} sessions (KiB)",
            "ours": round(per_session, 1),
            "baseline": warm,
            "ratio": round(per_session / warm, 5),
            "goal": "no leak (growth ~0)",
        },
        {
            "figure": "child kernel resident size after preloads (KiB) vs bare ipykernel",
            "ours": child,
            "baseline": bare_child,
            "ratio": round(child / bare_child, 2),
            "goal": "reported",
        },
    ]


if __name__ == "__main__":
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
