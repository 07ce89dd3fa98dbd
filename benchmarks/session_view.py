"""What the live session view (one ``SessionWidget`` per session) costs.

Run standalone: ``python benchmarks/session_view.py [--quick]``; ``run(quick)``
returns the rows for ``python -m benchmarks``.

1. **Per-turn view overhead.** The same scripted session of 10 tools (each
   makes a photo-like 1024x1024 image with numpy, shows it with
   ``display(Image.fromarray(...))`` and prints ~400 characters, then the model
   answers) runs in one warm ``ChildKernel`` against the loopback chat server,
   with a ``SessionWidget`` attached (built and ``attach``-ed inside the timed
   part) and without, interleaved A,B,A,B. In a plain process ipywidgets would
   give the widget a comm that drops everything, so a counting comm is
   installed instead: it ``json.dumps`` every message, as the kernel's
   session would, and counts messages and bytes (buffers included). "ours" is
   the median over rounds of (time with - time without) / tool turns, in ms
   (the answer turn is not counted, so this errs high), with the minimum in
   the figure's text; the baseline is the median time per tool turn without
   the view. Every tool image is new to the
   process, as in real use (thumbnails are cached by content). A second
   row times the widget's own event handlers directly (CPU time of the
   thread running them, the comm's ``json.dumps`` included, nested calls
   counted once): less noisy than a difference of two wall times.
2. **Comm messages per streamed reply.** One reply of ~300 tokens (~1,200
   characters: prose, then a ~40-line tool) streamed in 8-character chunks
   over ~4 s (~75 tokens/s), then the answer. "ours" is what the widget sends
   (state updates and custom messages) from the turn's start to the end of
   its ``code`` event; the baseline is the number of content chunks that
   arrived, what a view redrawing on every delta would send.
3. **Cell return after the final reply.** A real notebook under nbclient
   (``record_timing`` on) runs three ``%%pyvision -i photo.png`` cells, each
   between empty cells, whose scripted model writes 10 tools with a 1024x1024
   image each, then answers. "ours" is the median over the three of the cell's
   ``shell.execute_reply`` time minus the time the chat server (in this
   process) finished that session's final reply (the minimum is in the text),
   its monotonic clock turned into wall time with an offset taken here. Both
   clocks are this
   machine's wall clock (the kernel stamps its messages with it), so the
   difference is meaningful. The baseline is the round trip of an
   effectively empty cell (``pass``; nbclient skips truly empty ones) in the
   same notebook: its ``shell.execute_reply`` minus its
   ``iopub.execute_input``, median of several. If the widget's browser
   bundle is not built the magic shows its static copy instead of the widget;
   the row's figure says which it measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)

from pyvision_magic.testing import code_reply  # noqa: E402

#: A tool as the scripted model writes it: a photo-like image and ~400 characters.
#: Every image is new (``seed``): the view must not find it in a cache of an earlier session.
PHOTO_TOOL = """\
import numpy as np
from PIL import Image
rng = np.random.default_rng({seed})
y, x = np.mgrid[0:1024, 0:1024]
base = np.stack([x / 4, y / 4, (x + y) / 8], -1)
display(Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)))
print("step {i}: the left half is brighter than the right; the noise looks even. " * 5)"""


_seeds = itertools.count(1000)


def _photo_tools(tools: int) -> list[str]:
    """The replies of ``tools`` photo tools, each image never made before in this process."""
    return [code_reply(PHOTO_TOOL.format(i=i, seed=next(_seeds)), f"Step {i}: let me look closer.")
            for i in range(tools)]


def _photo_png(width: int, height: int, seed: int = 0) -> bytes:
    """A photo-like PNG: gradients plus sensor noise (compresses badly, like a photo)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# -- what the widget sends ----------------------------------------------------------


