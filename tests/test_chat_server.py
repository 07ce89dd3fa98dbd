"""The scripted chat server, exercised with the real ``openai`` client."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import openai
import pytest

from chat_server import (  # noqa: F401  (fixtures are found by name)
    ChatServer,
    CutStream,
    HTTPError,
    Reply,
    chat_server,
    make_chat_server,
)

USER = [{"role": "user", "content": "What is in the image?"}]
LONG_TEXT = "The image shows a red square on a white background, slightly rotated."


def sync_client(server: ChatServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=kwargs.pop("api_key", "test-key"), **kwargs)


def async_client(server: ChatServer, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key=kwargs.pop("api_key", "test-key"), **kwargs)


def create(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "test-model")
    kwargs.setdefault("messages", USER)
    return client.chat.completions.create(**kwargs)


# -- replies ------------------------------------------------------------------
def test_plain_reply_with_default_usage(chat_server: ChatServer) -> None:
    chat_server.script = ["Hello there, three words"]
    with sync_client(chat_server) as client:
        completion = create(client)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Hello there, three words"
    assert completion.choices[0].finish_reason == "stop"
    raw_length = len(chat_server.last_request().raw)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    assert completion.usage.prompt_tokens == raw_length // 4 > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 4
    assert chat_server.steps_consumed == 1 and chat_server.remaining_steps == 0


def test_cached_tokens_simulate_a_prefix_cache(chat_server: ChatServer) -> None:
    # ~6,000 characters of system prompt: about 1,500 "tokens" (bytes // 4) shared.
    system = {"role": "system", "content": "You write Python tools. " * 250}
    first = [system, {"role": "user", "content": "What is in the image?"}]
    second = first + [{"role": "assistant", "content": "<code>print(1)</code>"},
                      {"role": "user", "content": "1"}]
    other = [{"role": "system", "content": "Something else entirely. " * 250}]
    chat_server.script = ["a", "b", Reply("c", reasoning_tokens=12), "d"]
    with sync_client(chat_server) as client:
        usages = [create(client, messages=m).usage for m in (first, second, other, USER)]
    cached = [u.prompt_tokens_details.cached_tokens for u in usages]
    shared = (len(json.dumps(first, separators=(",", ":")).encode())) // 4
    assert cached[0] == 0, "nothing came before the first request"
    assert cached[1] == shared // 128 * 128 >= 1024
    assert cached[1] < usages[1].prompt_tokens
    assert cached[2] == 0, "a different first message shares no prefix"
    assert cached[3] == 0, "a prefix under 1,024 tokens is not cached"
    assert usages[2].completion_tokens_details.reasoning_tokens == 12
    assert usages[2].completion_tokens == 1 + 12
    assert usages[0].completion_tokens_details.reasoning_tokens == 0


def test_cached_tokens_in_the_streamed_usage_chunk(chat_server: ChatServer) -> None:
    messages = [{"role": "system", "content": "x" * 8000}, {"role": "user", "content": "hi"}]
    chat_server.script = ["a", "b"]
    with sync_client(chat_server) as client:
        for _ in range(2):
            chunks = list(create(client, messages=messages, stream=True,
                                 stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage.prompt_tokens_details.cached_tokens == 1920  # 2,000-odd rounded down to 128s


def test_reply_with_explicit_usage_and_finish_reason(chat_server: ChatServer) -> None:
    chat_server.script = [Reply("cut off", prompt_tokens=100, completion_tokens=7, finish_reason="length")]
    with sync_client(chat_server) as client:
        completion = create(client)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (100, 7)


def test_stream_yields_deltas_then_usage_chunk(chat_server: ChatServer) -> None:
    chat_server.script = [LONG_TEXT]
    with sync_client(chat_server) as client:
        chunks = list(create(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 3, "observers must see the text arrive in several deltas"
    assert "".join(deltas) == LONG_TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == len(LONG_TEXT.split())
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(chat_server: ChatServer) -> None:
    chat_server.script = ["short"]
    with sync_client(chat_server) as client:
        chunks = list(create(client, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_async_client_streamed_and_not(chat_server: ChatServer) -> None:
    chat_server.script = ["plain async reply", LONG_TEXT]

    async def run() -> tuple[str | None, list[str], Any]:
        async with async_client(chat_server) as client:
            completion = await client.chat.completions.create(model="m", messages=USER)
            stream = await client.chat.completions.create(
                model="m", messages=USER, stream=True, stream_options={"include_usage": True}
            )
            deltas, usage = [], None
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    deltas.append(chunk.choices[0].delta.content)
                usage = chunk.usage or usage
            return completion.choices[0].message.content, deltas, usage

    content, deltas, usage = asyncio.run(run())
    assert content == "plain async reply"
    assert len(deltas) > 3 and "".join(deltas) == LONG_TEXT
    assert usage is not None and usage.completion_tokens == len(LONG_TEXT.split())


def test_callable_step_and_default(make_chat_server: Any) -> None:
    def echo(request: dict) -> str:
        return "echo: " + request["messages"][-1]["content"]

    server = make_chat_server([echo], default=lambda request: Reply("fallback"))
    with sync_client(server) as client:
        assert create(client).choices[0].message.content == "echo: What is in the image?"
        assert create(client).choices[0].message.content == "fallback"
        assert create(client).choices[0].message.content == "fallback"
    assert server.steps_consumed == 1
    assert [r.step_index for r in server.requests] == [0, None, None]


# -- stop sequences -----------------------------------------------------------
def test_stop_truncates_reply(chat_server: ChatServer) -> None:
    reply = "<code>\nprint(1)\n</code>\nExecution result: made up"
    chat_server.script = [reply, reply]
    with sync_client(chat_server) as client:
        plain = create(client, stop=["</code>", "<answer>"])
        chunks = list(create(client, stop="</code>", stream=True))
    assert plain.choices[0].message.content == "<code>\nprint(1)\n"
    assert plain.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == "<code>\nprint(1)\n"


def test_reject_stop_gives_bad_request_without_consuming(make_chat_server: Any) -> None:
    server = make_chat_server(["ok"], reject_stop=True)
    with sync_client(server) as client:
        with pytest.raises(openai.BadRequestError) as info:
            create(client, stop=["</code>"])
        assert info.value.code == "unsupported_parameter"
        assert info.value.param == "stop"
        assert info.value.type == "invalid_request_error"
        assert server.steps_consumed == 0
        assert create(client).choices[0].message.content == "ok"
    assert [r.status for r in server.requests] == [400, 200]


# -- errors -------------------------------------------------------------------
def test_rate_limit_is_retried_then_succeeds(chat_server: ChatServer) -> None:
    chat_server.script = [HTTPError(429, "Rate limit reached.", headers={"retry-after-ms": "10"}), "finally"]
    with sync_client(chat_server) as client:
        assert create(client).choices[0].message.content == "finally"
    assert [r.status for r in chat_server.requests] == [429, 200]


def test_server_errors_exhaust_retries(chat_server: ChatServer) -> None:
    chat_server.script = [HTTPError(500, "boom")] * 3
    with sync_client(chat_server, max_retries=2) as client:
        with pytest.raises(openai.InternalServerError) as info:
            create(client)
    assert info.value.status_code == 500 and info.value.type == "server_error"
    assert len(chat_server.requests) == 3


def test_api_key_checked_without_consuming(make_chat_server: Any) -> None:
    server = make_chat_server(["welcome"], api_key="right-key")
    with sync_client(server, api_key="wrong-key") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            create(client)
    assert info.value.code == "invalid_api_key"
    assert server.steps_consumed == 0
    with sync_client(server, api_key="right-key") as client:
        assert create(client).choices[0].message.content == "welcome"


def test_scripted_auth_error(chat_server: ChatServer) -> None:
    chat_server.script = [HTTPError(401, "Incorrect API key provided.", code="invalid_api_key")]
    with sync_client(chat_server) as client:
        with pytest.raises(openai.AuthenticationError):
            create(client)


def test_unknown_model_is_not_found(make_chat_server: Any) -> None:
    server = make_chat_server(["hi"], models=["gpt-4.1", "claude-4-sonnet"])
    with sync_client(server) as client:
        assert [m.id for m in client.models.list()] == ["gpt-4.1", "claude-4-sonnet"]
        with pytest.raises(openai.NotFoundError) as info:
            create(client, model="gpt-9")
        assert info.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-9")
        assert server.steps_consumed == 0
        assert create(client, model="gpt-4.1").choices[0].message.content == "hi"


def test_unknown_path_is_json_404(chat_server: ChatServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", chat_server.port, timeout=5)
    try:
        conn.request("GET", "/v1/nothing-here")
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 404
    assert set(body["error"]) >= {"message", "type", "code"}


def test_script_exhaustion_fails_fast(chat_server: ChatServer) -> None:
    chat_server.script = ["only one"]
    with sync_client(chat_server) as client:
        create(client)
        with pytest.raises(openai.InternalServerError) as info:
            create(client)
    assert info.value.code == "script_exhausted"
    assert "ran out" in info.value.message
    assert len(chat_server.requests) == 2, "exhaustion must not be retried"


# -- cut connections ----------------------------------------------------------
def test_cut_stream_raises_connection_error(chat_server: ChatServer) -> None:
    chat_server.script = [CutStream(LONG_TEXT, after_chunks=2)]
    received: list[str] = []
    with sync_client(chat_server) as client:
        with pytest.raises(openai.APIConnectionError) as info:
            for chunk in create(client, stream=True):
                received.append(chunk.choices[0].delta.content or "")
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)
    assert "".join(received) == LONG_TEXT[:16]
    assert len(chat_server.requests) == 1, "a started stream is not retried"


def test_cut_stream_async(chat_server: ChatServer) -> None:
    chat_server.script = [CutStream("partial answer")]

    async def run() -> str:
        text = ""
        async with async_client(chat_server) as client:
            stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
            async for chunk in stream:
                text += chunk.choices[0].delta.content or ""
        return text

    with pytest.raises(openai.APIConnectionError):
        asyncio.run(run())


def test_cut_without_stream_is_connection_error(chat_server: ChatServer) -> None:
    chat_server.script = [CutStream()]
    with sync_client(chat_server, max_retries=0) as client:
        with pytest.raises(openai.APIConnectionError) as info:
            create(client)
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)
    assert chat_server.requests[0].status is None


# -- recording ------------------------------------------------------------------
def test_image_parts_recorded_intact(chat_server: ChatServer) -> None:
    image_url = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    messages = [
        {"role": "system", "content": "You write Python tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Count the squares."},
                {"type": "image_url", "image_url": {"url": image_url, "detail": "high"}},
            ],
        },
    ]
    chat_server.script = ["four"]
    with sync_client(chat_server) as client:
        create(client, messages=messages)
    request = chat_server.last_request()
    assert chat_server.last_messages() == messages
    assert request.method == "POST" and request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.body["model"] == "test-model"


# -- concurrency and lifecycle ----------------------------------------------------
def test_delayed_requests_overlap(chat_server: ChatServer) -> None:
    chat_server.script = [Reply(f"reply {i}", delay=0.5) for i in range(8)]

    async def run() -> list[str | None]:
        async with async_client(chat_server) as client:
            results = await asyncio.gather(
                *(client.chat.completions.create(model="m", messages=USER) for _ in range(8))
            )
        return [r.choices[0].message.content for r in results]

    contents = asyncio.run(run())
    requests = chat_server.requests
    # Every request arrived before any finished: the delays ran side by side.
    assert max(r.received_at for r in requests) < min(r.finished_at or 0 for r in requests)
    # Each script step was handed out exactly once.
    assert sorted(contents) == sorted(f"reply {i}" for i in range(8))
    assert sorted(r.step_index for r in requests) == list(range(8))


def test_sixteen_threads_each_get_one_step(chat_server: ChatServer) -> None:
    chat_server.script = [f"reply {i}" for i in range(16)]
    with sync_client(chat_server) as client, ThreadPoolExecutor(16) as pool:
        contents = list(pool.map(lambda _: create(client).choices[0].message.content, range(16)))
    assert sorted(contents) == sorted(f"reply {i}" for i in range(16))


def test_stop_is_prompt_and_leaves_no_threads() -> None:
    before = set(threading.enumerate())
    server = ChatServer([Reply("never sent", delay=30)]).start()
    with sync_client(server, max_retries=0) as client:
        errors: list[BaseException] = []

        def call() -> None:
            try:
                create(client)
            except openai.APIConnectionError as exc:
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        while not server.requests:  # wait until the handler sleeps in its delay
            threading.Event().wait(0.01)
        server.stop()
        caller.join(timeout=5)
    assert not caller.is_alive()
    assert len(errors) == 1
    assert set(threading.enumerate()) <= before
    with pytest.raises(RuntimeError):
        server.start()
