"""The `pyvision` command when things go wrong: one line, the documented exit code,
and nothing a model or a tool writes can drive the user's terminal.

The command runs as a real process against the loopback chat server.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chat_server import HTTPError
from conftest import code_reply
from PIL import Image

from pyvision_magic import _retry, cli
from pyvision_magic._model import Model, ModelReply
from pyvision_magic._records import Output
from pyvision_magic._transcript import Turn

# Sequences that act on a terminal: clipboard (OSC 52), window title (OSC 0),
# cursor movement and screen clearing (CSI), a C1 CSI, the bell.
HOSTILE = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;pwned\x07\x1b[2J\x1b[1;1H\x9b31m\x07"


def run_cli(*argv: str, fsize: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m pyvision_magic argv``, with bytes out, as a user's shell would run it."""

    def limit_file_size() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

    env = {**os.environ, "OPENAI_API_KEY": "test-key"}
    return subprocess.run([sys.executable, "-m", "pyvision_magic", *argv], capture_output=True,
                          timeout=timeout, env=env, preexec_fn=limit_file_size)


def ask(server: Any, image: Path, *extra: str) -> list[str]:
    return ["ask", "--base-url", server.base_url, "--model", "test-model", "-i", str(image), *extra]


def assert_no_terminal_controls(data: bytes) -> None:
    assert b"\x1b" not in data and b"\x07" not in data
    assert "\x9b".encode() not in data  # C1 CSI, as UTF-8


@pytest.fixture
def noisy_image(tmp_path: Path) -> Path:
    """A 120 KB PNG (random pixels do not compress)."""
    import numpy as np

    pixels = (np.random.default_rng(0).random((200, 200, 3)) * 255).astype("uint8")
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path)
    return path


# -- exit codes --------------------------------------------------------------------


def test_a_kernel_failure_mid_session_exits_4_with_one_line(chat_server, noisy_image, no_openai_env):
    # Files over 64 KB cannot be written (as on a full disk): the parent cannot
    # write the input image into the kernel's scratch folder.
    chat_server.script = [code_reply("print(1)"), "<answer>unreachable</answer>"]
    proc = run_cli(*ask(chat_server, noisy_image, "-q", "Q?"), fsize=64 * 1024)
    err = proc.stderr.decode()
    assert proc.returncode == cli.EXIT_KERNEL, err
    assert err.count("\n") == 1 and err.startswith("pyvision: kernel error: The child kernel failed")
    assert "File too large" in err and "Traceback" not in err
    assert proc.stdout == b""


def test_a_kernel_failure_shows_progress_and_keeps_the_transcript(chat_server, noisy_image,
                                                                  no_openai_env):
    chat_server.script = [code_reply("print(1)")]
    proc = run_cli(*ask(chat_server, noisy_image, "--json", "Q?"), fsize=64 * 1024)
    assert proc.returncode == cli.EXIT_KERNEL
    err = proc.stderr.decode()
    assert "── error after 1 turn, " in err and "Traceback" not in err
    assert err.splitlines()[-1].startswith("pyvision: kernel error:")
    printed = json.loads(proc.stdout)
    assert printed["status"] == "error" and "File too large" in printed["error"]
    assert printed["turns"][0]["code"] == "print(1)"


def test_an_unexpected_exception_is_one_line_with_exit_5(monkeypatch, capsys, image_path,
                                                         no_openai_env):
    async def broken_handler(args: Any) -> int:
        raise RuntimeError("something\nunforeseen \x1b]0;title\x07")

    monkeypatch.setattr(cli, "_ask", broken_handler)
    assert cli.main(["ask", "-i", str(image_path), "Q?"]) == cli.EXIT_INTERNAL
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("pyvision: internal error: RuntimeError: something unforeseen ^[]0;title^G")
    assert "please report it" in err


class BuggyModel(Model):
    """A model object that fails the way a bug would (not a ModelError)."""

    name = "buggy"

    async def complete(self, messages: Any, *, stop: Any = None, on_delta: Any = None,
                       cache_key: Any = None) -> ModelReply:
        raise KeyError("choices")

    async def aclose(self) -> None:
        raise OSError("the connection pool is gone")


