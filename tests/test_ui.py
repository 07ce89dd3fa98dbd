"""Headless widget tests: views built from events, buttons clicked from code.

The first tests feed events by hand; the others run real sessions (loopback
chat server, real child kernels) on the magic's private loop and click Run,
Fork and Stop as a user would.
"""

from __future__ import annotations

import base64
import io
import json
import time

import pytest

from conftest import code_reply
from pyvision_magic._records import Output, Usage
from pyvision_magic._transcript import Transcript, Turn
from pyvision_magic.ui import SessionView, TurnCard
from pyvision_magic.ui._view import copy_to_cell_script


def _png(color: str = "red") -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture
def images(image_path):
    from pyvision_magic import load_image

    return [load_image(image_path)]


def test_a_view_built_from_events_shows_every_part_of_a_session(images):
    view = SessionView("How many squares?", images, "test-model")
    t = Transcript(question="How many squares?", model="test-model", images=images)
    view.status(t)
    assert view.running and not view.header.stop_button.disabled
    assert "running" in view.header.info.value
    assert len(view.header.thumbnails.children) == 1

    turn = Turn(index=0, text="")
    t.turns.append(turn)
    view.turn_start(turn)
    for piece in ["I will **count** ", "the squares.\n", "<code>\n```python\nprint(2)\n```\n"]:
        turn.text += piece
        view.text_delta(turn, piece)
    turn.code = "print(2)"
    view.code(turn)
    card = view.cards[0]
    markdown = card.text.outputs[0]["data"]["text/markdown"]
    assert markdown == "I will **count** the squares.", "the code is shown in the editor, not the text"
    assert card.code.value == "print(2)"
    assert card.run_button.disabled and card.fork_button.disabled, "no Run/Fork while running"
    assert not card.copy_button.disabled

    turn.outputs = [
        Output(kind="text", stream="stdout", text="2\n"),
        Output(kind="image", mime="image/png", data=_png(), width=40, height=30,
               variable="image_clue_1"),
        Output(kind="error", ename="ValueError", evalue="bad", text="Traceback...\nValueError: bad"),
    ]
    turn.exec_status, turn.exec_seconds = "error", 0.25
    view.outputs(turn)
    kinds = [o["output_type"] for o in card.outputs.outputs]
    assert kinds == ["stream", "display_data", "display_data", "error"]
    shown = card.outputs.outputs[2]["data"]
    (mime,) = [k for k in shown if k.startswith("image/")]
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(shown[mime]))) as im:
        assert im.size == (40, 30), "a small image is shown at its own size"
        assert im.convert("RGB").getpixel((5, 5)) == (255, 0, 0) or mime == "image/jpeg"
    assert "tool error in 0.25 s" in card.title.value

    answer = Turn(index=1, text="<answer>2</answer>", answer="2")
    t.turns.append(answer)
    view.turn_start(answer)
    t.answer, t.status, t.usage = "2", "answered", Usage(10, 5, 15)
    view.answer_given(t)
    view.status(t)
    assert "Answer:</b> 2" in view.answer.value
    assert "answered" in view.header.info.value and "15 tokens" in view.header.info.value
    assert view.header.stop_button.disabled
    assert not card.run_button.disabled and not card.fork_button.disabled


def test_streaming_redraws_are_throttled_and_flushed_at_the_end(images):
    view = SessionView("q", images, "m")
    t = Transcript(question="q", model="m", images=images)
    view.status(t)
    turn = Turn(index=0, text="")
    t.turns.append(turn)
    view.turn_start(turn)
    for word in ["one ", "two ", "three ", "four"]:
        turn.text += word
        view.text_delta(turn, word)
    card = view.cards[0]
    assert card.text.outputs[0]["data"]["text/markdown"] == "one", "later pieces wait"
    t.status = "max_turns"
    view.status(t)
    assert card.text.outputs[0]["data"]["text/markdown"] == "one two three four"
    assert "did not answer within the turn limit" in view.answer.value


def test_no_answer_and_errors_are_said_in_the_answer_box(images):
    view = SessionView("q", images, "m")
    t = Transcript(question="q", model="m", images=images, status="error",
                   error="The endpoint refused the key.")
    view.show_transcript(t)
    assert "No answer" in view.answer.value and "refused the key" in view.answer.value


def test_a_saved_transcript_is_drawn_at_once(images):
    from importlib import resources

    path = resources.files("pyvision_magic") / "data" / "coins_session.json"
    t = Transcript.load(str(path))
    view = SessionView(t.question, t.images, t.model)
    view.show_transcript(t)
    assert len(view.cards) == len(t.turns) == 3
    assert view.cards[0].code.value == t.turns[0].code
    assert view.cards[2].code.layout.display == "none", "the answer turn has no code"
    assert "24" in view.answer.value


