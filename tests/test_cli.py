"""The `pyvision` command: real runs against the loopback server, and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from chat_server import HTTPError
from conftest import code_reply

from pyvision_magic import Transcript
from pyvision_magic.cli import main


@pytest.fixture
def endpoint(chat_server, monkeypatch, no_openai_env):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    return chat_server


def ask_args(server, image, *extra):
    return ["ask", "--base-url", server.base_url, "--model", "test-model", "-i", str(image), *extra]


def test_ask_prints_progress_to_stderr_and_the_answer_last_on_stdout(endpoint, image_path, capsys):
    endpoint.script = [code_reply("print('width', image_clue_0.width)"), "<answer>two squares</answer>"]
    code = main(ask_args(endpoint, image_path, "How many squares?"))
    out, err = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[-1] == "two squares"
    assert "turn 1" in err and "turn 2" in err and "width 120" in err
    assert "answered after 2 turns" in err


def test_ask_with_json_and_save(endpoint, image_path, tmp_path, capsys):
    endpoint.script = [code_reply("print(1 + 1)"), "<answer>2</answer>"]
    saved = tmp_path / "session.json"
    code = main(ask_args(endpoint, image_path, "--json", "--save", str(saved), "-q", "Q?"))
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    printed = json.loads(out)
    assert printed["status"] == "answered" and printed["answer"] == "2"
    assert printed["turns"][0]["outputs"][0] == {"kind": "text", "text": "2\n", "stream": "stdout"}
    assert Transcript.load(saved).to_dict() == printed


def test_turn_limit_exits_1(endpoint, image_path, capsys):
    endpoint.script = [code_reply("print(1)")] * 2
    assert main(ask_args(endpoint, image_path, "--max-turns", "2", "Q?")) == 1
    out, err = capsys.readouterr()
    assert out == "" and "max_turns after 2 turns" in err


def test_endpoint_failure_exits_3_with_one_line(endpoint, image_path, capsys):
    endpoint.script = [HTTPError(401, "bad key")]
    assert main(ask_args(endpoint, image_path, "Q?")) == 3
    out, err = capsys.readouterr()
    assert "refused the API key" in err and "Traceback" not in err


def test_replay_runs_the_saved_tools_for_real(endpoint, image_path, tmp_path, capsys):
    endpoint.script = [code_reply("print('height', image_clue_0.height)"), "<answer>80 px</answer>"]
    saved = tmp_path / "s.json"
    assert main(ask_args(endpoint, image_path, "--save", str(saved), "Height?")) == 0
    capsys.readouterr()
    requests_before = len(endpoint.requests)
    assert main(["replay", str(saved)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "80 px"
    assert "height 80" in err and "Replaying" in err
    assert len(endpoint.requests) == requests_before


def test_demo_without_a_key_replays_the_shipped_session(no_openai_env, capsys):
    assert main(["demo", "-q"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[-1] == "24"


def test_demo_with_an_endpoint_asks_it(endpoint, capsys):
    endpoint.script = ["<answer>24 coins</answer>"]
    assert main(["demo", "-q", "--base-url", endpoint.base_url, "--model", "test-model"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "24 coins"
    question = endpoint.chat_requests[0].body["messages"][1]["content"]
    assert any(p["type"] == "image_url" for p in question)


def test_console_script_runs_as_a_module(tmp_path, image_path):
    # A real process, as a user would start it: bad input must not show a traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "pyvision_magic", "ask", "-i", str(tmp_path / "missing.png"), "Q?"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "missing.png" in proc.stderr


# Every bad input: exit code 2, one line on stderr, nothing on stdout, no traceback.
@pytest.mark.parametrize(
    "argv_factory,expected",
    [
        (lambda d, img: ["ask", "-i", str(d / "nope.png"), "Q?"], "nope.png"),
        (lambda d, img: ["ask", "-i", str(d / "adir"), "Q?"], "adir"),
        (lambda d, img: ["ask", "-i", str(d / "text.png"), "Q?"], "text.png"),
        (lambda d, img: ["ask", "-i", str(d / "empty.png"), "Q?"], "empty.png"),
        (lambda d, img: ["ask", "-i", str(img), "  "], "question is empty"),
        (lambda d, img: ["ask", "Q?"], "-i/--image"),
        (lambda d, img: ["ask", "-i", str(img), "--frobnicate", "Q?"], "unrecognized arguments"),
        (lambda d, img: ["ask", "-i", str(img), "--max-turns", "0", "Q?"], "at least 1"),
        (lambda d, img: ["ask", "-i", str(img), "--max-turns", "many", "Q?"], "whole number"),
        (lambda d, img: ["ask", "-i", str(img), "--timeout", "-3", "Q?"], "more than 0"),
        (lambda d, img: ["ask", "-i", str(img), "Q?"], "No API key"),
        (lambda d, img: ["frobnicate"], "invalid choice"),
        (lambda d, img: ["replay", str(d / "none.json")], "not found"),
        (lambda d, img: ["replay", str(d / "text.png")], "not a valid pyvision transcript"),
    ],
    ids=[
        "missing-image", "directory", "not-an-image", "empty-file", "empty-question",
        "no-image", "unknown-option", "zero-turns", "word-turns", "negative-timeout",
        "no-key", "unknown-command", "missing-transcript", "bad-transcript",
    ],
)
def test_bad_input_exits_2_with_one_clear_line(argv_factory, expected, tmp_path, image_path,
                                               capsys, no_openai_env):
    (tmp_path / "text.png").write_text("this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "adir").mkdir()
    code = main(argv_factory(tmp_path, image_path))
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert "Traceback" not in err


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "ask" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("shutil").which("bwrap"), reason="bubblewrap is not installed")
def test_demo_in_the_sandbox(no_openai_env, capsys):
    assert main(["demo", "-q", "--sandbox"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "24"


def test_sandbox_without_bubblewrap_says_what_to_install(no_openai_env, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on this PATH
    assert main(["demo", "-q", "--sandbox"]) == 4
    out, err = capsys.readouterr()
    assert out == ""
    assert "bubblewrap" in err and "Traceback" not in err