def test_an_unexpected_failure_inside_the_session_exits_5(monkeypatch, capsys, image_path,
                                                          no_openai_env):
    monkeypatch.setattr(cli, "make_model", lambda args: BuggyModel())
    assert cli.main(["ask", "-q", "-i", str(image_path), "Q?"]) == cli.EXIT_INTERNAL
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and "Traceback" not in err
    # The failed clean-up is a warning; how the session ended is the last word.
    assert lines == [
        "pyvision: warning: the model client did not close cleanly "
        "(OSError: the connection pool is gone)",
        "pyvision: internal error: pyvision failed unexpectedly (KeyError: 'choices').",
    ]


def test_an_unwritable_save_path_exits_2(chat_server, image_path, tmp_path, no_openai_env):
    chat_server.script = ["<answer>yes</answer>"]
    proc = run_cli(*ask(chat_server, image_path, "-q", "--save", str(tmp_path), "Q?"))
    err = proc.stderr.decode()
    assert proc.returncode == cli.EXIT_USAGE and err.count("\n") == 1
    assert "Cannot write the transcript" in err and "Traceback" not in err


# -- retries: announced while they wait, as many and as long as before ---------------

RETRY_LINE = re.compile(r"^  (.+), retry (\d)/4 in (\d+\.\d) s$")


def retry_lines(err: str) -> list[tuple[str, int, float]]:
    return [(m[1], int(m[2]), float(m[3])) for m in map(RETRY_LINE.match, err.splitlines()) if m]


def test_server_errors_are_retried_with_a_line_per_wait(chat_server, image_path, capsys,
                                                        no_openai_env):
    chat_server.script = [HTTPError(503, "busy"), HTTPError(429, "slow down"), "<answer>ok</answer>"]
    assert cli.main([*ask(chat_server, image_path, "Q?")]) == cli.EXIT_ANSWERED
    err = capsys.readouterr().err
    assert retry_lines(err) == [("endpoint answered HTTP 503", 1, 0.0),
                                ("endpoint rate-limited (HTTP 429)", 2, 0.0)]
    lines = err.splitlines()
    assert lines.index("── turn 1 ──") < lines.index("  endpoint answered HTTP 503, retry 1/4 in 0.0 s")
    assert len(chat_server.chat_requests) == 3


def test_the_announced_wait_is_the_wait(chat_server, image_path, capsys, no_openai_env):
    chat_server.script = [HTTPError(500, "oops", headers={"retry-after": "1"}), "<answer>ok</answer>"]
    assert cli.main([*ask(chat_server, image_path, "Q?")]) == cli.EXIT_ANSWERED
    assert retry_lines(capsys.readouterr().err) == [("endpoint answered HTTP 500", 1, 1.0)]
    first, second = chat_server.chat_requests
    assert 0.95 <= second.received_at - first.finished_at < 3


def test_the_retry_line_is_on_screen_while_it_waits(chat_server, image_path, no_openai_env):
    """As a user's terminal sees it: the line comes when the wait starts, not after it."""
    import threading
    import time

    chat_server.script = [HTTPError(503, "busy", headers={"retry-after": "2"}), "<answer>ok</answer>"]
    argv = [sys.executable, "-m", "pyvision_magic", *ask(chat_server, image_path, "Q?")]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, "OPENAI_API_KEY": "test-key"}) as proc:
        seen: list[tuple[float, str]] = []
        reader = threading.Thread(target=lambda: seen.extend(
            (time.monotonic(), line.decode()) for line in proc.stderr), daemon=True)
        reader.start()
        assert proc.wait(timeout=120) == cli.EXIT_ANSWERED
        reader.join(timeout=30)
    [(shown_at, _)] = [(at, line) for at, line in seen if RETRY_LINE.match(line.rstrip("\n"))]
    first, second = chat_server.chat_requests
    assert first.finished_at <= shown_at < second.received_at - 1.5, \
        f"the retry line came {second.received_at - shown_at:.2f} s before the retry, not ~2 s"


