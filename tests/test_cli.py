"""The `pyvision` command: real runs against the loopback server, and every bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from chat_server import HTTPError, Reply
from conftest import code_reply
from PIL import Image

from pyvision_magic import Transcript
from pyvision_magic.cli import build_parser, main

DEMO_LABEL = "demo turns written by the pyvision_magic developers"


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
    # First the question and the image, as the model gets them.
    assert err.splitlines()[:2] == ["Question: How many squares?",
                                    f"  image_clue_0: squares.png (120×80 px, {image_path.stat().st_size} bytes)"]


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
        (lambda d, img: ["ask", "-i", str(img), "--frobnicate", "Q?"],
         "unrecognized arguments: --frobnicate (see 'pyvision ask --help')"),
        (lambda d, img: ["replay", "demo", "--frobnicate"], "(see 'pyvision replay --help')"),
        (lambda d, img: ["--frobnicate"], "(see 'pyvision --help')"),
        (lambda d, img: ["ask", "-i", str(img), "--max-turns", "0", "Q?"], "at least 1"),
        (lambda d, img: ["ask", "-i", str(img), "--max-turns", "many", "Q?"], "whole number"),
        (lambda d, img: ["ask", "-i", str(img), "--timeout", "-3", "Q?"], "more than 0"),
        (lambda d, img: ["ask", "-i", str(img), "Q?"], "run 'pyvision demo' to watch a recorded"),
        (lambda d, img: ["frobnicate"], "invalid choice"),
        (lambda d, img: ["replay", str(d / "none.json")], "not found"),
        (lambda d, img: ["replay", str(d / "text.png")], "not a valid pyvision transcript"),
        (lambda d, img: ["replay", "gallery:nope"], "gallery:basic_crop_zoom"),
        (lambda d, img: ["ask", "-i", str(img), "--save-images", str(d / "text.png"), "Q?"],
         "it is a file, not a folder"),
        (lambda d, img: ["ask", "-i", str(img), "--save-images", str(d / "text.png" / "x"), "Q?"],
         "Cannot save images to"),
        (lambda d, img: ["demo", "--save-images", str(d / "text.png")], "it is a file"),
        (lambda d, img: ["replay", "demo", "--save-images", str(d / "text.png")], "it is a file"),
        (lambda d, img: ["ask", "-i", str(img), "--prompt-profile", "qwen", "Q?"],
         "argument --prompt-profile: invalid choice: 'qwen'"),
        (lambda d, img: ["ask", "-i", str(img), "--system-prompt", str(d / "none.txt"), "Q?"],
         "none.txt was not found; pass the path of a text file to --system-prompt."),
        (lambda d, img: ["ask", "-i", str(img), "--system-prompt", str(d / "text.png"), "Q?"],
         "uses {{images}}, which only the pyvision-format profile can place"),
    ],
    ids=[
        "missing-image", "directory", "not-an-image", "empty-file", "empty-question",
        "no-image", "unknown-option", "unknown-replay-option", "unknown-top-option",
        "zero-turns", "word-turns", "negative-timeout",
        "no-key", "unknown-command", "missing-transcript", "bad-transcript", "unknown-shipped",
        "images-dir-is-a-file", "images-dir-under-a-file", "demo-images-dir", "replay-images-dir",
        "unknown-profile", "missing-template", "template-placeholder-for-another-profile",
    ],
)
def test_bad_input_exits_2_with_one_clear_line(argv_factory, expected, tmp_path, image_path,
                                               capsys, no_openai_env):
    (tmp_path / "text.png").write_text("this is not an image {{images}}")
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


# -- the CLI explains itself ---------------------------------------------------------

SHOW_TWO_IMAGES = (
    "plt.imshow(np.asarray(image_clue_0)); plt.show()\n"
    "display(image_clue_0.crop((0, 0, 60, 40)))"
)


def test_save_images_writes_each_tool_image_and_prints_its_path(endpoint, image_path, tmp_path,
                                                                capsys):
    endpoint.script = [code_reply(SHOW_TWO_IMAGES), code_reply("print('none')"),
                       "<answer>two</answer>"]
    folder = tmp_path / "new" / "images"  # created, parents too
    assert main(ask_args(endpoint, image_path, "--save-images", str(folder), "Q?")) == 0
    err = capsys.readouterr().err
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["turn1_image_clue_1.png", "turn1_image_clue_2.png"]
    with Image.open(folder / "turn1_image_clue_2.png") as saved:
        assert saved.size == (60, 40)
    lines = err.splitlines()
    saved_lines = [i for i, line in enumerate(lines) if line.startswith("  saved ")]
    assert [lines[i] for i in saved_lines] == [f"  saved {folder / name}" for name in files]
    # Under their turn: after turn 1's tool summary, before turn 2.
    assert lines.index("── turn 1 ──") < saved_lines[0] < lines.index("── turn 2 ──")
    assert "[tool ok in" in lines[saved_lines[0] - 1] or "│" in lines[saved_lines[0] - 1]
    assert re.search(r"; 2 images: image_clue_1, image_clue_2; [\d,]+ tokens so far[^\n]*\]", err)


def test_save_images_with_quiet_writes_the_files_silently(endpoint, image_path, tmp_path, capsys):
    endpoint.script = [code_reply("display(image_clue_0)"), "<answer>x</answer>"]
    assert main(ask_args(endpoint, image_path, "-q", "--save-images", str(tmp_path), "Q?")) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "turn1_image_clue_1.png").is_file()


def test_a_bad_images_folder_stops_before_the_session_starts(endpoint, image_path, tmp_path,
                                                             capsys):
    endpoint.script = ["<answer>x</answer>"]
    (tmp_path / "file").write_text("x")
    assert main(ask_args(endpoint, image_path, "--save-images", str(tmp_path / "file"), "Q?")) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "turn 1" not in err
    assert endpoint.requests == []


def test_replay_saves_the_recorded_images_too(no_openai_env, tmp_path, capsys):
    assert main(["replay", "demo", "--save-images", str(tmp_path)]) == 0
    # Line art stays PNG; the photo-like second image comes from the kernel as JPEG.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["turn1_image_clue_1.png",
                                                          "turn2_image_clue_2.jpg"]
    assert f"  saved {tmp_path / 'turn2_image_clue_2.jpg'}" in capsys.readouterr().err.splitlines()


def test_footers_count_turns_and_tokens_in_words(endpoint, image_path, tmp_path, capsys):
    endpoint.script = [Reply("<answer>one</answer>", prompt_tokens=1, completion_tokens=0)]
    saved = tmp_path / "s.json"
    assert main(ask_args(endpoint, image_path, "--save", str(saved), "Q?")) == 0
    assert "── answered after 1 turn, 1 token ──" in capsys.readouterr().err
    # A replay spent no tokens here: its footer says so instead of "0 tokens".
    assert main(["replay", str(saved)]) == 0
    err = capsys.readouterr().err
    assert "── answered after 1 turn, replay ──" in err and "token" not in err


def test_each_tool_line_gives_the_running_total_and_the_footer_the_cached_part(
    endpoint, tmp_path, capsys
):
    import json

    import numpy as np

    # Noise does not compress: the repeated prefix is over the 1,024 tokens caching needs.
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    endpoint.script = [Reply(code_reply("print(1)"), prompt_tokens=2000, completion_tokens=10),
                       Reply(code_reply("print(2)"), prompt_tokens=3000, completion_tokens=10),
                       Reply("<answer>one</answer>", prompt_tokens=4000, completion_tokens=5)]
    saved = tmp_path / "s.json"
    assert main(ask_args(endpoint, tmp_path / "noise.png", "--save", str(saved), "Q?")) == 0
    lines = capsys.readouterr().err.splitlines()
    usage = json.loads(saved.read_text())["usage"]
    cached = [t["usage"]["cached_tokens"] for t in json.loads(saved.read_text())["turns"]]
    assert cached[0] == 0 and cached[1] >= 1024 and usage["cached_tokens"] == sum(cached)
    tools = [line for line in lines if line.startswith("[tool ok")]
    assert tools[0].endswith("; 2,010 tokens so far]")
    assert tools[1].endswith(f"; 5,020 tokens so far ({cached[1]:,} cached)]")
    assert f"── answered after 3 turns, 9,025 tokens ({usage['cached_tokens']:,} cached) ──" in lines


def test_demo_replay_prints_question_image_and_next_steps(no_openai_env, capsys):
    assert main(["demo"]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0] == f"Replaying a saved session of {DEMO_LABEL}; the tools run for real here."
    assert lines[1:3] == ["Question: How many coins are in this photo?",
                          "  image_clue_0: coins.png (384×303 px, 73 KB)"]
    assert "── answered after 3 turns, replay ──" in err
    assert out.splitlines()[-1] == "24"
    next_steps = lines[-1]
    assert next_steps.startswith("Next: set OPENAI_API_KEY (or pass --base-url URL) to ask your")
    assert [line for line in lines if line.startswith("Next")] == [next_steps]  # one line
    for hint in ("--save run.json", "--save-images DIR", "%load_ext pyvision_magic",
                 "%%pyvision -i IMAGE", "notebooks/quickstart.ipynb"):
        assert hint in next_steps


def test_demo_with_a_key_says_it_goes_live_first(endpoint, capsys):
    endpoint.script = ["<answer>24 coins</answer>"]
    assert main(["demo", "--base-url", endpoint.base_url, "--model", "test-model",
                 "--save", "/dev/null"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        f"Asking test-model at {endpoint.base_url}: the shipped demo question, live "
        "(leave out --base-url and unset OPENAI_API_KEY for the offline replay)."
    )
    assert lines[1] == "Question: How many coins are in this photo?"
    assert lines[-1].startswith('Next: pyvision ask -i YOUR_IMAGE "your question"')
    assert "--save run.json" not in lines[-1]  # it was given
    assert "--save-images DIR" in lines[-1]


def test_demo_live_from_the_environment_names_the_variable(endpoint, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_BASE_URL", endpoint.base_url)
    monkeypatch.setenv("PYVISION_MODEL", "test-model")
    endpoint.script = ["<answer>24</answer>"]
    assert main(["demo"]) == 0
    assert capsys.readouterr().err.splitlines()[0].endswith(
        "live (unset OPENAI_BASE_URL and OPENAI_API_KEY for the offline replay).")


def test_replaying_a_saved_replay_keeps_the_original_label(no_openai_env, tmp_path, capsys):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert main(["demo", "-q", "--save", str(first)]) == 0
    assert main(["replay", "-q", str(first), "--save", str(second)]) == 0
    capsys.readouterr()
    assert Transcript.load(first).model == f"replay of {DEMO_LABEL}"
    assert Transcript.load(second).model == f"replay of {DEMO_LABEL}"
    assert main(["replay", str(second)]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"Replaying a saved session of {DEMO_LABEL}; the tools run for real here."
    assert "replay of" not in err


def test_replay_takes_shipped_names(no_openai_env, capsys):
    assert main(["replay", "-q", "gallery:basic_crop_zoom"]) == 0
    assert capsys.readouterr().out.strip()
    help_text = build_parser()._subparsers._group_actions[0].choices["replay"].format_help()
    assert "demo" in help_text and "gallery:basic_crop_zoom" in help_text


def test_every_command_has_a_description(capsys):
    for command in ("ask", "replay", "demo"):
        assert main([command, "--help"]) == 0
        _usage, _, rest = capsys.readouterr().out.partition("\n\n")
        assert rest.split("\n\n")[0].strip()[0].isupper(), command  # a sentence, not options
    assert main(["demo", "--help"]) == 0
    assert "replays a shipped session offline" in " ".join(capsys.readouterr().out.split())


def test_the_readme_lists_every_ask_option():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("`pyvision ask` options:"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    ask = build_parser()._subparsers._group_actions[0].choices["ask"]
    shown = {"--help", "--image"}  # --image is in the examples above it
    missing = [a.option_strings for a in ask._actions if a.option_strings
               and not shown & set(a.option_strings)
               and not any(re.search(rf"`{re.escape(o)}[ `]", paragraph) for o in a.option_strings)]
    assert missing == []


def test_ask_with_the_pyvision_format_profile(endpoint, image_path, capsys):
    endpoint.script = ["Counted.\n<answer>\n\\boxed{'2'}\n</answer>"]
    assert main(ask_args(endpoint, image_path, "--prompt-profile", "pyvision-format", "-q",
                         "How many squares?")) == 0
    assert capsys.readouterr().out == "2\n"
    [message] = endpoint.chat_requests[0].body["messages"]
    assert message["role"] == "user" and message["content"][0]["text"] == "<image_clue_0>"
