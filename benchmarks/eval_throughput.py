"""Throughput of ``pyvision eval``: 64 tasks against a loopback model with 1 s latency.

Run standalone: ``python benchmarks/eval_throughput.py [--quick]``. ``run(quick)``
returns the rows, for aggregation with other benchmarks.

Every task is a typical tool session: the model (the loopback chat server of
``pyvision_magic.testing``, each reply delayed 1 s) writes one tool, sees its
output and answers; so a task takes at least 2 s of model latency. The runner
runs the 64 tasks at concurrency 1, 4 and 16, each in a fresh results folder.

Rows
----
- ``tasks/s at concurrency N``: rate from the start of the run (kernel start-up
  included) against the sequential rate (concurrency 1). Goal at 16: >= 12x.
- ``tasks/s at concurrency N, kernels ready``: the same after the first task
  finished, i.e. without the one-off start of N kernels (forked from the
  kernel template: about 0.1 s of CPU each, on 2 cores).

The concurrency 16 run is the third of the process, so the kernel template and
the ``openai`` package are loaded by then; the sequential run, the baseline,
paid for both.
``--quick`` (a smoke test, a few seconds) runs 3 tasks at concurrency 1 and 8 at 4,
with 0.2 s of model latency.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pyvision_magic._model import OpenAIModel  # noqa: E402
from pyvision_magic.eval.runner import BASELINE_PROMPT, EvalRunner  # noqa: E402
from pyvision_magic.eval.tasks import Task  # noqa: E402
from pyvision_magic.testing import ChatServer, Reply  # noqa: E402

FENCE = "`" * 3
LATENCY = 1.0


def _step(body: dict, latency: float = LATENCY) -> Reply:
    if body["messages"][0]["content"] == BASELINE_PROMPT:
        return Reply("<answer>1</answer>", delay=latency)
    if not any(m["role"] == "assistant" for m in body["messages"]):
        code = "import numpy as np\nprint(np.asarray(image_clue_0).mean())"
        return Reply(f"Measuring.\n<code>\n{FENCE}python\n{code}\n{FENCE}\n</code>", delay=latency)
    return Reply("<answer>1</answer>", delay=latency)


def _tasks(folder: Path, n: int) -> list[Task]:
    from PIL import Image

    image = folder / "square.png"
    Image.new("RGB", (64, 64), "white").save(image)
    return [Task(id=f"task-{i:03d}", question=f"Question {i}: how many squares?", images=[image],
                 answer="1", answer_type="integer", benchmark="bench") for i in range(n)]


class _Clock:
    """Progress hook that notes when the first and last tasks finished."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def start(self, total: int, skipped: int) -> None:
        self.begun = time.monotonic()

    def update(self, record: dict) -> None:
        self.times.append(time.monotonic())

    def close(self) -> None:
        pass


def _measure(server: ChatServer, tasks: list[Task], concurrency: int) -> tuple[float, float]:
    """(tasks/s from start, tasks/s once the first task finished)."""
    model = OpenAIModel(base_url=server.base_url, model="bench", api_key_env="PYVISION_BENCH_KEY")
    clock = _Clock()
    with tempfile.TemporaryDirectory() as out:
        runner = EvalRunner(tasks, model, out, modes=["tools"], progress=clock, concurrency=concurrency,
                            max_turns=4)
        started = time.monotonic()
        summary = runner.run()
        elapsed = time.monotonic() - started
    assert summary.ran == len(tasks) and all(r["correct"] for r in summary.records), summary
    ready = clock.times[-1] - clock.times[0]
    return len(tasks) / elapsed, (len(tasks) - 1) / ready if ready > 0 else float("inf")


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure and return the rows (see the module docstring)."""
    n_seq = 3 if quick else 64
    n_par = 8 if quick else 64
    latency = 0.2 if quick else LATENCY
    rows = []
    with tempfile.TemporaryDirectory() as folder, \
            ChatServer(default=lambda body: _step(body, latency)) as server:
        sequential, sequential_ready = _measure(server, _tasks(Path(folder), n_seq), 1)
        for concurrency in (4,) if quick else (4, 16):
            total, ready = _measure(server, _tasks(Path(folder), n_par), concurrency)
            goal = ">= 12x" if concurrency == 16 else f"<= {concurrency}x"
            rows.append({"figure": f"tasks/s at concurrency {concurrency} (start-up included)",
                         "ours": total, "baseline": sequential, "ratio": total / sequential, "goal": goal})
            rows.append({"figure": f"tasks/s at concurrency {concurrency}, kernels ready",
                         "ours": ready, "baseline": sequential_ready, "ratio": ready / sequential_ready,
                         "goal": goal})
    return rows


if __name__ == "__main__":
    from _table import standalone

    os.environ.setdefault("PYVISION_BENCH_KEY", "no-key")
    raise SystemExit(standalone(run, __doc__))
