"""Endpoint limits: deadline, size cap, max_tokens, refusals and function calls.

Every test goes through the real ``openai`` client to the loopback chat server,
streamed and not. Timings are measured with loose bounds only (the benchmarks
are elsewhere); each model call is also wrapped in a generous ``wait_for`` so a
missing limit fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from chat_server import Drip, Endless, Reply, ToolCall
from conftest import code_reply, run_session

from pyvision_magic import ModelError, ModelStreamError, ModelUnreachable, OpenAIModel, load_image
from pyvision_magic._parsing import parse_reply
from pyvision_magic._prompt import NUDGE

USER = [{"role": "user", "content": "What is in the image?"}]
FENCE = "```"
# A missing limit makes a call run until this guard, which fails the test.
GUARD = 30.0

both_modes = pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])


def model_for(server: Any, **kw: Any) -> OpenAIModel:
    return OpenAIModel(base_url=server.base_url, model="test-model", **kw)


def complete(model: OpenAIModel, *, stop: list[str] | None = None, on_delta: Any = None) -> Any:
    """Run one ``model.complete`` and close the client; return (reply or error, seconds)."""

    async def go() -> tuple[Any, float]:
        started = time.monotonic()
        try:
            reply = await asyncio.wait_for(
                model.complete(USER, stop=stop, on_delta=on_delta), GUARD
            )
        except ModelError as exc:
            reply = exc
        finally:
            await model.aclose()
        return reply, time.monotonic() - started

    return asyncio.run(go())


# -- deadline ---------------------------------------------------------------------
@both_modes
@pytest.mark.timeout(60)
def test_a_dripping_endpoint_ends_at_the_deadline(chat_server, stream, no_openai_env):
    # One byte every 0.2 s: the per-read request_timeout (120 s) never fires.
    chat_server.script = [Drip(interval=0.2)]
    error, seconds = complete(model_for(chat_server, stream=stream, reply_deadline=2.0))
    assert isinstance(error, ModelUnreachable), error
    assert "2 s deadline" in str(error) and "reply_deadline" in str(error)
    assert "\n" not in str(error)
    assert 2.0 <= seconds < 10, f"the 2 s deadline ended the reply after {seconds:.1f} s"


@pytest.mark.timeout(60)
def test_an_endless_token_stream_ends_at_the_deadline(chat_server, no_openai_env):
    # Slow enough that the size cap is far away: only the deadline can end it.
    chat_server.script = [Endless("and so on ", chunk_delay=0.01)]
    deltas: list[str] = []
    error, seconds = complete(model_for(chat_server, reply_deadline=2.0), on_delta=deltas.append)
    assert isinstance(error, ModelUnreachable) and "deadline" in str(error)
    assert deltas, "what streamed before the deadline reached the caller"
    assert seconds < 10


@pytest.mark.timeout(120)
def test_session_ends_with_error_at_the_deadline_and_keeps_earlier_turns(
    chat_server, image_path, no_openai_env
):
    chat_server.script = [code_reply("print(6 * 7)"), Drip(interval=0.2)]
    started = time.monotonic()
    session = run_session("6*7?", [load_image(image_path)], model_for(chat_server, reply_deadline=2.0))
    t = session.transcript
    assert time.monotonic() - started < 60
    assert t.status == "error"
    assert "deadline" in t.error and "\n" not in t.error
    assert isinstance(session.error, ModelUnreachable)
    assert len(t.turns) == 2
    assert t.turns[0].code == "print(6 * 7)" and t.turns[0].outputs[0].text.strip() == "42"
    assert "deadline" in t.turns[1].note


# -- size cap and early end -----------------------------------------------------
@both_modes
@pytest.mark.timeout(60)
def test_an_endless_reply_ends_at_the_size_cap(chat_server, stream, no_openai_env):
    chat_server.script = [Endless("and so on " * 10)]
    error, seconds = complete(
        model_for(chat_server, stream=stream, max_reply_chars=20_000, reply_deadline=GUARD)
    )
    assert isinstance(error, ModelStreamError), error
    assert "more than 20,000 characters" in str(error) and "max_reply_chars" in str(error)
    assert seconds < 10


@both_modes
def test_a_long_reply_without_code_is_refused_at_the_default_cap(make_chat_server, stream,
                                                                 no_openai_env):
    server = make_chat_server([Reply("blah " * 50_000)], chunk_chars=1000)
    error, _ = complete(model_for(server, stream=stream))
    assert isinstance(error, ModelStreamError) and "200,000 characters" in str(error)


@both_modes
def test_a_long_reply_whose_code_came_first_is_kept(make_chat_server, stream, no_openai_env):
    code = "print(1)"
    server = make_chat_server(
        [Reply(code_reply(code) + "\n<interpreter>\n" + "1\n" * 150_000)], chunk_chars=1000
    )
    reply, _ = complete(model_for(server, stream=stream, use_stop=False))
    assert not isinstance(reply, Exception), reply
    assert parse_reply(reply.text).code == code
    # Streamed, reading stopped right after the code block.
    assert reply.cut is stream and (len(reply.text) < 2000) is stream


@pytest.mark.timeout(60)
def test_reading_stops_once_the_code_block_is_closed(chat_server, no_openai_env):
    # No stop sequence (refused earlier), and the model goes on forever after its code.
    code = "print(image_clue_0.size)"
    chat_server.script = [Endless("<interpreter>(1, 2)</interpreter> ", prefix=code_reply(code))]
    deltas: list[str] = []
    reply, seconds = complete(
        model_for(chat_server, use_stop=False), stop=["</code>"], on_delta=deltas.append
    )
    assert not isinstance(reply, Exception), reply
    assert reply.cut and reply.finish_reason == "stop"
    assert parse_reply(reply.text).code == code
    assert "<interpreter>" not in reply.text
    assert "".join(deltas) == reply.text
    assert seconds < 10


@pytest.mark.timeout(60)
def test_a_server_ignoring_the_stop_sequence_is_cut_shortly_after_the_code(chat_server,
                                                                          no_openai_env):
    code = "print(1)"
    chat_server.script = [Endless("<interpreter>1</interpreter> ", prefix=code_reply(code))]
    reply, _ = complete(model_for(chat_server), stop=["</code>"])
    assert chat_server.last_request().body["stop"] == ["</code>"]
    assert reply.cut and parse_reply(reply.text).code == code
    # A short grace for the stop sequence to work, then no more.
    assert len(reply.text) < len(code_reply(code)) + 400


@pytest.mark.timeout(60)
def test_closing_an_answer_ends_the_reply_too(chat_server, no_openai_env):
    chat_server.script = [Endless("and then more ", prefix="It is <answer>42</answer>")]
    reply, _ = complete(model_for(chat_server, use_stop=False), stop=["</code>"])
    assert reply.cut and parse_reply(reply.text).answer == "42"


# -- linear time ----------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_1mb_streamed_reply_full_of_fences_is_read_in_linear_time(make_chat_server,
                                                                     no_openai_env):
    # Every delta brings a closing marker that completes nothing (fences of plain
    # text), so a reader that parsed the reply on each one would be quadratic.
    filler = f"{FENCE}\nsome output\n{FENCE}\n</answer> "
    text = filler * (1_000_000 // len(filler)) + code_reply("print(1)")
    server = make_chat_server([Reply(text)], chunk_chars=64)
    deltas: list[str] = []
    reply, seconds = complete(
        model_for(server, max_reply_chars=None, use_stop=False), on_delta=deltas.append
    )
    assert not isinstance(reply, Exception), reply
    assert len(reply.text) > 1_000_000 and parse_reply(reply.text).code == "print(1)"
    assert sum(map(len, deltas)) == len(reply.text)
    assert seconds < 15, f"1 MB took {seconds:.1f} s"


def test_streamed_text_parses_only_when_a_marker_arrives():
    from pyvision_magic._parsing import StreamedText

    text = StreamedText()
    for _ in range(10_000):
        text.add("plain words, no markers ")
    assert text._parses == 0
    for _ in range(10_000):
        text.add(f"{FENCE}\nnot python\n{FENCE}\n")
    # A few dozen eager parses, then one per eighth of growth: logarithmic, not 10,000.
    assert text._parses < 32 + 40
    text.add(code_reply("x = 1"))
    # The last deferred marker is parsed once the text has grown enough.
    for _ in range(20_000):
        if text.end is not None:
            break
        text.add(f"{FENCE}\n")
    assert text.end is not None and parse_reply(text.text).code == "x = 1"


@pytest.mark.timeout(120)
def test_a_session_with_a_1mb_streamed_reply_ends_quickly(make_chat_server, image_path,
                                                          no_openai_env):
    filler = "The model rambles on and on. " * 1000
    text = filler * (1_000_000 // len(filler)) + "<answer>42</answer>"
    server = make_chat_server([Reply(text)], chunk_chars=64)
    started = time.monotonic()
    session = run_session("6*7?", [load_image(image_path)],
                          model_for(server, max_reply_chars=2_000_000))
    seconds = time.monotonic() - started
    assert session.transcript.status == "answered" and session.transcript.answer == "42"
    assert len(session.transcript.turns[0].text) == len(text)
    assert seconds < 15, f"1 MB took {seconds:.1f} s"


# -- max_tokens -----------------------------------------------------------------
@both_modes
def test_max_tokens_is_sent_by_default(chat_server, stream, no_openai_env):
    chat_server.script = ["<answer>4</answer>"]
    complete(model_for(chat_server, stream=stream))
    body = chat_server.last_request().body
    assert body["max_tokens"] == 16384 and "max_completion_tokens" not in body


def test_max_tokens_none_sends_no_limit_and_another_name_can_be_chosen(make_chat_server,
                                                                      no_openai_env):
    server = make_chat_server(["<answer>4</answer>", "<answer>5</answer>"])
    complete(model_for(server, max_tokens=None))
    complete(model_for(server, max_tokens=500, max_tokens_param="max_completion_tokens"))
    first, second = (r.body for r in server.chat_requests)
    assert "max_tokens" not in first and "max_completion_tokens" not in first
    assert second["max_completion_tokens"] == 500 and "max_tokens" not in second


def test_openai_and_azure_get_max_completion_tokens(no_openai_env):
    assert OpenAIModel().max_tokens_param == "max_completion_tokens"  # api.openai.com
    azure = OpenAIModel(base_url="https://my-resource.openai.azure.com/openai/v1")
    assert azure.max_tokens_param == "max_completion_tokens"
    assert OpenAIModel(base_url="http://localhost:11434/v1").max_tokens_param == "max_tokens"


@both_modes
def test_an_endpoint_refusing_max_tokens_is_asked_again_without_it(make_chat_server, stream,
                                                                  no_openai_env):
    server = make_chat_server(["<answer>4</answer>", "<answer>5</answer>"],
                              reject_params={"max_tokens"})
    model = model_for(server, stream=stream)

    async def two_replies() -> list[str]:
        try:
            return [(await model.complete(USER, stop=["</code>"])).text for _ in range(2)]
        finally:
            await model.aclose()

    assert asyncio.run(two_replies()) == ["<answer>4</answer>", "<answer>5</answer>"]
    requests = server.chat_requests
    assert [r.status for r in requests] == [400, 200, 200]
    assert [r.body.get("max_tokens") for r in requests] == [16384, None, None]
    # Only the refused field was dropped.
    assert all(r.body["stop"] == ["</code>"] for r in requests) and model.use_stop
    assert model.max_tokens is None


@pytest.mark.parametrize("bad", [0, -5])
def test_limits_must_be_positive(bad):
    from traitlets import TraitError

    for name in ("max_tokens", "max_reply_chars", "reply_deadline"):
        with pytest.raises(TraitError, match=f"{name} must be positive"):
            OpenAIModel(**{name: bad})


# -- refusals and function calls ------------------------------------------------
REFUSAL = "I'm sorry, but I can't help with identifying people in this image."


@both_modes
def test_a_refusal_is_returned_with_its_text(make_chat_server, stream, no_openai_env):
    server = make_chat_server([Reply(refusal=REFUSAL)], chunk_chars=5)
    reply, _ = complete(model_for(server, stream=stream))
    assert reply.refusal == REFUSAL
    assert reply.text == "" and reply.tool_calls == []


@both_modes
def test_function_calls_are_reported_by_name(chat_server, stream, no_openai_env):
    calls = (ToolCall("python", '{"code": "print(image_clue_0.size)"}'), ToolCall("crop", "{}"))
    chat_server.script = [Reply(tool_calls=calls)]
    reply, _ = complete(model_for(chat_server, stream=stream))
    assert reply.tool_calls == ["python", "crop"]
    assert reply.finish_reason == "tool_calls" and reply.text == "" and reply.refusal is None


@both_modes
def test_function_call_arguments_count_towards_the_size_cap(chat_server, stream, no_openai_env):
    chat_server.script = [Reply(tool_calls=(ToolCall("python", '"' + "x" * 30_000 + '"'),))]
    error, _ = complete(model_for(chat_server, stream=stream, max_reply_chars=20_000))
    assert isinstance(error, ModelStreamError) and "20,000" in str(error)


@pytest.mark.timeout(120)
@both_modes
def test_a_refusal_ends_the_session_with_its_text(chat_server, stream, image_path,
                                                  no_openai_env):
    chat_server.script = [Reply(refusal=REFUSAL), "<answer>never asked</answer>"]
    session = run_session("Who is this?", [load_image(image_path)],
                          model_for(chat_server, stream=stream))
    t = session.transcript
    assert len(chat_server.chat_requests) == 1, "a refusal is not nudged"
    assert t.status == "error" and REFUSAL in t.error and "\n" not in t.error
    assert len(t.turns) == 1 and REFUSAL in t.turns[0].note


@pytest.mark.timeout(120)
@both_modes
def test_a_function_call_only_reply_gets_one_nudge_to_write_code(chat_server, stream, image_path,
                                                                 no_openai_env):
    chat_server.script = [
        Reply(tool_calls=(ToolCall("python", '{"code": "print(6 * 7)"}'),)),
        "<answer>42</answer>",
    ]
    session = run_session("6*7?", [load_image(image_path)], model_for(chat_server, stream=stream))
    t = session.transcript
    assert t.status == "answered" and t.answer == "42"
    assert "python" in t.turns[0].note and "function" in t.turns[0].note.lower()
    nudge = chat_server.chat_requests[1].body["messages"][-1]
    assert nudge["role"] == "user" and NUDGE not in nudge["content"]
    assert f"{FENCE}python" in nudge["content"] and "function" in nudge["content"].lower()


@pytest.mark.timeout(120)
def test_a_second_function_call_only_reply_ends_the_session(chat_server, image_path, no_openai_env):
    call = Reply(tool_calls=(ToolCall("python", '{"code": "print(6 * 7)"}'),))
    chat_server.script = [call, call, "<answer>never asked</answer>"]
    session = run_session("6*7?", [load_image(image_path)], model_for(chat_server))
    t = session.transcript
    assert len(chat_server.chat_requests) == 2
    assert t.status == "error" and "calling functions (python)" in t.error
    assert [bool(turn.note) for turn in t.turns] == [True, True]


# -- usage details and prompt caching ----------------------------------------------
LONG_SYSTEM = [{"role": "system", "content": "You write Python tools. " * 250}]


def replies(model: OpenAIModel, conversations: list[list[dict]], **kw: Any) -> list[Any]:
    """``model.complete`` each conversation in turn (errors returned, not raised)."""

    async def go() -> list[Any]:
        out: list[Any] = []
        try:
            for messages in conversations:
                try:
                    out.append(await asyncio.wait_for(model.complete(messages, **kw), GUARD))
                except ModelError as exc:
                    out.append(exc)
        finally:
            await model.aclose()
        return out

    return asyncio.run(go())


@both_modes
def test_cached_and_reasoning_tokens_are_read_from_usage(chat_server, stream, no_openai_env):
    chat_server.script = ["<answer>1</answer>", Reply("<answer>2</answer>", reasoning_tokens=40)]
    first = LONG_SYSTEM + USER
    second = first + [{"role": "assistant", "content": "<answer>1</answer>"}, USER[0]]
    # With the stop sequence sent, reading goes on to the usage chunk (none when cut).
    one, two = replies(model_for(chat_server, stream=stream), [first, second], stop=["</code>"])
    assert one.usage.cached_tokens == 0 and one.usage.reasoning_tokens == 0
    assert two.usage.cached_tokens >= 1024 and two.usage.cached_tokens % 128 == 0
    assert two.usage.cached_tokens < two.usage.prompt_tokens
    assert two.usage.reasoning_tokens == 40 and two.usage.completion_tokens == 41
    assert (one.usage + two.usage).cached_tokens == two.usage.cached_tokens


def test_usage_without_details_or_with_nulls_counts_zero():
    from types import SimpleNamespace

    from pyvision_magic._model import _usage
    from pyvision_magic._records import Usage

    assert _usage(SimpleNamespace(prompt_tokens=5, completion_tokens=2, total_tokens=7)) == Usage(5, 2, 7)
    nulls = SimpleNamespace(prompt_tokens=5, completion_tokens=2, total_tokens=7,
                            prompt_tokens_details=None,
                            completion_tokens_details=SimpleNamespace(reasoning_tokens=None))
    assert _usage(nulls) == Usage(5, 2, 7)
    as_dicts = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 3},
                "completion_tokens_details": {"reasoning_tokens": None}}
    assert _usage(as_dicts) == Usage(5, 2, 7, cached_tokens=3)


@both_modes
def test_prompt_cache_key_is_sent_when_on(chat_server, stream, no_openai_env):
    chat_server.script = ["<answer>1</answer>", "<answer>2</answer>"]
    replies(model_for(chat_server, stream=stream, prompt_cache_key="on"), [USER, USER],
            cache_key="session-1")
    assert [r.body.get("prompt_cache_key") for r in chat_server.chat_requests] == ["session-1"] * 2


def test_prompt_cache_key_is_not_sent_to_other_endpoints_by_default(chat_server, no_openai_env):
    chat_server.script = ["<answer>1</answer>", "<answer>2</answer>"]
    model = model_for(chat_server)
    assert model.prompt_cache_key == "auto"
    replies(model, [USER], cache_key="session-1")
    replies(model_for(chat_server, prompt_cache_key="off"), [USER], cache_key="session-1")
    assert all("prompt_cache_key" not in r.body for r in chat_server.chat_requests)


def test_auto_sends_prompt_cache_key_to_openai_and_azure_only(no_openai_env):
    assert OpenAIModel()._sends_cache_key()  # api.openai.com
    assert OpenAIModel(base_url="https://my-resource.openai.azure.com/openai/v1")._sends_cache_key()
    for url in ("http://localhost:11434/v1", "http://127.0.0.1:8000/v1",
                "https://openrouter.ai/api/v1", "https://openai.com.example.org/v1"):
        assert not OpenAIModel(base_url=url)._sends_cache_key(), url
    assert not OpenAIModel(prompt_cache_key="off")._sends_cache_key()


@both_modes
def test_an_endpoint_refusing_prompt_cache_key_is_asked_again_without_it(
    make_chat_server, stream, no_openai_env
):
    server = make_chat_server(["<answer>4</answer>", "<answer>5</answer>"],
                              reject_params={"prompt_cache_key"})
    model = model_for(server, stream=stream, prompt_cache_key="on")
    texts = [r.text for r in replies(model, [USER, USER], stop=["</code>"], cache_key="k")]
    assert texts == ["<answer>4</answer>", "<answer>5</answer>"]
    requests = server.chat_requests
    assert [r.status for r in requests] == [400, 200, 200]
    assert [r.body.get("prompt_cache_key") for r in requests] == ["k", None, None]
    assert all(r.body["stop"] == ["</code>"] and r.body["max_tokens"] == 16384 for r in requests)
    assert model.prompt_cache_key == "off"
