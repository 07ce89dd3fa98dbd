"""The agent loop end to end: real openai client, loopback chat server, real child kernel."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from chat_server import CutStream, HTTPError, Reply
from conftest import code_reply, run_session

from pyvision_magic import (
    ModelAuthError,
    ModelNotFoundError,
    ModelStreamError,
    ModelUnreachable,
    OpenAIModel,
    ReplayModel,
    load_image,
)
from pyvision_magic._prompt import LAST_TURN, NUDGE


def model_for(server, **kw) -> OpenAIModel:
    return OpenAIModel(base_url=server.base_url, model="test-model", **kw)


def text_of(message) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p["type"] == "text")


def image_parts(message) -> list[str]:
    content = message["content"]
    if isinstance(content, str):
        return []
    return [p["image_url"]["url"] for p in content if p["type"] == "image_url"]


CROP = """\
print("size", image_clue_0.size)
crop = image_clue_0.crop((10, 10, 41, 41))
print("mean red", round(np.asarray(crop)[..., 0].mean()))
plt.imshow(crop); plt.axis("off"); plt.show()"""


def test_multi_turn_session_feeds_printed_text_and_images_back(chat_server, image_path, no_openai_env):
    chat_server.script = [code_reply(CROP), "The crop is red.\n<answer>red</answer>"]
    events: list[str] = []
    deltas: list[str] = []

    def observe(s):
        s.on_turn_start(lambda turn: events.append(f"start {turn.index}"))
        s.on_code(lambda turn: events.append(f"code {turn.index}"))
        s.on_outputs(lambda turn: events.append(f"outputs {turn.index}"))
        s.on_answer(lambda t: events.append(f"answer {t.answer}"))
        s.on_text_delta(lambda turn, d: deltas.append(d))

    session = run_session("What colour is the top-left square?", [load_image(image_path)],
                          model_for(chat_server), observe=observe)

    t = session.transcript
    assert t.status == "answered" and t.answer == "red"
    assert events == ["start 0", "code 0", "outputs 0", "start 1", "answer red"]
    assert len(deltas) > 3, "replies must stream in pieces"
    assert "".join(deltas).endswith("<answer>red</answer>")

    turn = t.turns[0]
    assert turn.exec_status == "ok"
    texts = "".join(o.text for o in turn.outputs if o.kind == "text")
    assert "size (120, 80)" in texts and "mean red 255" in texts
    images = [o for o in turn.outputs if o.kind == "image"]
    assert len(images) == 1 and images[0].variable == "image_clue_1"

    first, second = chat_server.chat_requests
    assert first.body["stream"] is True and first.body["stop"] == ["</code>"]
    assert first.body["messages"][0]["role"] == "system"
    assert "image_clue_0" in first.body["messages"][0]["content"]
    question = first.body["messages"][1]
    assert "120x80" in text_of(question)
    assert image_parts(question)[0].startswith("data:image/png;base64,")

    feedback = second.body["messages"][-1]
    assert feedback["role"] == "user"
    assert "<interpreter>" in text_of(feedback) and "mean red 255" in text_of(feedback)
    assert "image_clue_1" in text_of(feedback)
    urls = image_parts(feedback)
    assert len(urls) == 1 and urls[0].startswith("data:image/")
    assert second.body["messages"][-2] == {"role": "assistant", "content": code_reply(CROP)}
    assert t.usage.total_tokens == sum(tt.usage.total_tokens for tt in t.turns) > 0


def test_one_cache_key_per_session_and_cached_tokens_in_the_transcript(
    chat_server, tmp_path, no_openai_env
):
    import numpy as np
    from PIL import Image

    # Noise does not compress: the prompt is well over the 1,024 tokens caching needs.
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    chat_server.script = [code_reply("print(1)"), "<answer>1</answer>"] * 2
    image = load_image(tmp_path / "noise.png")
    sessions = [run_session("Q?", [image], model_for(chat_server, prompt_cache_key="on"))
                for _ in range(2)]
    keys = [r.body["prompt_cache_key"] for r in chat_server.chat_requests]
    assert keys == [sessions[0].cache_key] * 2 + [sessions[1].cache_key] * 2
    assert sessions[0].cache_key != sessions[1].cache_key
    t = sessions[0].transcript
    # The second request repeats the first one's system prompt and question.
    assert t.turns[0].usage.cached_tokens == 0 and t.turns[1].usage.cached_tokens >= 1024
    assert t.usage.cached_tokens == t.turns[1].usage.cached_tokens
    assert t.to_dict()["usage"]["cached_tokens"] == t.usage.cached_tokens
    # A new session starts with the same prefix: the server's cache holds it.
    assert sessions[1].transcript.turns[0].usage.cached_tokens >= 1024


def test_a_model_written_before_cache_key_still_works(chat_server, image_path, no_openai_env):
    from pyvision_magic import Model, ModelReply

    class OldModel(Model):
        """A third-party model whose complete() has the signature of 0.1."""

        name = "old"

        async def complete(self, messages, *, stop=None, on_delta=None):
            return ModelReply(text="<answer>old</answer>")

        async def aclose(self):
            pass

    session = run_session("Q?", [load_image(image_path)], OldModel())
    assert session.transcript.status == "answered" and session.transcript.answer == "old"


def test_turn_limit_tells_the_model_and_skips_last_code(chat_server, image_path, no_openai_env):
    chat_server.script = [code_reply("print(1)"), code_reply("print(2)")]
    session = run_session("Q?", [load_image(image_path)], model_for(chat_server), max_turns=2)
    t = session.transcript
    assert t.status == "max_turns" and t.answer is None
    assert [turn.exec_status for turn in t.turns] == ["ok", "skipped"]
    assert "last turn" in t.turns[1].note
    last_request = chat_server.chat_requests[1]
    assert LAST_TURN in text_of(last_request.body["messages"][-1])
    assert LAST_TURN not in text_of(chat_server.chat_requests[0].body["messages"][-1])


def test_reply_without_code_or_answer_gets_a_nudge(chat_server, image_path, no_openai_env):
    chat_server.script = ["Hmm, the squares look interesting.", "<answer>2</answer>"]
    session = run_session("How many squares?", [load_image(image_path)], model_for(chat_server))
    assert session.transcript.status == "answered"
    assert session.transcript.answer == "2"
    messages = chat_server.chat_requests[1].body["messages"]
    assert messages[-2] == {"role": "assistant", "content": "Hmm, the squares look interesting."}
    assert messages[-1] == {"role": "user", "content": NUDGE}


HALLUCINATED = code_reply("print(6 * 7)") + "\n<interpreter>\n41\n</interpreter>\n<answer>41</answer>"


def test_stop_sequence_is_sent_and_the_server_applies_it(chat_server, image_path, no_openai_env):
    chat_server.script = [HALLUCINATED, "<answer>42</answer>"]
    session = run_session("6*7?", [load_image(image_path)], model_for(chat_server))
    t = session.transcript
    assert t.answer == "42"
    # The server cut at the stop sequence, so the model never "saw" its own guess.
    assert "41" not in t.turns[0].text
    assert "42" in t.turns[0].outputs[0].text


def test_endpoint_refusing_stop_gets_replies_cut_after_the_code(make_chat_server, image_path,
                                                                no_openai_env):
    server = make_chat_server([HALLUCINATED, "<answer>42</answer>"], reject_stop=True)
    session = run_session("6*7?", [load_image(image_path)], model_for(server))
    t = session.transcript
    assert t.status == "answered" and t.answer == "42", "the guessed answer 41 must be ignored"
    assert t.turns[0].outputs[0].text.strip() == "42"
    sent = [r.body for r in server.chat_requests]
    # Refused once with `stop`, asked again without it, and never sent again.
    assert [("stop" in body) for body in sent] == [True, False, False]
    assert [r.status for r in server.chat_requests] == [400, 200, 200]
    history = sent[2]["messages"]
    assert "<interpreter>\n41" not in history[-2]["content"]
    assert history[-2]["content"].endswith("</code>")


def test_rate_limit_then_success(chat_server, image_path, no_openai_env):
    chat_server.script = [HTTPError(429, "slow down"), "<answer>ok</answer>"]
    session = run_session("Q?", [load_image(image_path)], model_for(chat_server))
    assert session.transcript.status == "answered"
    assert len(chat_server.chat_requests) == 2


def test_rejected_key_ends_with_the_auth_message(make_chat_server, image_path, monkeypatch):
    server = make_chat_server(["<answer>never</answer>"], api_key="right-key")
    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
    session = run_session("Q?", [load_image(image_path)], model_for(server))
    assert session.transcript.status == "error"
    assert isinstance(session.error, ModelAuthError)
    assert "refused the API key" in session.transcript.error
    assert "$OPENAI_API_KEY" in session.transcript.error
    assert server.steps_consumed == 0


def test_unknown_model_has_its_own_message(make_chat_server, image_path, no_openai_env):
    server = make_chat_server(["<answer>x</answer>"], models=["other-model"])
    session = run_session("Q?", [load_image(image_path)], model_for(server))
    assert isinstance(session.error, ModelNotFoundError)
    assert "does not know the model 'test-model'" in session.transcript.error


def test_unreachable_endpoint_has_its_own_message(image_path, no_openai_env):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = OpenAIModel(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    session = run_session("Q?", [load_image(image_path)], model)
    assert isinstance(session.error, ModelUnreachable)
    assert "Cannot reach the model endpoint" in session.transcript.error


def test_stream_cut_midway_keeps_earlier_turns(chat_server, image_path, no_openai_env):
    chat_server.script = [code_reply("print('first turn ran')"),
                          CutStream("I can now see that the answer is", after_chunks=2)]
    session = run_session("Q?", [load_image(image_path)], model_for(chat_server))
    t = session.transcript
    assert t.status == "error"
    assert isinstance(session.error, ModelStreamError)
    assert "stopped after" in t.error
    assert t.turns[0].outputs[0].text.strip() == "first turn ran"
    assert len(t.turns) == 2 and t.turns[1].text  # the partial reply is kept too
    assert "broke off" in t.turns[1].note


def test_tool_error_goes_back_with_traceback(chat_server, image_path, no_openai_env):
    chat_server.script = [code_reply("print('before')\n1/0"), "<answer>done</answer>"]
    session = run_session("Q?", [load_image(image_path)], model_for(chat_server))
    turn = session.transcript.turns[0]
    assert turn.exec_status == "error"
    feedback = text_of(chat_server.chat_requests[1].body["messages"][-1])
    assert "before" in feedback and "ZeroDivisionError" in feedback and "Traceback" in feedback


def test_stop_during_a_slow_model_reply(chat_server, image_path, no_openai_env):
    chat_server.script = [Reply("<answer>late</answer>", delay=30)]
    from pyvision_magic.kernel._child import ChildKernel
    from pyvision_magic._session import Session

    async def go():
        kernel = ChildKernel()
        model = model_for(chat_server)
        session = Session("Q?", [load_image(image_path)], model=model, executor=kernel)
        session.on_turn_start(lambda turn: threading.Timer(0.3, session.stop).start())
        try:
            await asyncio.wait_for(session._async_run(), 20)
        finally:
            await kernel.shutdown()
            await model.aclose()
        return session

    session = asyncio.run(go())
    assert session.transcript.status == "stopped"
    assert session.transcript.answer is None


def test_stop_during_a_runaway_tool(chat_server, image_path, no_openai_env):
    chat_server.script = [code_reply("print('looping', flush=True)\nwhile True:\n    pass")]
    from pyvision_magic.kernel._child import ChildKernel
    from pyvision_magic._session import Session

    async def go():
        kernel = ChildKernel()
        model = model_for(chat_server)
        session = Session("Q?", [load_image(image_path)], model=model, executor=kernel)
        def stop_once_running() -> None:
            # The kernel may still be starting when the code arrives; stop the tool itself.
            deadline = time.monotonic() + 30
            while not kernel.is_ready and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
            session.stop()

        session.on_code(lambda turn: threading.Thread(target=stop_once_running, daemon=True).start())
        try:
            await asyncio.wait_for(session._async_run(), 30)
            # Nothing of the stop is left running once the session returned: a loop
            # closed now would otherwise destroy a pending task.
            leftover = [t for t in asyncio.all_tasks()
                        if "_interrupt_until_done" in repr(t.get_coro()) and not t.done()]
            assert not leftover
            after = await kernel.execute("print(6 * 7)")
        finally:
            await kernel.shutdown()
            await model.aclose()
        return session, after

    session, after = asyncio.run(go())
    assert session.transcript.status == "stopped"
    stopped = session.transcript.turns[0]
    assert stopped.exec_status == "stopped", "the user's stop is not a fault of the tool"
    assert stopped.note == "Stopped by the user while the tool was running."
    assert not [o for o in stopped.outputs if o.kind == "error"], "no KeyboardInterrupt traceback"
    assert "looping" in "".join(o.text for o in stopped.outputs), "what it printed is kept"
    assert after.outputs[0].text.strip() == "42", "the kernel must still work after the stop"


def test_replay_model_plays_recorded_turns_and_runs_code(chat_server, image_path, no_openai_env):
    chat_server.script = [code_reply("print(image_clue_0.size)"), "<answer>120x80</answer>"]
    live = run_session("Size?", [load_image(image_path)], model_for(chat_server))
    replayed = run_session("Size?", live.transcript.images, ReplayModel(live.transcript))
    assert replayed.transcript.status == "answered"
    assert replayed.transcript.answer == "120x80"
    assert replayed.transcript.turns[0].outputs[0].text == live.transcript.turns[0].outputs[0].text
    assert len(chat_server.chat_requests) == 2, "the replay must not call the endpoint"


def test_replay_that_runs_out_of_turns_is_an_error(image_path, no_openai_env):
    from pyvision_magic import Transcript, Turn

    saved = Transcript(question="Q", model="m", turns=[Turn(index=0, text="thinking...")])
    session = run_session("Q", [load_image(image_path)], ReplayModel(saved))
    assert session.transcript.status == "error"
    assert "only 1 model turns" in session.transcript.error


@pytest.mark.parametrize("question", ["", "   \n"])
def test_empty_question_is_refused(question, image_path):
    from pyvision_magic import ConfigError
    from pyvision_magic.kernel._child import ChildKernel
    from pyvision_magic._session import Session

    with pytest.raises(ConfigError, match="question is empty"):
        Session(question, [], model=ReplayModel(None), executor=ChildKernel())


def test_rerun_replaces_a_turns_outputs_in_the_same_kernel(chat_server, image_path, no_openai_env):
    chat_server.script = [code_reply("threshold = 100\nprint('threshold', threshold)"), "<answer>ok</answer>"]
    from pyvision_magic.kernel._child import ChildKernel
    from pyvision_magic._session import Session

    async def go():
        kernel = ChildKernel()
        model = model_for(chat_server)
        session = Session("Q?", [load_image(image_path)], model=model, executor=kernel)
        seen = []
        session.on_outputs(lambda turn: seen.append(turn.index))
        try:
            await session._async_run()
            turn = await session._async_rerun(0, "print('threshold was', threshold)\nthreshold = 50")
            again = await kernel.execute("print(threshold)")
        finally:
            await kernel.shutdown()
            await model.aclose()
        return session, turn, again, seen

    session, turn, again, seen = asyncio.run(go())
    assert turn.code.endswith("threshold = 50")
    assert turn.outputs[0].text == "threshold was 100\n", "rerun runs in the kernel as it is"
    assert again.outputs[0].text.strip() == "50"
    assert seen == [0, 0]
    assert session.transcript.status == "answered", "a rerun does not change how the session ended"


def test_fork_replays_earlier_tools_runs_the_edit_and_lets_the_model_continue(
        chat_server, image_path, no_openai_env):
    chat_server.script = [
        code_reply("base = 10\nprint('base', base)"),
        code_reply("print('total', base + 1)"),
        "<answer>11</answer>",
        # after the fork:
        "<answer>12</answer>",
    ]
    from pyvision_magic.kernel._child import ChildKernel
    from pyvision_magic._session import Session

    async def go():
        kernel = ChildKernel()
        model = model_for(chat_server)
        session = Session("Q?", [load_image(image_path)], model=model, executor=kernel)
        try:
            await session._async_run()
            await kernel.execute("leftover = 1")
            child = session.fork(1, "print('total', base + 2)")
            await child._async_run()
            gone = await kernel.execute("print('leftover' in globals())")
        finally:
            await kernel.shutdown()
            await model.aclose()
        return session, child, gone

    session, child, gone = asyncio.run(go())
    assert session.transcript.answer == "11" and len(session.transcript.turns) == 3
    assert session.transcript.turns[1].code == "print('total', base + 1)", "the original is unchanged"
    c = child.transcript
    assert c.status == "answered" and c.answer == "12"
    assert [t.code for t in c.turns] == ["base = 10\nprint('base', base)", "print('total', base + 2)", None]
    assert c.turns[1].outputs[0].text == "total 12\n"
    assert gone.outputs[0].text.strip() == "False", "the fork restarted the kernel"
    sent = chat_server.chat_requests[-1].body["messages"]
    assert "print('total', base + 2)" in sent[-2]["content"], "the model sees the edited code as its own"
    assert "total 12" in text_of(sent[-1])


def test_fork_of_a_turn_without_code_is_refused(chat_server, image_path, no_openai_env):
    from pyvision_magic import ConfigError

    chat_server.script = ["<answer>a</answer>"]
    session = run_session("Q?", [load_image(image_path)], model_for(chat_server))
    with pytest.raises(ConfigError, match="no code to fork"):
        session.fork(0)
    with pytest.raises(ConfigError, match="There is no turn 5"):
        session.fork(4, "print(1)")


def test_a_400_for_another_reason_keeps_the_stop_sequence(make_chat_server, image_path, no_openai_env):
    server = make_chat_server([HTTPError(400, "image too large"), HTTPError(400, "image too large"),
                               "<answer>x</answer>"])
    model = model_for(server)
    session = run_session("Q?", [load_image(image_path)], model)
    assert session.transcript.status == "error" and "HTTP 400" in session.transcript.error
    assert model.use_stop, "stop must stay on when the endpoint's complaint was not about it"
    assert [("stop" in r.body) for r in server.chat_requests] == [True, False]


def test_the_report_of_the_users_interrupt_is_not_kept_as_tool_output():
    from pyvision_magic._records import Output
    from pyvision_magic._session import _without_interrupt

    outputs = [
        Output(kind="text", stream="stdout", text="started\n"),
        # Where the interrupt lands outside the tool's frame, ipykernel prints it on stderr.
        Output(kind="text", stream="stderr", text="\nKeyboardInterrupt\n\n"),
        Output(kind="text", stream="stderr", text="warning: slow\nTraceback (most recent call "
               "last):\n  File \"x.py\", line 1, in f\nKeyboardInterrupt\n"),
        Output(kind="error", ename="KeyboardInterrupt", evalue="", text="Traceback ..."),
        Output(kind="text", stream="stderr", text="KeyboardInterrupt is mentioned, then more\n"),
    ]
    kept = _without_interrupt(outputs)
    assert [(o.stream, o.text) for o in kept] == [
        ("stdout", "started\n"), ("stderr", "warning: slow\n"),
        ("stderr", "KeyboardInterrupt is mentioned, then more\n")]