class _Traffic:
    """Messages and bytes every counting comm has sent."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def snapshot(self) -> tuple[int, int]:
        return self.messages, self.bytes


class CountingComm:
    """Enough of a comm for ipywidgets: serializes each message as a kernel would and counts it."""

    traffic = _Traffic()

    def __init__(self, *args, data=None, metadata=None, buffers=None, **kwargs) -> None:
        self.comm_id = kwargs.get("comm_id") or uuid.uuid4().hex
        self.kernel = object()  # ipywidgets sends only through a comm with a kernel
        self._msg_callback = None
        if data is not None:  # the comm_open, with the widget's first state
            self._count(data, buffers)

    def _count(self, data, buffers) -> None:
        size = len(json.dumps(data).encode())
        size += sum(memoryview(b).nbytes for b in buffers or [])
        self.traffic.messages += 1
        self.traffic.bytes += size

    def open(self, data=None, metadata=None, buffers=None, **kwargs) -> None:
        if data is not None:
            self._count(data, buffers)

    def send(self, data=None, metadata=None, buffers=None) -> None:
        self._count(data, buffers)

    def close(self, *args, **kwargs) -> None:
        pass

    def on_msg(self, callback) -> None:
        self._msg_callback = callback

    def on_close(self, callback) -> None:
        pass

    def handle_msg(self, msg) -> None:
        if self._msg_callback:
            self._msg_callback(msg)


@contextlib.contextmanager
def counting_comms():
    """``comm.create_comm`` makes `CountingComm` objects while inside."""
    import comm

    old = comm.create_comm
    comm.create_comm = lambda *a, **k: CountingComm(*a, **k)
    try:
        yield CountingComm.traffic
    finally:
        comm.create_comm = old


class WorkerClock:
    """Adds up the CPU time of the view's worker thread (image reduction, highlighting)."""

    def __init__(self) -> None:
        self.cpu = 0.0

    @contextlib.contextmanager
    def installed(self):
        from pyvision_magic.ui import _widget

        original = _widget._quietly

        def timed(function, *args):
            started = time.thread_time()
            try:
                return original(function, *args)
            finally:
                self.cpu += time.thread_time() - started

        _widget._quietly = timed
        try:
            yield self
        finally:
            _widget._quietly = original


class HandlerClock:
    """Wraps a widget's event handlers and adds up the CPU time spent in them.

    ``_flush_stream`` is wrapped too: the widget also calls it from a timer.
    Nested calls (a handler flushing a stream) are counted once. The work the
    handlers hand to the view's worker thread is counted by :class:`WorkerClock`.
    """

    HANDLERS = ("turn_start", "text_delta", "code", "outputs", "answer_given", "status",
                "_flush_stream")

    def __init__(self, widget) -> None:
        self.cpu = 0.0
        self.calls = 0
        self._depth = 0
        for name in self.HANDLERS:
            setattr(widget, name, self._wrap(getattr(widget, name)))

    def _wrap(self, method):
        def timed(*args, **kwargs):
            if self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            started = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.cpu += time.thread_time() - started
                self.calls += 1
                self._depth -= 1

        return timed


# -- figure 1: per-turn overhead ----------------------------------------------------


async def _photo_session(server, kernel, image, tools: int, view: bool) -> dict:
    """One session of ``tools`` photo tools then the answer; wall time and the view's costs."""
    from pyvision_magic import OpenAIModel, Session
    from pyvision_magic.ui import SessionWidget

    server.script = _photo_tools(tools) + ["<answer>done</answer>"]
    model = OpenAIModel(base_url=server.base_url, model="bench")
    session = Session("What is in the picture?", [image], model=model, executor=kernel,
                      max_turns=tools + 1)
    traffic = CountingComm.traffic
    before = traffic.snapshot()
    widget = clock = None
    worker = WorkerClock()
    started = time.perf_counter()
    with worker.installed():
        if view:
            widget = SessionWidget(session.transcript.question, [image], model.name)
            clock = HandlerClock(widget)
            widget.attach(session)
        await session._async_run()
        if widget is not None and widget._outputs_tail is not None:
            await widget._outputs_tail  # the last images, reduced off the loop
        elapsed = time.perf_counter() - started
    from pyvision_magic.ui._widget import _WORKER

    await asyncio.get_running_loop().run_in_executor(_WORKER, lambda: None)  # drained
    await model.aclose()
    if widget is not None:
        widget.close()
    assert session.transcript.status == "answered", session.transcript.error
    assert all(t.exec_status == "ok" for t in session.transcript.turns[:-1]), \
        [t.exec_status for t in session.transcript.turns]
    return {"elapsed": elapsed, "cpu": clock.cpu if clock else 0.0, "worker": worker.cpu,
            "messages": traffic.messages - before[0], "bytes": traffic.bytes - before[1]}


