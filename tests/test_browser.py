"""A real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

Opens a notebook, runs a ``%%pyvision`` cell against the loopback chat server,
sees the turn cards stream in, edits the code of a turn, clicks Run and sees the
new output. On failure a screenshot is saved in the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import code_reply

CHROMIUM = os.environ.get("PYVISION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage",
]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} "
                       "(apt-get install chromium)"),
    pytest.mark.timeout(150),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter_lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 with its own settings; yields (url, token, root)."""
    pytest.importorskip("jupyterlab")
    root = tmp_path / "root"
    root.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PYVISION_MODEL"):
        env.pop(name, None)
    # The kernel imports pyvision_magic from this checkout, installed or not.
    project = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH")]))
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
    # Keep the JupyterLab "news" toast out of the way.
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}'
    )
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
         "--LabApp.news_url=", "--ServerApp.allow_root=True",
         f"--IdentityProvider.token={token}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n"
                                       + (tmp_path / "lab.log").read_text()[-3000:])
                time.sleep(0.3)
        yield url, token, root
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _notebook(path: Path, base_url: str, image: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"%load_ext pyvision_magic\n%config PyVision.base_url = {base_url!r}\n"
            "%config PyVision.replay_delay = 0.0"
        ),
        nbformat.v4.new_code_cell(f"%%pyvision -i {image} -o result\nHow many squares are there?"),
        nbformat.v4.new_code_cell(f"%%pyvision -i {image} -o slow\nWait forever."),
        nbformat.v4.new_code_cell("print('slow session:', slow.status)"),
    ]
    nbformat.write(nb, str(path))


def test_run_a_session_edit_a_turn_and_run_it_again(jupyter_lab, make_chat_server, image_path,
                                                    tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    url, token, root = jupyter_lab
    def reply(body):
        messages = json.dumps(body["messages"])
        if "Wait forever" in messages:
            return code_reply("import time\ntime.sleep(120)")
        if not any(m["role"] == "assistant" for m in body["messages"]):
            return code_reply("print('red pixels', (np.asarray(image_clue_0)[..., 0] > 200).sum())")
        return "Two squares: a red one and a blue one.\n<answer>2</answer>"

    server = make_chat_server([], default=reply)
    image = root / "squares.png"
    shutil.copy(image_path, image)
    _notebook(root / "demo.ipynb", server.base_url, image)

    with playwright.sync_playwright() as p:
        # Playwright gives the browser a fresh profile directory of its own.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        try:
            page.goto(f"{url}/lab/tree/demo.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=45_000)
            # Wait for the kernel, then run both cells.
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=45_000)
            page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
            page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click()

            cards = page.locator(".pyvision-card")
            cards.nth(1).wait_for(timeout=45_000)
            page.locator(".pyvision-answer").wait_for(timeout=30_000)
            assert "2" in page.locator(".pyvision-answer").inner_text()
            first = cards.nth(0)
            assert "red pixels 8639" in first.inner_text()

            first.locator("textarea").fill("print('edited', 40 + 2)")
            first.locator("button", has_text="Run").click()
            first.get_by_text("edited 42").wait_for(timeout=30_000)
            assert "red pixels" not in first.inner_text()

            # Fork from the edited turn: the earlier turns are replayed, the model goes on.
            first.locator("button", has_text="Fork").click()
            fork = page.locator(".pyvision-fork")
            fork.locator(".pyvision-answer").wait_for(timeout=45_000)
            assert "edited 42" in fork.locator(".pyvision-card").first.inner_text()
            assert page.locator(".pyvision-view").first.locator(".pyvision-answer").count() == 2

            # The third cell is still running its session: its Stop button ends it.
            views = page.locator(".pyvision-view:not(.pyvision-fork)")
            slow = views.nth(1)
            slow.locator("textarea").wait_for(timeout=30_000)
            slow.locator("button", has_text="Stop").click()
            slow.locator(".pyvision-noanswer").wait_for(timeout=30_000)
            page.get_by_text("slow session: stopped").wait_for(timeout=30_000)
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            browser.close()
