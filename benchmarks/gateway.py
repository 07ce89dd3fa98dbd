"""Tools on a Jupyter Kernel Gateway against the local child kernel, measured in one run.

Run standalone: ``python benchmarks/gateway.py [--quick]``. ``run(quick)`` returns
the rows, for aggregation with other benchmarks. Needs ``jupyter_kernel_gateway``
(``pip install jupyter_kernel_gateway``); without it the rows say so and are skipped.

A gateway is started on 127.0.0.1 (same machine: what is measured is the cost of
the REST + WebSocket path and the gateway's proxying, not a network). Both
executors are measured in interleaved rounds (gateway, local, gateway, local, ...)
so load drifts hit both; each row gives the median over rounds and, in its own
row, the minimum.

Rows
----
- ``execute x=1``: seconds per ``execute("x=1")`` on a started kernel,
  :class:`GatewayKernel` against :class:`ChildKernel`. Goal: <= 3x (a WebSocket
  hop through the gateway's tornado loop, against local zmq). The local kernel runs
  at niceness 10 and in the sandbox, the gateway's at the gateway's priority: on a
  loaded machine that favours the gateway.
- ``eval seconds per task``: ``pyvision eval`` of a batch of one-tool tasks at
  concurrency 4 against a loopback model with no latency, kernel starts
  included, ``gateway_url`` set against unset. Goal: <= 2x. Gateway kernels are
  launched Python processes (about 0.8 s of CPU each), local ones are forked from
  the kernel template (0.1 s), which dominates a short run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _table import needs  # noqa: E402

TOKEN = "benchmark-token"


@contextmanager
def _gateway() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runtime = tempfile.mkdtemp(prefix="kg-bench-")
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env["JUPYTER_RUNTIME_DIR"] = runtime
    process = subprocess.Popen(
        [sys.executable, "-m", "kernel_gateway", "--ip=127.0.0.1", f"--port={port}",
         f"--KernelGatewayApp.auth_token={TOKEN}", "--KernelGatewayApp.port_retries=0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(url + "/api/kernelspecs",
                                                 headers={"Authorization": f"token {TOKEN}"})
                urllib.request.urlopen(request, timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the kernel gateway did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        import shutil

        shutil.rmtree(runtime, ignore_errors=True)


async def _execute_rounds(url: str, rounds: int, calls: int) -> tuple[list[float], list[float]]:
    from pyvision_magic.kernel._child import ChildKernel
    from pyvision_magic.kernel._gateway import GatewayKernel

    remote, local = GatewayKernel(url=url, token=TOKEN), ChildKernel()
    await asyncio.gather(remote.start(), local.start())
    ours, base = [], []
    try:
        for kernel in (remote, local):  # warm both
            for _ in range(3):
                await kernel.execute("x=1")
        for _ in range(rounds):
            for kernel, into in ((remote, ours), (local, base)):
                started = time.perf_counter()
                for _ in range(calls):
                    result = await kernel.execute("x=1")
                    assert result.status == "ok", result
                into.append((time.perf_counter() - started) / calls)
    finally:
        await asyncio.gather(remote.shutdown(), local.shutdown())
    return ours, base


def _eval_seconds_per_task(url: str | None, n: int) -> float:
    from PIL import Image

    from pyvision_magic._model import OpenAIModel
    from pyvision_magic.eval.runner import EvalRunner
    from pyvision_magic.eval.tasks import Task
    from pyvision_magic.testing import ChatServer, Reply

    fence = "`" * 3

    def step(body: dict) -> Reply:
        if not any(m["role"] == "assistant" for m in body["messages"]):
            code = "print(image_clue_0.size)"
            return Reply(f"<code>\n{fence}python\n{code}\n{fence}\n</code>")
        return Reply("<answer>1</answer>")

    with tempfile.TemporaryDirectory() as folder, ChatServer(default=step) as server:
        image = Path(folder, "square.png")
        Image.new("RGB", (64, 64), "white").save(image)
        tasks = [Task(id=f"t{i}", question=f"Question {i}?", images=[image], answer="1",
                      answer_type="integer", benchmark="bench") for i in range(n)]
        model = OpenAIModel(base_url=server.base_url, model="bench", api_key_env="PYVISION_BENCH_KEY")
        runner = EvalRunner(tasks, model, Path(folder, "out"), modes=["tools"], concurrency=4,
                            max_turns=3, gateway_url=url)
        started = time.monotonic()
        summary = runner.run()
        elapsed = time.monotonic() - started
    assert summary.ran == n and all(r["correct"] for r in summary.records), summary
    return elapsed / n


def _rows(figure: str, ours: list[float], base: list[float], goal: str) -> list[dict[str, Any]]:
    rows = []
    for label, pick in (("median", statistics.median), ("min", min)):
        a, b = pick(ours), pick(base)
        rows.append({"figure": f"{figure}, {label} of {len(ours)} rounds, gateway vs local kernel",
                     "ours": a, "baseline": b, "ratio": a / b, "goal": goal})
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure and return the rows (see the module docstring)."""
    missing = needs("kernel_gateway", "gateway", "jupyter_kernel_gateway")
    if missing is not None:
        return [missing]
    os.environ.setdefault("PYVISION_BENCH_KEY", "no-key")
    rounds, calls, tasks = (2, 10, 4) if quick else (5, 50, 16)
    saved = os.environ.get("PYVISION_GATEWAY_TOKEN")
    os.environ["PYVISION_GATEWAY_TOKEN"] = TOKEN  # how the eval runner's kernels get it
    try:
        return _measure(rounds, calls, tasks, quick)
    finally:
        if saved is None:
            del os.environ["PYVISION_GATEWAY_TOKEN"]
        else:
            os.environ["PYVISION_GATEWAY_TOKEN"] = saved


def _measure(rounds: int, calls: int, tasks: int, quick: bool) -> list[dict[str, Any]]:
    with _gateway() as url:
        ours, base = asyncio.run(_execute_rounds(url, rounds, calls))
        rows = _rows("execute x=1 (s per call)", ours, base, "<= 3x")
        eval_ours, eval_base = [], []
        for _ in range(max(rounds - 2, 1) if not quick else 1):
            eval_ours.append(_eval_seconds_per_task(url, tasks))
            eval_base.append(_eval_seconds_per_task(None, tasks))
        rows += _rows(f"eval of {tasks} one-tool tasks at concurrency 4 (s per task)",
                      eval_ours, eval_base, "<= 2x")
    return rows


if __name__ == "__main__":
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