async def _per_turn_overhead(server, kernel, quick: bool) -> list[dict]:
    from pyvision_magic import load_image

    # Nine rounds: on a loaded 2-core machine one round's difference swings by +-100 ms.
    tools, rounds = (4, 2) if quick else (10, 9)
    image = load_image(_photo_png(1024, 768, seed=1), name="photo.png")
    # Warm up imports, caches and the kernel's numpy, with and without the view.
    await _photo_session(server, kernel, image, 2, view=True)
    await _photo_session(server, kernel, image, 2, view=False)
    with_view, without = [], []
    for _ in range(rounds):  # interleaved: A, B, A, B
        with_view.append(await _photo_session(server, kernel, image, tools, view=True))
        without.append(await _photo_session(server, kernel, image, tools, view=False))
    differences = [(a["elapsed"] - b["elapsed"]) / tools * 1000 for a, b in zip(with_view, without)]
    added = statistics.median(differences)
    bare = statistics.median(b["elapsed"] / tools * 1000 for b in without)
    viewed = statistics.median(a["elapsed"] / tools * 1000 for a in with_view)
    cpu = statistics.median(a["cpu"] / tools * 1000 for a in with_view)
    worker = statistics.median(a["worker"] / tools * 1000 for a in with_view)
    messages = statistics.median(a["messages"] for a in with_view)
    sent = statistics.median(a["bytes"] for a in with_view)
    goal = "<= 50 ms" if not quick else "(quick: fewer turns)"
    return [
        {
            "figure": f"per-turn time the session view adds (ms), {tools} tools with a "
                      f"1024x1024 image each, median of {rounds} A/B rounds (min "
                      f"{min(differences):.1f} ms; medians per turn {viewed:.1f} ms with the "
                      f"view, {bare:.1f} ms without)",
            "ours": round(added, 2),
            "baseline": round(bare, 2),
            "ratio": round(max(added, 0.0) / bare, 4) if bare else None,
            "goal": goal,
        },
        {
            "figure": f"view CPU per turn on the session's loop (ms); plus {worker:.1f} ms in "
                      f"its worker thread, which the session does not wait for; the widget "
                      f"sent {messages:.0f} messages, {sent / 1e6:.2f} MB per session",
            "ours": round(cpu, 2),
            "baseline": round(bare, 2),
            "ratio": round(cpu / bare, 4) if bare else None,
            "goal": goal,
        },
    ]


# -- figure 2: messages per streamed reply ------------------------------------------


def _long_reply() -> str:
    """~1,200 characters (~300 tokens): some prose, then a tool of ~40 lines."""
    prose = ("The picture is a smooth gradient under fine noise. To tell whether the "
             "bright band on the left is real, I will measure the mean brightness of "
             "narrow vertical strips.")
    lines = ["a = np.asarray(image_clue_0)"]
    lines += [f"s{k:02d} = a[:, {k}::38].mean()" for k in range(38)]
    lines += ["print([round(v, 1) for v in (s00, s10, s20, s30, s37)])"]
    return code_reply("\n".join(lines), prose)


async def _messages_per_reply(server, kernel) -> dict:
    from pyvision_magic import OpenAIModel, Session, load_image
    from pyvision_magic.testing import Reply
    from pyvision_magic.ui import SessionWidget

    text = _long_reply()
    # The server stops the reply at the stop sequence "</code>", as a real endpoint does.
    sent_text = text[: text.index("</code>")]
    chunks = math.ceil(len(sent_text) / server.chunk_chars)
    server.script = [Reply(text, chunk_delay=4.0 / chunks), "<answer>done</answer>"]
    image = load_image(_photo_png(320, 240, seed=2), name="photo.png")
    model = OpenAIModel(base_url=server.base_url, model="bench")
    session = Session("Is the left band real?", [image], model=model, executor=kernel, max_turns=3)
    traffic = CountingComm.traffic
    marks: dict[str, tuple[int, int]] = {}
    deltas: list[str] = []
    # Observers fire in the order they were added: these two bracket the widget's own.
    session.on_turn_start(lambda turn: marks.setdefault("start", traffic.snapshot())
                          if turn.index == 0 else None)
    session.on_text_delta(lambda turn, delta: deltas.append(delta) if turn.index == 0 else None)
    widget = SessionWidget(session.transcript.question, [image], model.name)
    widget.attach(session)
    session.on_code(lambda turn: marks.setdefault("code", traffic.snapshot())
                    if turn.index == 0 else None)
    started = time.perf_counter()
    await session._async_run()
    streamed = session.transcript.turns[0].model_seconds
    elapsed = time.perf_counter() - started
    await model.aclose()
    widget.close()
    assert session.transcript.status == "answered", session.transcript.error
    assert "".join(deltas) == sent_text, "the widget saw the whole reply"
    messages = marks["code"][0] - marks["start"][0]
    sent = marks["code"][1] - marks["start"][1]
    return {
        "figure": f"comm messages per streamed reply ({len(sent_text)} chars, "
                  f"~{len(sent_text) // 4} tokens, {len(deltas)} chunks over {streamed:.1f} s; "
                  f"the widget sent {sent / 1000:.1f} kB; session {elapsed:.1f} s)",
        "ours": messages,
        "baseline": len(deltas),
        "ratio": round(messages / len(deltas), 4),
        "goal": "<= 15",
    }


