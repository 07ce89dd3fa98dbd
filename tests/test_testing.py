"""`pyvision_magic.testing`: the package as shipped, recorded-session replay, and the class server."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from pyvision_magic import Transcript, Turn, Usage, parse_reply, testing
from pyvision_magic.testing import ChatServer, Replay, Reply, code_reply, replay_script

PUBLIC = {
    "ChatServer", "CutStream", "DEFAULT_MODEL", "Drip", "Endless", "HTTPError", "RecordedRequest",
    "Replay", "Reply", "Step", "ToolCall", "code_reply", "replay_script",
}


def _run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            check=True)
    return result.stdout


def test_all_is_exactly_the_public_api():
    assert set(testing.__all__) == PUBLIC
    for name in testing.__all__:
        assert getattr(testing, name) is not None


def test_the_package_needs_no_test_framework_and_nothing_outside_the_standard_library():
    # What a bare interpreter loads (site hooks, .pth files) is not the package's doing.
    probe = ("import json, sys; {}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))")
    before = set(json.loads(_run_python(probe.format("pass"))))
    after = set(json.loads(_run_python(probe.format("import pyvision_magic.testing"))))
    foreign = {m for m in after - before if m not in sys.stdlib_module_names} - {"pyvision_magic"}
    assert "pytest" not in after and "_pytest" not in after
    assert not foreign, f"pyvision_magic.testing imported modules outside the standard library: {foreign}"


def test_tests_keep_only_fixtures_around_the_packaged_server():
    """tests/chat_server.py wraps the package's server in fixtures and holds no server of its own."""
    import ast

    tree = ast.parse((Path(__file__).parent / "chat_server.py").read_text(encoding="utf-8"))
    defined = [node for node in tree.body
               if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    not_fixtures = [node.name for node in defined
                    if isinstance(node, ast.ClassDef)
                    or not any(ast.unparse(d) == "pytest.fixture" for d in node.decorator_list)]
    assert defined and not_fixtures == [], f"tests/chat_server.py defines more than fixtures: {not_fixtures}"
    served = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
              and node.module == "pyvision_magic.testing" for alias in node.names}
    assert "ChatServer" in served


def test_code_reply_is_a_tool_reply_in_the_format_the_prompt_asks_for():
    reply = code_reply("print(1)", "Counting.")
    assert reply == "Counting.\n<code>\n```python\nprint(1)\n```\n</code>"
    assert parse_reply(reply).code == "print(1)"


def test_replay_script_gives_the_recorded_replies_in_order():
    transcript = Transcript.load("demo")
    script = replay_script("demo")
    assert [r.text for r in script] == [t.text for t in transcript.turns]
    # The shipped sessions carry no usage: the server computes it, as for any Reply.
    assert all(r.prompt_tokens is None and r.completion_tokens is None for r in script)
    assert [r.text for r in replay_script(transcript)] == [r.text for r in script]


def test_replay_script_keeps_recorded_usage_and_serves_it():
    transcript = Transcript("Q?", "m", turns=[
        Turn(0, code_reply("print(1)"), usage=Usage(1200, 30, 1230)),
        Turn(1, "<answer>1</answer>", usage=Usage(1500, 8, 1508)),
    ])
    script = replay_script(transcript)
    assert [(r.prompt_tokens, r.completion_tokens) for r in script] == [(1200, 30), (1500, 8)]
    with ChatServer(script) as server, openai.OpenAI(base_url=server.base_url, api_key="k") as client:
        first = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Q?"}])
    assert first.choices[0].message.content == code_reply("print(1)")
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (1200, 30)


def test_replay_script_of_a_missing_session_is_a_config_error():
    from pyvision_magic import ConfigError

    with pytest.raises(ConfigError, match="gallery:nope"):
        replay_script("gallery:nope")


def _ask(client: openai.OpenAI, messages: list[dict], stream: bool) -> str:
    if not stream:
        reply = client.chat.completions.create(model="any-model", messages=messages)
        return reply.choices[0].message.content
    chunks = client.chat.completions.create(model="any-model", messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_replay_answers_interleaved_conversations_by_their_place_in_the_session(stream):
    replies = replay_script("demo")
    with ChatServer(default=Replay("demo")) as server, \
            openai.OpenAI(base_url=server.base_url, api_key="any key") as client:
        alice = [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": "How many coins are in this photo?"}]
        bob = [{"role": "user", "content": "Something else entirely?"}]
        # Alice runs ahead, Bob starts late, and they alternate: each gets the replies in order.
        for conversation, turn in [(alice, 0), (alice, 1), (bob, 0), (alice, 2), (bob, 1), (bob, 2)]:
            text = _ask(client, conversation, stream)
            assert text == replies[turn].text, (conversation is alice, turn)
            conversation += [{"role": "assistant", "content": text},
                             {"role": "user", "content": f"Output of tool {turn}."}]
        # A conversation that has had every reply is told so, without a retry.
        with pytest.raises(openai.BadRequestError) as failure:
            _ask(client, alice, stream)
        assert failure.value.code == "replay_exhausted" and "'demo' has 3 model replies" in str(failure.value)
        # The next student starts again from the first reply.
        assert _ask(client, [{"role": "user", "content": "How many coins?"}], stream) == replies[0].text
        assert len(server.chat_requests) == 8


def test_replay_picks_the_session_whose_question_the_request_asks():
    crop = Transcript.load("gallery:basic_crop_zoom")
    replay = Replay("demo", "gallery:basic_crop_zoom")
    image_part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    asks_crop = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "  " + crop.question.upper() + "\nImage 0: x.png"}, image_part]}]}
    session, turn = replay.locate(asks_crop)
    assert (session.name, turn) == ("gallery:basic_crop_zoom", 0)
    assert replay(asks_crop).text == crop.turns[0].text
    # A question of neither session gets the first one.
    assert replay.locate({"messages": [{"role": "user", "content": "What?"}]})[0].name == "demo"