def test_an_endpoint_that_keeps_failing_gets_four_retries_then_exit_3(chat_server, image_path,
                                                                      capsys, no_openai_env):
    chat_server.script = [HTTPError(502, "bad gateway")] * 5
    assert cli.main([*ask(chat_server, image_path, "Q?")]) == cli.EXIT_MODEL
    err = capsys.readouterr().err
    assert [n for _, n, _ in retry_lines(err)] == [1, 2, 3, 4]
    assert len(chat_server.chat_requests) == 5
    assert err.splitlines()[-1].startswith("pyvision: model error:") and "HTTP 502" in err


@pytest.mark.parametrize("step", [
    HTTPError(500, "no", headers={"x-should-retry": "false"}),
    HTTPError(503, "later", headers={"retry-after": "3600"}),  # too long to wait for
    HTTPError(404, "no such model"),
], ids=["server-says-no", "retry-after-an-hour", "client-error"])
def test_what_must_not_be_retried_fails_at_once(chat_server, image_path, capsys, no_openai_env,
                                                step):
    chat_server.script = [step, "<answer>never</answer>"]
    assert cli.main([*ask(chat_server, image_path, "Q?")]) == cli.EXIT_MODEL
    assert retry_lines(capsys.readouterr().err) == []
    assert len(chat_server.chat_requests) == 1


def test_an_unreachable_endpoint_is_announced_each_retry(image_path, capsys, monkeypatch,
                                                          no_openai_env):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    # The real backoff (0.5 s doubling) would make this test 7 s long.
    monkeypatch.setattr(_retry, "_INITIAL_DELAY", 0.01)
    argv = ["ask", "--base-url", f"http://127.0.0.1:{port}/v1", "-i", str(image_path), "Q?"]
    assert cli.main(argv) == cli.EXIT_MODEL
    err = capsys.readouterr().err
    assert [(why, n) for why, n, _ in retry_lines(err)] == [("endpoint unreachable", n) for n in (1, 2, 3, 4)]
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("pyvision: model error: Cannot reach the model endpoint")


def test_backoff_doubles_from_half_a_second_to_eight(monkeypatch):
    import openai

    monkeypatch.setattr(_retry.random, "random", lambda: 0.0)  # no jitter
    error = openai.APIConnectionError(request=None)  # type: ignore[arg-type]
    assert [_retry.retry_delay(error, n) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 8]
    assert sum(_retry.retry_delay(error, n) for n in range(1, 5)) == 7.5  # 4 retries, as openai


# -- saved images ------------------------------------------------------------------


def test_saved_image_names_cannot_leave_the_folder(tmp_path):
    stream = io.StringIO()
    progress = cli.ConsoleProgress(stream)
    saver = cli.ImageSaver(tmp_path, report=progress.image_saved, warn=progress._write)
    png = __import__("base64").b64encode(b"\x89PNG fake").decode()
    turn = Turn(index=1, text="", code="x", exec_status="ok", outputs=[
        Output(kind="image", data=png, mime="image/png", variable=f"../../evil{HOSTILE}"),
        Output(kind="image", data=png, mime="image/jpeg", variable=None),
        Output(kind="image", data="not base64!", mime="image/png", variable="image_clue_3"),
    ])
    saver.outputs(turn)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[1] == "turn2_image_1.jpg"
    assert re.fullmatch(r"turn2_evil_[A-Za-z0-9_]+\.png", names[0])
    shown = stream.getvalue()
    assert_no_terminal_controls(shown.encode())
    assert "could not save" in shown and "turn2_image_clue_3.png" in shown


def test_a_full_disk_while_saving_images_is_a_warning_not_a_lost_answer(chat_server, image_path,
                                                                        tmp_path, no_openai_env):
    noise = "Image.fromarray((np.random.default_rng(0).random((300, 300, 3)) * 255).astype('uint8'))"
    chat_server.script = [code_reply(f"display({noise})"), "<answer>yes</answer>"]
    folder = tmp_path / "images"
    # Files over 64 KB cannot be written (as on a full disk): the 260 KB image cannot be saved.
    proc = run_cli(*ask(chat_server, image_path, "-q", "--save-images", str(folder), "Q?"),
                   fsize=64 * 1024)
    err = proc.stderr.decode()
    assert proc.returncode == cli.EXIT_ANSWERED, err
    assert err.startswith("pyvision: warning: could not save ") and "File too large" in err
    assert proc.stdout == b"yes\n"