async def _in_process(quick: bool) -> list[dict]:
    from pyvision_magic import ChildKernel
    from pyvision_magic.testing import ChatServer

    with counting_comms(), ChatServer() as server:
        async with ChildKernel() as kernel:
            await kernel.start()
            rows = await _per_turn_overhead(server, kernel, quick)
            rows.append(await _messages_per_reply(server, kernel))
    return rows


# -- figure 3: cell return in a real notebook ---------------------------------------


def _iso(stamp: str) -> float:
    """Seconds since the epoch of one of nbclient's ISO timestamps."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _cell_return(quick: bool) -> dict:
    from _table import needs

    skipped = needs("nbclient", "cell return after the final reply")
    if skipped:
        return skipped
    import nbformat
    from nbclient import NotebookClient

    from pyvision_magic.testing import ChatServer
    from pyvision_magic.ui import bundle_problem

    tools, empties, sessions = (3, 3, 1) if quick else (10, 5, 3)
    with tempfile.TemporaryDirectory() as folder, ChatServer() as server:
        folder = Path(folder)
        (folder / "photo.png").write_bytes(_photo_png(2048, 1536, seed=3))
        server.script = [reply for _ in range(sessions) for reply in
                         _photo_tools(tools) + ["It is a gradient.\n<answer>42</answer>"]]
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(f"%load_ext pyvision_magic\n"
                                              f"%config PyVision.base_url = {server.base_url!r}")]
        session_cells = []
        for _ in range(sessions):  # interleaved: empty cells, a session, empty cells, ...
            nb.cells += [nbformat.v4.new_code_cell("pass") for _ in range(empties)]
            session_cells.append(nbformat.v4.new_code_cell(
                f"%%pyvision -i photo.png -o result --max-turns {tools + 1}\n"
                "What is in the picture?"))
            nb.cells += [session_cells[-1], nbformat.v4.new_code_cell(
                "assert result.answer == '42', (result.status, result.error)")]
        nb.cells += [nbformat.v4.new_code_cell("pass") for _ in range(empties)]
        old = {name: os.environ.get(name) for name in ("PYTHONPATH", "OPENAI_API_KEY")}
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [os.path.abspath(ROOT), os.environ.get("PYTHONPATH")]))
        os.environ["OPENAI_API_KEY"] = "bench"  # the loopback server takes any key
        try:
            NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=True,
                           resources={"metadata": {"path": str(folder)}}).execute()
        finally:
            for name, value in old.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        offset = time.time() - time.monotonic()  # monotonic -> wall clock, this process
        assert server.remaining_steps == 0 and len(server.chat_requests) == sessions * (tools + 1)
        finals = server.chat_requests[tools::tools + 1]  # each session's answer
        assert all(final.finished_at is not None for final in finals)
        shown = ("widget" if all(any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                                     for o in cell.outputs) for cell in session_cells)
                 else "static copy")
    returns = [_iso(cell.metadata.execution["shell.execute_reply"]) - (final.finished_at + offset)
               for cell, final in zip(session_cells, finals)]
    ours = statistics.median(returns)
    trips = [_iso(c.metadata.execution["shell.execute_reply"])
             - _iso(c.metadata.execution["iopub.execute_input"])
             for c in nb.cells if c.source == "pass"]
    bare = statistics.median(trips)
    problem = "" if bundle_problem() is None else ", front end not built"
    return {
        "figure": f"cell return after the final reply (s), %%pyvision cell of {tools} tools "
                  f"with 1024x1024 images ({shown}{problem}), nbclient, median of {sessions} "
                  f"sessions between empty cells (min {min(returns):.4f} s)",
        "ours": round(ours, 4),
        "baseline": round(bare, 4),
        "ratio": round(ours / bare, 2) if bare > 0 else None,
        "goal": "<= 0.2 s" if not quick else "(quick: fewer turns)",
    }


def run(quick: bool) -> list[dict]:
    rows = asyncio.run(_in_process(quick))
    rows.append(_cell_return(quick))
    return rows


if __name__ == "__main__":
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
