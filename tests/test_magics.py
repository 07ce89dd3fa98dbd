"""The magics in a real IPython shell (no kernel: progress goes to stderr).

Every bad input of ``%%pyvision`` is a one-line ``UsageError``; ``-i`` takes
variables of every supported kind, files and URLs; settings come from
``%config``, the environment and per-cell options.
"""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from IPython.core.error import UsageError

from conftest import code_reply
from pyvision_magic._errors import ImageInputError
from pyvision_magic._image_sources import resolve_images


@pytest.fixture
def shell(no_openai_env):
    from IPython.core.interactiveshell import InteractiveShell

    from pyvision_magic.magics import load_ipython_extension, unload_ipython_extension

    ip = InteractiveShell.instance()
    ip.run_line_magic("config", "PyVision.use_pool = False")
    load_ipython_extension(ip)
    yield ip
    unload_ipython_extension(ip)
    for name in ("img", "r", "data", "nums", "lst"):
        ip.user_ns.pop(name, None)


def _png_bytes(color="red", size=(30, 20)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("line, cell, message", [
    ("--nope", "q", "unrecognized arguments: --nope"),
    ("-i x --max-turns many", "q", "argument --max-turns: invalid int value"),
    ("-i x --max-turns 0", "q", "--max-turns must be at least 1"),
    ("-i x --timeout -3", "q", "--timeout must be more than 0 seconds"),
    ("-i no_such_name", "q", "there is no variable 'no_such_name'"),
    ("-i /no/such/file.png", "q", "Image file not found: /no/such/file.png"),
    ("-i data", "q", "Cannot use a dict as an image"),
    ("-i lst", "q", "the list is empty"),
    ("-i nums", "q", "-i nums:"),
    ("-i img.nope", "q", "evaluating it failed (AttributeError"),
    ("-i img", "   ", "The question is empty"),
    ("", "q", "No image: add -i"),
    ("-i img -o 'not a name'", "q", "-o needs a Python variable name"),
    ("--replay /no/such.json", "x", "Transcript file not found"),
    ("--replay {bad_json}", "x", "is not a valid pyvision transcript"),
    ("--replay {good_json} -i img", "x", "--replay takes the images from the saved session"),
    ("--replay gallery:nope", "x", "gallery:basic_crop_zoom"),  # the shipped names are listed
    ("-i img --model m", "q", "OPENAI_API_KEY"),
    ("-i img --prompt-profile qwen", "q", "Unknown prompt profile 'qwen'; use one of: default, "
     "pyvision-format."),
    ("-i img --system-prompt /no/such.txt", "q", "/no/such.txt was not found"),
])
def test_bad_input_is_a_one_line_usage_error(shell, tmp_path, line, cell, message):
    from PIL import Image

    shell.user_ns.update(img=Image.new("RGB", (8, 8)), data={"a": 1}, lst=[],
                         nums=np.array(["a", "b"]))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    good = tmp_path / "good.json"
    good.write_text('{"version": 1, "question": "q", "turns": [{"index": 0, "text": "x"}]}')
    line = line.format(bad_json=bad, good_json=good)
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("pyvision", line, cell)
    text = str(info.value)
    assert message in text
    assert "\n" not in text.strip(), "one line"
    assert info.value.__cause__ is None or info.value.__suppress_context__


def test_sandbox_runs_the_tools_in_the_sandboxed_kernel(shell, make_chat_server, image_path):
    from pyvision_magic.kernel._child import ChildKernel

    if "sandbox" not in ChildKernel.class_trait_names():
        with pytest.raises(UsageError, match="--sandbox needs a child kernel with sandbox"):
            shell.run_cell_magic("pyvision", f"-i {image_path} --sandbox", "q")
        return
    server = make_chat_server([code_reply("print('in the box')"), "<answer>1</answer>"])
    try:
        shell.run_cell_magic("pyvision", f"-i {image_path} --sandbox --base-url "
                             f"{server.base_url} -o r", "q")
    except UsageError as exc:  # no bubblewrap here: said in one line
        assert "bubblewrap" in str(exc) or "bwrap" in str(exc)
        return
    r = shell.user_ns["r"]
    assert r.kernel.sandbox and r.answer == "1"
    assert r.transcript.turns[0].outputs[0].text == "in the box\n"


def test_the_help_lists_every_option(shell):
    doc = shell.find_cell_magic("pyvision").__doc__
    for option in ("-i IMAGE", "--bgr", "--model", "--base-url", "--max-turns", "--timeout",
                   "--save", "--sandbox", "-o NAME", "--replay FILE", "%pyvision kernels",
                   "--prompt-profile NAME", "--system-prompt FILE",
                   "%pyvision export"):
        assert option in doc


def test_image_variables_of_every_kind(shell, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 255  # red in RGB order, blue in OpenCV's BGR
    fig, ax = plt.subplots(figsize=(2, 1))
    path = tmp_path / "p.png"
    path.write_bytes(_png_bytes("blue"))
    ns = {"pil": Image.new("RGB", (5, 4), "green"), "arr": rgb, "fig": fig, "ax": ax,
          "raw": _png_bytes(), "many": [rgb, _png_bytes()], "where": str(path),
          "obj": type("O", (), {"im": rgb})(), "frames": {"a": rgb}}
    images = resolve_images(["pil", "arr", "fig", "ax", "raw", "many", "where", "obj.im",
                             "frames['a']", str(path)], ns)
    assert len(images) == 11
    assert images[0].name == "pil" and (images[0].width, images[0].height) == (5, 4)
    assert images[5].name == "many[0]" and images[6].name == "many[1]"
    plt.close(fig)

    def red(image):
        return Image.open(io.BytesIO(image.data)).convert("RGB").getpixel((0, 0))

    assert red(resolve_images(["arr"], ns)[0]) == (255, 0, 0)
    assert red(resolve_images(["arr"], ns, bgr=True)[0]) == (0, 0, 255)
    with pytest.raises(ImageInputError, match="no calls"):
        resolve_images(["pil.copy()"], ns)


class _ImageHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/ok.png":
            body, kind = _png_bytes(), "image/png"
        elif self.path == "/page":
            body, kind = b"<html>hi</html>", "text/html"
        elif self.path == "/big.png":
            body, kind = b"x" * 5000, "image/png"
        elif self.path == "/slow.png":
            threading.Event().wait(3)
            body, kind = _png_bytes(), "image/png"
        elif self.path == "/garbage.png":
            body, kind = b"not an image at all", "image/png"
        else:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass


@pytest.fixture
def image_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_image_urls(shell, image_server):
    image, = resolve_images([f"{image_server}/ok.png"], {})
    assert image.name == "ok.png" and image.width == 30
    cases = [
        ("/missing.png", {}, "answered HTTP 404"),
        ("/page", {}, "returned text/html, not an image"),
        ("/big.png", {"max_url_bytes": 1000}, "over the 0.000953674 MiB limit"),
        ("/slow.png", {"url_timeout": 0.5}, "did not answer within 0.5 s"),
        ("/garbage.png", {}, "did not return an image that can be decoded"),
    ]
    for path, options, message in cases:
        with pytest.raises(ImageInputError, match=message.replace(".", r"\.")):
            resolve_images([image_server + path], {}, **options)
    # Through the magic: the same errors are one-line usage errors.
    with pytest.raises(UsageError, match="answered HTTP 404"):
        shell.run_cell_magic("pyvision", f"-i {image_server}/missing.png", "q")
    with pytest.raises(UsageError, match="cannot be reached"):
        shell.run_cell_magic("pyvision", "-i http://127.0.0.1:9/x.png", "q")


def test_settings_come_from_config_env_and_the_cell(shell, monkeypatch, capsys):
    magics = shell.magics_manager.registry["PyVisionMagics"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert magics._make_model().model == "gpt-4.1"
    monkeypatch.setenv("PYVISION_MODEL", "from-env")
    assert magics._make_model().model == "from-env"
    shell.run_line_magic("config", 'PyVision.model = "from-config"')
    try:
        assert magics.settings.model == "from-config"
        assert magics._make_model().model == "from-config"
        assert magics._make_model("per-cell").model == "per-cell"
        shell.run_line_magic("pyvision", "")
        out = capsys.readouterr().out
        assert "from-config  (config)" in out and "OPENAI_API_KEY  (the variable is set)" in out
        assert "sk-test" not in out
    finally:
        shell.run_line_magic("config", "PyVision.model = None")


def test_a_session_from_the_terminal_and_the_line_magic(shell, make_chat_server, image_path,
                                                        tmp_path, capsys):
    server = make_chat_server([code_reply("print('hi from the tool')"), "<answer>2</answer>"])
    saved = tmp_path / "t.json"
    shell.user_ns["img"] = str(image_path)
    shell.run_cell_magic("pyvision", f"-i img --base-url {server.base_url} -o r --save {saved}",
                         "How many squares? {x} $y")
    r = shell.user_ns["r"]
    assert r.status == "answered" and r.answer == "2" and r.kernel.pid
    assert r.transcript.question == "How many squares? {x} $y"
    captured = capsys.readouterr()
    assert "hi from the tool" in captured.err and "Answer: 2" in captured.out
    assert saved.exists()

    assert r.rerun(0, "print(40 + 2)").outputs[0].text == "42\n"
    shell.run_line_magic("pyvision", "kernels")
    assert f"kernel pid {r.kernel.pid}" in capsys.readouterr().out
    shell.run_line_magic("pyvision", "restart 1")
    shell.run_line_magic("pyvision", "stop all")
    assert r.kernel is None
    # A Run after the kernel was shut down starts a new one and replays the turns before.
    assert r.rerun(0).outputs[0].text == "42\n"
    with pytest.raises(UsageError, match="unknown command 'frobnicate'"):
        shell.run_line_magic("pyvision", "frobnicate")
    with pytest.raises(UsageError, match="no session 7"):
        shell.run_line_magic("pyvision", "stop 7")
    shell.run_line_magic("pyvision", f"export {tmp_path / 'x.ipynb'}")
    assert (tmp_path / "x.ipynb").exists()
    # The images Copy to cell loads: the inputs, then what the turns before bound.
    (image,) = shell.run_line_magic("pyvision", "images 1 1")
    assert image.size == (120, 80)
    assert len(shell.run_line_magic("pyvision", "images 1")) == 1
    for bad, message in [("images", "takes a session number"), ("images one", "takes a session"),
                         ("images 1 2 3", "takes a session"), ("images 9", "no session 9")]:
        with pytest.raises(UsageError, match=message):
            shell.run_line_magic("pyvision", bad)
    shell.run_line_magic("pyvision", f"load {saved} -o back")
    assert shell.user_ns.pop("back").answer == "2"


def test_unload_shuts_the_kernels_down(no_openai_env, make_chat_server, image_path):
    from IPython.core.interactiveshell import InteractiveShell

    from pyvision_magic.magics import load_ipython_extension, unload_ipython_extension

    ip = InteractiveShell.instance()
    ip.run_line_magic("config", "PyVision.use_pool = False")
    load_ipython_extension(ip)
    server = make_chat_server([code_reply("x = 1"), "<answer>1</answer>"])
    ip.run_cell_magic("pyvision", f"-i {image_path} --base-url {server.base_url} -o r", "q")
    kernel = ip.user_ns.pop("r").kernel
    assert kernel.is_ready
    unload_ipython_extension(ip)
    assert not kernel.is_ready
    assert "pyvision" not in ip.magics_manager.magics["cell"]


def test_the_line_is_expanded_once(shell, tmp_path):
    # "$$" is IPython's escape for a literal "$"; expanding twice would turn the
    # resulting "$b" into the value of b.
    from importlib import resources

    shipped = resources.files("pyvision_magic") / "data" / "coins_session.json"
    shell.user_ns["b"] = "WRONG"
    try:
        shell.run_cell_magic("pyvision", f"--replay {shipped} --save {tmp_path}/a$$b-1.json", "q")
    finally:
        shell.user_ns.pop("b", None)
    assert [p.name for p in tmp_path.glob("*.json")] == ["a$b-1.json"]


def test_unsandboxed_tools_are_announced_once_per_notebook(shell, capsys):
    from importlib import resources

    shipped = str(resources.files("pyvision_magic") / "data" / "coins_session.json")
    for _ in range(2):
        shell.run_cell_magic("pyvision", f"--replay {shipped} --no-sandbox -o r", "replayed")
        assert shell.user_ns["r"].answer == "24"
    err = capsys.readouterr().err
    assert err.count("pyvision: tools run unsandboxed: the sandbox is turned off") == 1
    with pytest.raises(UsageError, match="--sandbox and --no-sandbox contradict"):
        shell.run_cell_magic("pyvision", f"--replay {shipped} --sandbox --no-sandbox", "replayed")


def test_a_notebook_saved_by_the_first_session_view_still_loads(shell, tmp_path):
    """The ipywidgets view of 0.1 saved its session the same way: the widget output
    (a long repr as text/plain) and the static copy whose metadata holds the transcript."""
    import json

    from pyvision_magic._render import compact_transcript, render_html
    from pyvision_magic._transcript import Transcript

    t = Transcript.load("demo")
    old = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{
        "cell_type": "code", "execution_count": 2, "id": "a1", "metadata": {},
        "source": "%%pyvision --replay demo -o r\nq",
        "outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {
                "application/vnd.jupyter.widget-view+json": {
                    "version_major": 2, "version_minor": 0, "model_id": "0f" * 16},
                "text/plain": "SessionView(children=(HTML(value='<style>.pyvision-view {..."}},
            {"output_type": "display_data", "data": {
                "text/html": render_html(t, uid="0123456789ab"), "text/plain": "pyvision: ..."},
             "metadata": {"pyvision": {"version": 1, "transcript": compact_transcript(t),
                                       "forks": []}}},
        ]}]}
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(old))
    shell.run_line_magic("pyvision", f"load {path} -o back")
    back = shell.user_ns.pop("back")
    assert back.answer == "24" and len(back.transcript.turns) == 3
    assert back.rerun(0).exec_status == "ok", "its tools run again in a new kernel"


def test_prompt_profile_from_config_and_the_cell(shell, make_chat_server, image_path):
    server = make_chat_server(["<answer>\\boxed{'2'}</answer>"] * 2)
    shell.user_ns["img"] = str(image_path)
    shell.run_line_magic("config", 'Session.prompt_profile = "pyvision-format"')
    try:
        shell.run_cell_magic("pyvision", f"-i img --base-url {server.base_url} -o r", "How many?")
        assert shell.user_ns["r"].answer == "2"
        shell.run_cell_magic("pyvision", f"-i img --base-url {server.base_url} -o r "
                             "--prompt-profile default", "How many?")
    finally:
        shell.run_line_magic("config", 'Session.prompt_profile = "default"')
    configured, flagged = (r.body["messages"] for r in server.chat_requests)
    assert [m["role"] for m in configured] == ["user"]
    assert configured[0]["content"][0]["text"] == "<image_clue_0>"
    assert [m["role"] for m in flagged] == ["system", "user"], "the cell's option wins"