# -- terminal control sequences ----------------------------------------------------


def test_model_text_and_tool_output_cannot_drive_the_terminal(chat_server, image_path,
                                                              no_openai_env):
    tool = (
        f"print({HOSTILE!r} + 'tool says hi')\n"
        f"import sys, os\nsys.stderr.write({HOSTILE!r} + 'on stderr\\n')\n"
        f"os.write(1, {HOSTILE.encode()!r} + b'from fd 1\\n')"
    )
    chat_server.script = [
        code_reply(tool, before=f"Let me look.{HOSTILE} Moving on."),
        f"Done{HOSTILE}.\n<answer>two{HOSTILE} squares</answer>",
    ]
    proc = run_cli(*ask(chat_server, image_path, "Q?"))
    assert proc.returncode == cli.EXIT_ANSWERED, proc.stderr.decode()
    assert_no_terminal_controls(proc.stdout)
    assert_no_terminal_controls(proc.stderr)
    err, out = proc.stderr.decode(), proc.stdout.decode()
    # The model's text is shown, its controls made visible; the tool's are stripped.
    assert "Let me look.^[]52;c;cm0gLXJmIH4=^G^[]0;pwned^G^[[2J^[[1;1H\\x9b31m^G Moving on." in err
    tool_lines = [line for line in err.splitlines() if line.startswith("  │ ")]
    assert {"  │ \\x9b31mfrom fd 1", "  │ \\x9b31mon stderr", "  │ \\x9b31mtool says hi"} <= set(tool_lines)
    assert out.splitlines()[-1].startswith("two^[]52;c;") and out.rstrip().endswith("squares")


def test_json_output_escapes_what_json_leaves_raw(chat_server, image_path, no_openai_env):
    answer = f"two{HOSTILE} squares \ud800"
    chat_server.script = [f"<answer>{answer}</answer>"]
    proc = run_cli(*ask(chat_server, image_path, "-q", "--json", "Q?"))
    assert proc.returncode == cli.EXIT_ANSWERED, proc.stderr.decode()
    assert_no_terminal_controls(proc.stdout)
    assert json.loads(proc.stdout)["answer"] == answer  # still exactly the transcript


def test_an_answer_with_a_lone_surrogate_is_printed(chat_server, image_path, no_openai_env):
    chat_server.script = ["<answer>caf\ud800e</answer>"]
    proc = run_cli(*ask(chat_server, image_path, "-q", "Q?"))
    assert proc.returncode == cli.EXIT_ANSWERED, proc.stderr.decode()
    assert proc.stdout.decode() == "caf\ufffde\n"


def test_replayed_outputs_and_notes_are_shown_escaped():
    stream = io.StringIO()
    progress = cli.ConsoleProgress(stream)
    turn = Turn(index=0, text="", code="x", exec_status="ok", exec_seconds=0.1,
                note=f"a note{HOSTILE}",
                outputs=[Output(kind="text", text=f"saved{HOSTILE}\r\nline\rover\n", stream="stdout"),
                         Output(kind="image", data="AA", mime="image/png",
                                variable=f"image_clue_1{HOSTILE}")])
    progress.outputs(turn)
    progress.text_delta(turn, HOSTILE)
    shown = stream.getvalue()
    assert_no_terminal_controls(shown.encode())
    assert "\r" not in shown
    assert "  │ saved^[]52;c;" in shown and "  │ line^Mover\n" in shown
    assert "note: a note^[]52;c;" in shown and "1 image: image_clue_1^[]52;c;" in shown


@pytest.mark.parametrize(
    "raw,shown",
    [
        ("\x1b[31m", "^[[31m"),
        ("a\r\nb\rc", "a\nb^Mc"),
        ("\x00\x08\x7f\x9b\x85", "^@^H^?\\x9b\\x85"),
        ("tab\tnewline\n", "tab\tnewline\n"),
        ("\ud800", "\ufffd"),
        ("ünïcödé ✓ 漢字", "ünïcödé ✓ 漢字"),
    ],
)
def test_terminal_safe(raw, shown):
    assert cli.terminal_safe(raw) == shown
