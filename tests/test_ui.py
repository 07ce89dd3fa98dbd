"""The session widget without a browser: its state from events, its messages, its actions.

A recording comm stands in for the browser (as ipywidgets' own tests do), so
every state update and custom message the widget sends is counted and read.
The later tests run real sessions (loopback chat server, real child kernels)
on the magic's private loop and trigger Run, Fork, Stop, Copy and edits as the
browser's messages would.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import re
import time

import pytest

from conftest import code_reply
from pyvision_magic._records import Output, Usage
from pyvision_magic._transcript import Transcript, Turn
from pyvision_magic.ui import SessionWidget


class RecordingComm:
    """Enough of a comm for ipywidgets: records what would go to the browser."""

    def __init__(self, *args, **kwargs):
        self.sent: list[tuple[dict, list]] = []
        self.times: list[float] = []  # when each message went (time.monotonic())
        self.comm_id = kwargs.get("comm_id") or f"comm-{id(self)}"
        self.kernel = object()  # ipywidgets sends only through a comm with a kernel
        self._msg_callback = None

    def open(self, *args, **kwargs):
        pass

    def send(self, data=None, metadata=None, buffers=None):
        self.sent.append((data, list(buffers or [])))
        self.times.append(time.monotonic())

    def close(self, *args, **kwargs):
        pass

    def on_msg(self, callback):
        self._msg_callback = callback

    def on_close(self, callback):
        pass

    def handle_msg(self, msg):
        if self._msg_callback:
            self._msg_callback(msg)


@pytest.fixture(autouse=True)
def recording_comms(monkeypatch):
    import comm

    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: RecordingComm(*a, **k))


def _custom(widget) -> list[dict]:
    return [data["content"] for data, _ in widget.comm.sent if data.get("method") == "custom"]


def _media(widget) -> dict[str, bytes]:
    """The images the widget sent, by key (each ``media`` message carries buffers)."""
    found = {}
    for data, buffers in widget.comm.sent:
        content = data.get("content") or {}
        if data.get("method") == "custom" and content.get("type") == "media":
            for item, buffer in zip(content["items"], buffers):
                found[item["key"]] = bytes(buffer)
    return found


def _updates(widget) -> list[dict]:
    return [data["state"] for data, _ in widget.comm.sent if data.get("method") == "update"]


def _png(color: str = "red", size=(40, 30)) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture
def images(image_path):
    from pyvision_magic import load_image

    return [load_image(image_path)]


def test_a_widget_built_from_events_holds_every_part_of_a_session(images):
    view = SessionWidget("How many squares?", images, "test-model")
    t = Transcript(question="How many squares?", model="test-model", images=images)
    view.attach(type("S", (), {"transcript": t, **{f"on_{e}": lambda self, cb: None for e in
                                                  ("turn_start", "text_delta", "code", "outputs",
                                                   "answer", "status")}})())
    view.status(t)
    assert view.running and view.state["status"] == "running"
    (thumb,) = view.header["images"]
    assert thumb["name"] == "squares.png" or thumb["name"]
    view._on_msg(view, {"action": "hello"}, [])  # the browser drew the view
    media = _media(view)
    assert media[thumb["key"]][:4] == b"\x89PNG", "a small input is shown as it is"

    turn = Turn(index=0, text="")
    t.turns.append(turn)
    view.turn_start(turn)
    assert view.turns[0]["streaming"] and view.state["phase"] == "model"
    for piece in ["I will **count** ", "the squares.\n", "<code>\n```python\nprint(2)\n```\n"]:
        turn.text += piece
        view.text_delta(turn, piece)
    turn.code = "print(2)"
    view.code(turn)
    shown = view.turns[0]
    assert shown["prose"] == "I will **count** the squares.", "the code goes to the editor"
    assert shown["code"] == "print(2)" and not shown["streaming"]
    assert view.state["phase"] == "tool" and view.state["phase_turn"] == 0

    turn.outputs = [
        Output(kind="text", stream="stdout", text="2\n"),
        Output(kind="image", mime="image/png", data=_png(), width=40, height=30,
               variable="image_clue_1"),
        Output(kind="error", ename="ValueError", evalue="bad",
               text="\x1b[31mTraceback\x1b[0m\nCell In[7], line 3\nValueError: bad"),
    ]
    turn.exec_status, turn.exec_seconds = "error", 0.25
    view.outputs(turn)
    stdout, image, error = view.turns[0]["outputs"]
    assert stdout == {"kind": "stream", "name": "stdout", "text": "2\n"}
    assert image["variable"] == "image_clue_1" and (image["width"], image["height"]) == (40, 30)
    assert image["key"] in _media(view), "an image goes to the browser before its turn"
    assert all("media" not in u for u in _updates(view)), "images are messages, not state"
    assert error["traceback"] == "Traceback\ntool code, line 3\nValueError: bad", \
        "no colours and no hidden cell number"
    assert view.turns[0]["exec_status"] == "error" and view.turns[0]["seconds"] == 0.25

    answer = Turn(index=1, text="<answer>2</answer>", answer="2")
    t.turns.append(answer)
    view.turn_start(answer)
    t.answer, t.status, t.usage = "2", "answered", Usage(10, 5, 15)
    view.answer_given(t)
    assert view.state["answer"] == "2", "the answer is shown as soon as it exists"
    view.status(t)
    assert view.state["status"] == "answered" and view.state["usage"]["total"] == 15
    assert view.state["phase"] == "idle" and not view.running
    assert [x["index"] for x in view.turns] == [0, 1]
    assert view.turns[1]["answer"] == "2" and view.turns[0]["answer"] is None, \
        "a turn that only answers is summed up by its answer"


def _follow(view, t):
    view._transcript = t


def test_the_token_count_follows_each_reply_not_only_the_end(images):
    view = SessionWidget("q", images, "m")
    t = Transcript(question="q", model="m", images=images)
    _follow(view, t)
    view.status(t)
    turn = Turn(index=0, text="<code>print(1)</code>", code="print(1)")
    t.turns.append(turn)
    view.turn_start(turn)
    # The session records the reply's usage before it tells the views about the code.
    turn.usage = t.usage = Usage(1200, 30, 1230, cached_tokens=1024)
    view.code(turn)
    assert view.state["usage"] == {"prompt": 1200, "completion": 30, "total": 1230,
                                   "cached": 1024}
    assert view.state["status"] == "running"
    turn.exec_status = "ok"
    view.outputs(turn)
    assert view.state["usage"]["total"] == 1230
    answer = Turn(index=1, text="<answer>1</answer>", answer="1")
    t.turns.append(answer)
    view.turn_start(answer)
    answer.usage = Usage(1300, 5, 1305, cached_tokens=1152)
    t.usage = t.usage + answer.usage
    t.answer = "1"
    view.answer_given(t)
    assert view.state["usage"]["total"] == 2535 and view.state["usage"]["cached"] == 2176


def test_streamed_text_goes_as_small_appends_at_most_ten_a_second(images):
    view = SessionWidget("q", images, "m")
    t = Transcript(question="q", model="m", images=images)
    _follow(view, t)
    view.status(t)
    turn = Turn(index=0, text="")
    t.turns.append(turn)

    async def stream():
        words = ["Let me ", "look ", "closely. " * 20, "\n<code>\n```python\n"]
        words += [f"x{i} = {i}\n" for i in range(60)] + ["```\n</code>"]
        started = time.monotonic()
        for word in words:
            turn.text += word
            view.text_delta(turn, word)
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.2)  # the last pieces go out on a timer
        return time.monotonic() - started

    view.turn_start(turn)
    before = len(view.comm.sent)
    seconds = asyncio.run(stream())
    sent = list(zip(view.comm.sent, view.comm.times))[before:]
    timed = [(data["content"], at) for (data, _), at in sent
             if data.get("method") == "custom" and data["content"]["type"] == "delta"]
    deltas = [content for content, _ in timed]
    assert 2 <= len(deltas) <= 10 * seconds + 1
    gaps = [b - a for (_, a), (_, b) in zip(timed, timed[1:])]
    assert min(gaps) >= 0.1 - 1e-3, f"two deltas within 0.1 s: {gaps}"
    assert not [data for (data, _), _ in sent if data.get("method") == "update"
                and "turns" in data.get("state", {})], "no whole-turn redraw while it streams"
    prose, code = "", ""
    for delta in deltas:
        prose = delta["prose"] if delta["reset"] else prose + delta["prose"]
        code = delta["code"] if delta["reset"] else code + delta["code"]
    assert prose.startswith("Let me look closely.")
    assert code == "".join(f"x{i} = {i}\n" for i in range(60)).rstrip("\n") or \
        code == "".join(f"x{i} = {i}\n" for i in range(60))
    assert deltas[-1]["tokens"] > 100, "a live token estimate rides along"


def test_a_reply_cut_by_stop_keeps_its_token_estimate(images):
    view = SessionWidget("q", images, "m")
    t = Transcript(question="q", model="m", images=images)
    _follow(view, t)
    view.status(t)
    turn = Turn(index=0, text="")
    t.turns.append(turn)
    view.turn_start(turn)
    for _ in range(50):
        turn.text += "and so on "
        view.text_delta(turn, "and so on ")
    t.status, turn.note = "stopped", "Stopped while the model was answering."
    view.status(t)
    assert t.usage.total_tokens == 0, "the endpoint counted nothing for the cut reply"
    assert view.state["status"] == "stopped" and view.state["live_tokens"] == 125
    assert view.state["phase"] == "idle"
    t2 = Transcript(question="q", model="m", images=images, status="answered", answer="1",
                    turns=[Turn(index=0, text="<answer>1</answer>", answer="1")])
    finished = SessionWidget("q", images, "m")
    finished.show_transcript(t2)
    assert finished.state["live_tokens"] == 0


def test_a_saved_transcript_is_drawn_at_once_and_its_text_form_is_one_line(images):
    from importlib import resources

    path = resources.files("pyvision_magic") / "data" / "coins_session.json"
    t = Transcript.load(str(path))
    view = SessionWidget(t.question, t.images, t.model)
    view.show_transcript(t)
    assert len(view.turns) == len(t.turns) == 3
    assert view.turns[0]["code"] == t.turns[0].code
    assert view.turns[2]["code"] is None, "the answer turn has no code"
    assert view.state["answer"] == "24" and view.state["status"] == "answered"
    text = repr(view)
    assert "\n" not in text and "pyvision session view" in text and "%pyvision load" in text
    bundle = view._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["text/plain"] == text


def test_large_images_are_reduced_once_and_photos_go_as_jpeg():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    plot = _png("white", size=(1800, 1200))
    view = SessionWidget("q", [], "m")
    t = Transcript(question="q", model="m",
                   turns=[Turn(index=0, text="", code="show()", exec_status="ok", outputs=[
                       Output(kind="image", mime="image/png", data=data, variable="image_clue_1"),
                       Output(kind="image", mime="image/png", data=plot, variable="image_clue_2"),
                   ])], status="answered")
    view.show_transcript(t)
    first, second = view.turns[0]["outputs"]
    assert (first["width"], first["height"]) == (640, 480) and first["mime"] == "image/jpeg"
    assert second["mime"] == "image/png", "a plot with few colours stays PNG"
    media = _media(view)
    assert len(media[first["key"]]) < 200_000
    with Image.open(io.BytesIO(media[second["key"]])) as im:
        assert max(im.size) == 640


def test_browser_messages_with_bad_content_change_nothing(images):
    view = SessionWidget("q", images, "m")
    t = Transcript(question="q", model="m", turns=[Turn(index=0, text="", code="print(1)",
                                                         exec_status="ok")], status="answered")
    view.show_transcript(t)
    seen = []
    view.on_run(lambda i, c: seen.append((i, c)))
    before = list(view.turns)
    for content in ["junk", {"action": "run", "turn": 7, "code": "x"},
                    {"action": "run", "turn": "zero", "code": "x"},
                    {"action": "run", "turn": 0, "code": None}, {"action": "nope", "turn": 0}]:
        view._on_msg(view, content, [])
    assert seen == [] and view.turns == before
    view._on_msg(view, {"action": "hello"}, [])
    alive, media = _custom(view)[-2:]
    assert alive == {"type": "alive"} and media["type"] == "media", \
        "a view drawn again gets every image again"


def test_a_draft_is_kept_until_run_and_an_action_error_is_shown_on_its_turn(images):
    view = SessionWidget("q", images, "m")
    t = Transcript(question="q", model="m", turns=[Turn(index=0, text="", code="print(1)",
                                                         exec_status="ok")], status="answered")
    view.show_transcript(t)
    view.click("edit", turn=0, code="print(2)")
    assert view.turns[0]["draft"] == "print(2)"
    view.click("edit", turn=0, code="print(1)")
    assert view.turns[0]["draft"] is None, "back to the saved code: no draft"

    def broken(index, code):
        raise RuntimeError("no kernel")

    view.on_fork(broken)
    view.click("fork", turn=0, code="print(3)")
    assert view.turns[0]["message"] == "Fork failed: no kernel"
    assert view.turns[0]["message_error"] and not view.turns[0]["busy"]
    view.click("run", turn=0, code="print(3)")
    assert view.turns[0]["message"] == "Run is not available here."


# -- with real sessions ------------------------------------------------------------


@pytest.fixture
def workspace():
    from pyvision_magic._handle import Workspace
    from pyvision_magic.magics import PyVision

    ws = Workspace(PyVision(use_pool=False))
    yield ws
    ws.close()


def _handle(workspace, server, images, **session_kwargs):
    from pyvision_magic._handle import SessionHandle
    from pyvision_magic._model import OpenAIModel
    from pyvision_magic._session import Session

    model = OpenAIModel(base_url=server.base_url, model="test-model", api_key_env="NO_KEY_HERE")
    workspace.remember_model(model)
    kernel = workspace.runner.wait(workspace.runner.submit(workspace.new_kernel()))
    session = Session("How many squares?", images, model=model, executor=kernel,
                      **session_kwargs)
    view = SessionWidget(session.transcript.question, images, model.name)
    return workspace.add(SessionHandle(workspace, session, view, kernel=kernel))


def _run(workspace, handle):
    return workspace.runner.wait(workspace.runner.submit(handle._async_run()))


def _stdout(turn_state) -> str:
    return "".join(o["text"] for o in turn_state["outputs"] if o["kind"] == "stream")


def test_run_marks_the_edit_and_what_it_invalidates_and_fork_opens_below_its_turn(
        workspace, make_chat_server, images, no_openai_env):
    server = make_chat_server([
        code_reply("threshold = 100\nprint('threshold', threshold)"),
        code_reply("print('bigger', threshold * 2)"),
        "<answer>2</answer>",
        # after the fork from turn 2:
        "<answer>3</answer>",
    ])
    handle = _handle(workspace, server, images)
    _run(workspace, handle)
    view = handle.view
    assert handle.status == "answered" and len(view.turns) == 3
    assert _stdout(view.turns[1]) == "bigger 200\n"
    assert view.state["stale_answer"] is None and not any(t["stale"] for t in view.turns)

    view.click("run", turn=0, code="threshold = 7\nprint('threshold', threshold)")
    assert view.turns[0]["busy"], "the turn's buttons are off while it runs"
    view.last_action.result(30)
    first = view.turns[0]
    assert _stdout(first) == "threshold 7\n" and not first["busy"]
    assert first["edited"] and first["original"]["code"].startswith("threshold = 100")
    assert first["original"]["outputs"][0]["text"] == "threshold 100\n", "one click away"
    assert view.turns[1]["stale"] == 1 and view.turns[2]["stale"] == 1
    assert view.state["stale_answer"] == 1, "the answer predates the edit"
    assert handle.transcript.turns[0].code.startswith("threshold = 7")

    view.click("fork", turn=1, code="print('fork sees', threshold + 1)")
    fork = view.last_action.result(60)
    assert view.turns[1]["message"].startswith("Forked")
    assert fork.status == "answered" and fork.answer == "3"
    assert view.forks == [{"turn": 1, "ref": f"anywidget:{fork.view.model_id}"}]
    fork_view = fork.view
    assert fork_view.header["fork_of"] == {"turn": 1}
    assert [t["inherited"] for t in fork_view.turns] == [True, False, False]
    assert _stdout(fork_view.turns[0]) == "threshold 7\n"
    assert _stdout(fork_view.turns[1]) == "fork sees 8\n"
    assert handle.answer == "2" and len(view.turns) == 3, "the original stays as it was"
    assert fork.kernel is not handle.kernel


def _run_in_a_notebook(workspace, source):
    """Run ``source`` as a notebook cell, with %pyvision loaded on ``workspace``."""
    from IPython.core.interactiveshell import InteractiveShell

    from pyvision_magic.magics import PyVisionMagics, _loaded

    shell = InteractiveShell.instance()
    magics = PyVisionMagics(shell)
    magics.workspace = workspace
    shell.register_magics(magics)
    try:
        return shell.run_cell(source, store_history=False)
    finally:
        shell.magics_manager.registry.pop("PyVisionMagics", None)
        _loaded.pop(id(shell), None)


def test_copy_to_cell_brings_the_earlier_tools_whose_names_it_uses(
        workspace, make_chat_server, images, no_openai_env, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    server = make_chat_server([
        code_reply("mask = np.asarray(image_clue_0)[..., 0] > 200\n"
                   "def count(m):\n    return int(m.sum())"),
        code_reply("print('unrelated turn')\nmask = None  # not this one: turn 3 redefines it"),
        code_reply("mask = np.asarray(image_clue_0)[..., 0] >= 0\nside = mask.shape[0]"),
        code_reply("print('count', count(mask) == side * mask.shape[1], cv2.__name__)"),
        "<answer>done</answer>",
    ])
    handle = _handle(workspace, server, images)
    _run(workspace, handle)
    view = handle.view
    view.click("copy", turn=3, code=handle.transcript.turns[3].code)
    source = _custom(view)[-1]["source"]
    assert "# Turn 1's tool, for count:" in source
    assert "# Turn 3's tool, for mask, side:" in source
    assert "unrelated turn" not in source
    assert source.index("def count") < source.index("side =") < source.index("print('count'")
    # Without the earlier tools, the same tool fails in the notebook (run first: the
    # shell is one per process, and the full cell leaves count and mask in it).
    for name in ("count", "mask", "side"):
        InteractiveShell.instance().user_ns.pop(name, None)
    bare = source[:source.index("# Turn 1's tool")] + handle.transcript.turns[3].code
    assert isinstance(_run_in_a_notebook(workspace, bare).error_in_exec, NameError)
    capsys.readouterr()
    result = _run_in_a_notebook(workspace, source)
    assert result.success, result.error_in_exec
    assert "count True cv2" in capsys.readouterr().out


def test_a_copied_cell_says_when_an_earlier_tool_it_brings_failed_in_its_kernel():
    from types import SimpleNamespace

    from pyvision_magic._handle import SessionHandle

    transcript = Transcript(question="q", model="m", images=[])
    transcript.turns = [
        Turn(index=0, text="", code="scale = 2\nraise ValueError('late')", exec_status="error"),
        Turn(index=1, text="", code="offset = 1", exec_status="skipped"),  # never ran
        Turn(index=2, text="", code="offset = 3", exec_status="ok"),
    ]
    source = SessionHandle.cell_source(SimpleNamespace(transcript=transcript, id=7), 3,
                                       "print(scale + offset)")
    assert "# Turn 1's tool, for scale (in its kernel it raised an error):\n" in source
    assert "# Turn 3's tool, for offset:\noffset = 3" in source
    assert "offset = 1" not in source
    assert source.endswith("# Turn 4's tool:\nprint(scale + offset)")
    assert "%pyvision images" not in source  # no images to load


def test_copy_to_cell_gives_a_cell_that_runs_in_the_notebook(
        workspace, make_chat_server, images, no_openai_env):
    server = make_chat_server([
        code_reply("mask = np.asarray(image_clue_0)[..., 0] > 200\nplt.imshow(mask)\nplt.show()"),
        code_reply("print('red', int(np.asarray(image_clue_1).size > 0), "
                   "cv2.__name__, np.asarray(image_clue_0).shape)"),
        "<answer>done</answer>",
    ])
    handle = _handle(workspace, server, images)
    _run(workspace, handle)
    view = handle.view
    view.click("copy", turn=1, code=handle.transcript.turns[1].code)
    message = _custom(view)[-1]
    assert message["type"] == "insert_cell" and message["turn"] == 1
    source = message["source"]
    assert "image_clue_0, image_clue_1, = %pyvision images" in source

    result = _run_in_a_notebook(workspace, source)
    assert result.success, result.error_in_exec
    view._on_msg(view, {"action": "copied", "turn": 1, "ok": True, "how": "cell"}, [])
    assert view.turns[1]["message"] == "Inserted as a new cell below."
    assert not view.turns[1]["message_error"]
    view._on_msg(view, {"action": "copied", "turn": 1, "ok": False, "how": "<b>bogus</b>"}, [])
    assert view.turns[1]["message"].startswith("Neither a new cell") and \
        view.turns[1]["message_error"]


def test_stop_during_a_tool_reads_as_stopped_not_as_an_error(
        workspace, make_chat_server, images, no_openai_env):
    server = make_chat_server([code_reply("import time\nprint('started', flush=True)\n"
                                          "time.sleep(60)")])
    handle = _handle(workspace, server, images)
    future = workspace.runner.submit(handle._async_run())
    deadline = time.monotonic() + 30
    while not handle.session._executing:  # the tool has been sent to the kernel
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    assert handle.view.state["phase"] == "tool" and handle.view.state["phase_turn"] == 0
    started = time.monotonic()
    handle.view.click("stop")
    future.result(30)
    assert time.monotonic() - started < 10
    assert handle.status == "stopped" and handle.view.state["status"] == "stopped"
    shown = handle.view.turns[0]
    assert shown["exec_status"] == "stopped"
    assert not any(o["kind"] == "error" for o in shown["outputs"]), "no KeyboardInterrupt"
    assert _stdout(shown) == "started\n"


def test_the_header_says_when_the_tools_run_unsandboxed(workspace, images):
    from pyvision_magic.kernel._child import ChildKernel

    async def notice(sandbox):
        kernel = ChildKernel(sandbox=sandbox)
        await kernel.choose_isolation()
        return workspace.isolation_notice(kernel)

    off = workspace.runner.wait(workspace.runner.submit(notice(False)))
    assert off.startswith("Tools run unsandboxed: the sandbox is turned off")
    view = SessionWidget("q", images, "m", notice=off)
    assert view.header["notice"] == off
    assert view.header["images"][0]["variable"] == "image_clue_0"


def test_edit_bookkeeping_drafts_originals_and_what_turns_stale():
    from pyvision_magic.ui._edits import EditLog

    code = {0: "a = 1", 1: "b = a", 2: None}
    log = EditLog(code.get)
    for i in range(3):
        assert not log.outputs_shown(i, code[i], "ok", [{"text": f"out {i}"}], rerun=False)
    log.draft(0, "a = 2")
    assert log.fields(0)["draft"] == "a = 2"
    code[0] = "a = 2"
    assert log.outputs_shown(0, "a = 2", "ok", [{"text": "new"}], rerun=True)
    first = log.fields(0)
    assert first["edited"] and first["draft"] is None
    assert first["original"] == {"code": "a = 1", "outputs": [{"text": "out 0"}],
                                 "exec_status": "ok"}
    assert [log.fields(i)["stale"] for i in range(3)] == [None, 1, 1]
    code[0] = "a = 1"  # rerun with the model's code again: nothing is stale any more
    assert log.outputs_shown(0, "a = 1", "ok", [{"text": "out 0"}], rerun=True)
    assert not log.fields(0)["edited"] and log.first_edited() is None
    assert [log.fields(i)["stale"] for i in range(3)] == [None, None, None]


def test_a_real_traceback_loses_the_hidden_cell_numbers_and_fork_from_code_shows_below(
        workspace, make_chat_server, images, no_openai_env):
    server = make_chat_server([
        code_reply("def area(side):\n    return side / 0\n\nprint(area(3))"),
        "<answer>none</answer>",
        # the fork from turn 1, made from code:
        "<answer>9</answer>",
    ])
    handle = _handle(workspace, server, images)
    _run(workspace, handle)
    (error,) = [o for o in handle.view.turns[0]["outputs"] if o["kind"] == "error"]
    assert error["ename"] == "ZeroDivisionError"
    raw = handle.transcript.turns[0].outputs[-1].text
    assert "Cell In[" in raw or "ipython-input" in raw, "the kernel numbers its cells"
    assert "Cell In[" not in error["traceback"] and "ipython-input" not in error["traceback"]
    assert "\x1b[" not in error["traceback"]
    assert "tool code, line 4" in error["traceback"] and "tool code, line 2" in error["traceback"]

    fork = handle.fork(0, "print(3 * 3)")  # the notebook's API, as the Fork button's
    assert fork.answer == "9" and fork.view.header["fork_of"] == {"turn": 0}
    assert handle.view.forks == [{"turn": 0, "ref": f"anywidget:{fork.view.model_id}"}]


def test_the_view_takes_every_colour_from_the_theme_variables():
    """Colours in the view's CSS are only fallbacks of JupyterLab's variables."""
    from pathlib import Path

    css = (Path(__file__).resolve().parents[1] / "js" / "src" / "style.css").read_text()
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    literal = re.compile(r"#[0-9a-fA-F]{3,8}\b|\b(?:rgba?|hsla?|hwb|lab|lch|oklch)\(")
    bare = []
    for found in literal.finditer(css):
        start = max(css.rfind(";", 0, found.start()), css.rfind("{", 0, found.start())) + 1
        # The functions still open at the literal: it must be inside a var(--jp-..., ...).
        opened: list[str] = []
        for name, paren in re.findall(r"([\w-]*)(\(|\))", css[start:found.start()]):
            if paren == "(":
                opened.append(name)
            elif opened:
                opened.pop()
        if "var" not in opened:
            bare.append(css[start:found.end()].strip())
    assert literal.search(css), "the check found no colour at all"
    assert bare == [], f"colours that no theme can change: {bare}"
    editor = (Path(__file__).resolve().parents[1] / "js" / "src" / "editor.js").read_text()
    assert not literal.search(editor), "the editor's theme sets a colour of its own"


def test_a_saved_notebook_has_a_one_line_text_form_and_a_monospace_static_copy_built_once(
        make_chat_server, image_path, tmp_path, monkeypatch):
    """nbclient runs a real notebook; what it saves is what a viewer without a kernel gets."""
    import os
    from html.parser import HTMLParser
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    project = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [project,
                                                                    os.environ.get("PYTHONPATH")])))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PYVISION_MODEL"):
        monkeypatch.delenv(name, raising=False)
    server = make_chat_server([
        code_reply("print('rows', np.asarray(image_clue_0).shape[0])"),
        code_reply("plt.imshow(np.asarray(image_clue_0)); plt.show()"),
        code_reply("print(1 / 0)"),
        "<answer>2</answer>",
    ])
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in [
        f"%load_ext pyvision_magic\n%config PyVision.base_url = {server.base_url!r}\n"
        # Count the static copies the cell builds (the old view built two, ~4 s each).
        "import pyvision_magic._display as _display\n_built = []\n_render = _display.render_html\n"
        "_display.render_html = lambda *a, **k: _built.append(1) or _render(*a, **k)",
        f"%%pyvision -i {image_path}\nHow many squares?",
        "print('static copies built:', len(_built))",
    ]]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(nb, str(tmp_path / "saved.ipynb"))
    nb = nbformat.read(str(tmp_path / "saved.ipynb"), as_version=4)

    outputs = nb.cells[1].outputs
    (view,) = [o for o in outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    text = view["data"]["text/plain"]
    assert "\n" not in text.strip() and "%pyvision load" in text, text
    (static,) = [o for o in outputs if "pyvision" in o.get("metadata", {})]
    assert "static copies built: 1\n" in "".join(o.get("text", "") for o in nb.cells[2].outputs)

    class Blocks(HTMLParser):
        def __init__(self):
            super().__init__()
            self.pre: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag == "pre":
                self.pre.append(dict(attrs).get("style", ""))

    blocks = Blocks()
    blocks.feed(static["data"]["text/html"])
    # Three tools and their outputs (stdout, the traceback): each a <pre>.
    assert len(blocks.pre) >= 5, blocks.pre
    for style in blocks.pre:
        family = re.search(r"font-family:([^;]*)", style)
        assert family and family.group(1).strip().endswith("monospace"), style
    saved = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert all("buffers" not in model for model in saved.values()), \
        "images are not saved a second time in the widget state"
    names = sorted(model["model_name"] for model in saved.values())
    assert names == ["AnyModel", "LayoutModel"], f"one widget model for four turns: {names}"

    # nbconvert's HTML of the notebook as JupyterLab saves it (no widget state): the one
    # line, then the saved copy; no widget repr.
    from nbconvert import HTMLExporter

    del nb.metadata["widgets"]
    page, _ = HTMLExporter().from_notebook_node(nb)
    assert page.count(html.escape(text.strip(), quote=False)) == 1
    assert page.count("saved copy of a pyvision session") == 1
    assert "SessionWidget(" not in page and "SessionView(" not in page


def test_the_session_imports_no_view_code():
    """The Session only emits events; the widget observes them (never the other way)."""
    import subprocess
    import sys

    code = ("import sys, pyvision_magic._session; "
            "print([m for m in ('pyvision_magic.ui', 'anywidget', 'ipywidgets', 'comm') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_a_built_front_end_sessions_fall_back_to_the_static_copy_said_once(
        workspace, monkeypatch, tmp_path, capsys):
    from pyvision_magic.ui import _widget

    assert _widget.bundle_problem() is None, "this checkout's front end is built"
    assert not workspace.static_only()
    monkeypatch.setattr(_widget, "_ESM", tmp_path / "session_view.js")  # a checkout never built
    problem = _widget.bundle_problem()
    assert problem.startswith("the notebook front end of pyvision_magic is not built")
    assert "pip install -e ." in problem and "Node.js" in problem
    assert workspace.static_only() and workspace.static_only()
    err = capsys.readouterr().err
    assert err.count("front end of pyvision_magic is not built") == 1
    assert err.strip().count("\n") == 0 and err.strip().endswith("shown instead.")