def test_replay_of_plain_scripts_and_its_chunk_delay():
    replay = Replay(["one", Reply("two")], chunk_delay=0.01)
    assert replay({"messages": []}) == Reply("one", chunk_delay=0.01)
    assert replay({"messages": [{"role": "assistant", "content": "one"}]}) == Reply("two", chunk_delay=0.01)
    with pytest.raises(ValueError):
        Replay()


def test_a_held_reply_stops_half_way_until_its_event_is_set():
    hold = threading.Event()
    text = "".join(f"word{i} " for i in range(40))
    with ChatServer([Reply(text, hold=hold), Reply("later", hold=threading.Event())]) as server, \
            openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        pieces: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            chunks = client.chat.completions.create(model="m", messages=[], stream=True)
            for c in chunks:
                if c.choices and c.choices[0].delta.content:
                    pieces.put(c.choices[0].delta.content)
            pieces.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        seen = ""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                piece = pieces.get(timeout=0.1)
            except queue.Empty:
                continue
            assert piece is not None, "the held reply ended before its event was set"
            seen += piece
        assert 0 < len(seen) < len(text) and text.startswith(seen)
        assert len(seen) >= len(text) // 2 - server.chunk_chars
        hold.set()
        while (piece := pieces.get(timeout=10)) is not None:
            seen += piece
        reader.join(10)
        assert seen == text
        # A server that stops lets a held reply go: its client sees a cut stream, not a hang.
        failed: list[BaseException] = []

        def read_held() -> None:
            try:
                _ask(client, [], stream=True)
            except BaseException as exc:  # noqa: BLE001 - the test looks at it
                failed.append(exc)

        held = threading.Thread(target=read_held, daemon=True)
        held.start()
        time.sleep(0.3)
    held.join(10)
    assert not held.is_alive() and failed


def test_a_server_that_keeps_no_requests_still_answers():
    with ChatServer(["hi"], keep_requests=False) as server, \
            openai.OpenAI(base_url=server.base_url, api_key="k") as client:
        assert _ask(client, [{"role": "user", "content": "?"}], stream=True) == "hi"
        assert server.requests == [] and server.steps_consumed == 1


# -- python -m pyvision_magic.testing ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyvision_magic.testing", *args]


class _Output:
    """A process's stdout, read line by line in a thread so waits can time out."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.seen: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self._lines.put(line) for line in proc.stdout], daemon=True).start()

    def until(self, text: str, timeout: float = 60) -> str:
        """Everything printed up to the first new line containing ``text``."""
        start, deadline = len(self.seen), time.monotonic() + timeout
        while len(self.seen) == start or text not in self.seen[-1]:
            try:
                self.seen.append(self._lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"the command printed no {text!r} in {timeout} s; it printed {self.seen}")
        return "".join(self.seen[start:])


def test_the_class_server_command_serves_a_recorded_session_until_stopped(tmp_path: Path):
    port = _free_port()
    replies = replay_script("demo")
    command = _command("--replay", "demo", "--port", str(port), "--images", str(tmp_path / "handout"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=tmp_path) as proc:
        output = _Output(proc)
        try:
            banner = output.until("Ctrl-C stops")
            url = f"http://127.0.0.1:{port}/v1"
            assert f"at {url}" in banner and f"OPENAI_BASE_URL={url}" in banner
            assert f'%config PyVision.base_url = "{url}"' in banner and "any API key works" in banner
            assert "How many coins are in this photo?" in banner
            assert (tmp_path / "handout" / "coins.png").read_bytes()[:4] == b"\x89PNG"
            with openai.OpenAI(base_url=url, api_key="whatever") as client:
                question = [{"role": "user", "content": "How many coins?"}]
                assert _ask(client, question, stream=True) == replies[0].text
                later = question + [{"role": "assistant", "content": replies[0].text},
                                    {"role": "user", "content": "output"}]
                assert _ask(client, later, stream=False) == replies[1].text
                assert [m.id for m in client.models.list()] == ["test-model"]
            output.until("demo: reply 2/3")
        finally:
            proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert "Stopped." in output.until("Stopped.")
        assert proc.stderr.read() == ""


@pytest.mark.parametrize("args, mentions", [
    (["--replay", "no_such_session.json"], "no_such_session.json"),
    (["--replay", "gallery:nope"], "gallery:basic_crop_zoom"),
])
def test_a_bad_replay_is_one_line_and_exit_code_2(tmp_path: Path, args, mentions):
    result = subprocess.run(_command(*args, "--port", "0"), capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, check=False)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m pyvision_magic.testing: error: --replay")
    assert mentions in lines[0] and "Traceback" not in result.stderr


def test_a_busy_port_is_one_line(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(_command("--replay", "demo", "--port", str(port)), capture_output=True,
                                text=True, timeout=120, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "choose another --port" in result.stderr