def test_card_buttons_call_back_and_show_errors_in_place():
    card = TurnCard(0)
    card.set_code("print(1)")
    card.allow_actions(True)
    seen = []
    card.on_action("run", lambda c: seen.append(c.code.value))
    card.code.value = "print(2)"
    card.run_button.click()
    assert seen == ["print(2)"]

    def broken(c):
        raise RuntimeError("no kernel")

    card.on_action("fork", broken)
    card.fork_button.click()
    assert "fork failed: no kernel" in card.message.value
    assert "pyvision-error" in card.message.value


def test_copy_to_cell_puts_the_code_in_a_script_that_cannot_break_out():
    code = 'print("</script><b>x</b>")\nx = 1 & 2'
    html = copy_to_cell_script(code)
    assert html.startswith("<img ") and 'onerror="' in html
    assert "<b>" not in html and "</script>" not in html
    view = SessionView("q", [], "m")
    t = Transcript(question="q", model="m", turns=[Turn(index=0, text="", code="print(3)",
                                                         exec_status="ok")], status="answered")
    view.show_transcript(t)
    view.cards[0].copy_button.click()
    assert json.dumps("print(3)").replace("\"", "&quot;") in view.bridge.value
    assert "Sent to the notebook page" in view.cards[0].message.value


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
    view = SessionView(session.transcript.question, images, model.name)
    return workspace.add(SessionHandle(workspace, session, view, kernel=kernel))


def _run(workspace, handle):
    return workspace.runner.wait(workspace.runner.submit(handle._async_run()))


def test_run_replaces_a_turns_outputs_and_fork_continues_from_the_edit(
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
    assert handle.status == "answered" and len(view.cards) == 3
    first, second = view.cards[0], view.cards[1]
    assert second.outputs.outputs[0]["text"] == "bigger 200\n"

    first.code.value = "threshold = 7\nprint('threshold', threshold)"
    first.run_button.click()
    assert first.run_button.disabled, "disabled while it runs"
    first.last_action.result(30)
    assert first.outputs.outputs[0]["text"] == "threshold 7\n"
    assert not first.run_button.disabled
    assert handle.transcript.turns[0].code.startswith("threshold = 7")

    second.code.value = "print('fork sees', threshold + 1)"
    second.fork_button.click()
    fork = second.last_action.result(60)
    assert "Forked" in second.message.value
    assert fork.status == "answered" and fork.answer == "3"
    assert view.forks == [fork.view]
    fork_cards = fork.view.cards
    # The fork replayed turn 1 as first recorded (threshold = 7 after the rerun above).
    assert fork_cards[0].outputs.outputs[0]["text"] == "threshold 7\n"
    assert fork_cards[1].outputs.outputs[0]["text"] == "fork sees 8\n"
    assert handle.answer == "2" and len(view.cards) == 3, "the original stays as it was"
    assert fork.kernel is not handle.kernel


def test_run_errors_are_shown_on_the_card(workspace, make_chat_server, images, no_openai_env):
    server = make_chat_server([code_reply("print(1)"), "<answer>1</answer>"])
    handle = _handle(workspace, server, images)
    _run(workspace, handle)
    card = handle.view.cards[0]
    card.code.value = "   "
    card.run_button.click()
    with pytest.raises(Exception):
        card.last_action.result(10)
    deadline = time.monotonic() + 5
    while "code is empty" not in card.message.value and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Run failed: The code is empty" in card.message.value
    assert not card.run_button.disabled


def test_stop_button_ends_a_running_session_and_keeps_its_turns(
        workspace, make_chat_server, images, no_openai_env):
    server = make_chat_server([code_reply("import time\nprint('started', flush=True)\n"
                                          "time.sleep(60)")])
    handle = _handle(workspace, server, images)
    future = workspace.runner.submit(handle._async_run())
    deadline = time.monotonic() + 30
    while not handle.transcript.turns or handle.transcript.turns[0].code is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    assert not handle.view.header.stop_button.disabled
    started = time.monotonic()
    handle.view.header.stop_button.click()
    future.result(30)
    assert time.monotonic() - started < 10
    assert handle.status == "stopped"
    assert "stopped" in handle.view.header.info.value
    assert len(handle.view.cards) == 1 and handle.view.cards[0].code.value.startswith("import time")
    assert "session was stopped" in handle.view.answer.value


def test_large_tool_images_are_shown_shrunk_so_saved_widget_state_stays_small():
    import base64
    import io

    import numpy as np
    from PIL import Image

    from pyvision_magic.ui._turn import DISPLAY_SIDE, to_notebook_outputs

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    full = base64.b64encode(buffer.getvalue()).decode()
    out = Output(kind="image", mime="image/png", data=full, width=1024, height=1024,
                 variable="image_clue_3")
    shown = to_notebook_outputs([out])[-1]["data"]
    (mime,) = [k for k in shown if k.startswith("image/")]
    with Image.open(io.BytesIO(base64.b64decode(shown[mime]))) as im:
        assert max(im.size) == DISPLAY_SIDE
    assert len(shown[mime]) < len(full) / 4
    kept = to_notebook_outputs([out], max_side=None)[-1]["data"]
    assert kept["image/png"] == full, "export can keep the full image"
