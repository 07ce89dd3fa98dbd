"""A real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

Opens a notebook, runs a ``%%pyvision`` cell against the loopback chat server,
sees the turn cards stream in, edits the code of a turn, clicks Run and sees the
new output; clicks Copy to cell and reads the new cell back from the saved
notebook. One JupyterLab serves the whole module. On failure a screenshot is
saved in the test's temporary directory.
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
from pyvision_magic.ui._copy import copy_to_cell_script

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


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with its own settings; yields (url, token, root)."""
    pytest.importorskip("jupyterlab")
    tmp_path = tmp_path_factory.mktemp("lab")
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



def _open_and_run_all(page, address: str) -> None:
    """Open a notebook alone (``?reset`` drops the restored workspace) and run all cells.

    "Run All Cells" sent while the notebook's kernel is still connecting is dropped
    (seen on slow machines), so it is sent again until the first cell has started.
    """
    page.goto(address)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=45_000)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=45_000)
    first_prompt = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first
    for _ in range(6):
        page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
        page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(ch in first_prompt.inner_text() for ch in "*0123456789"):
                return
            page.wait_for_timeout(200)
    raise AssertionError("the notebook never started running its cells")

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
            _open_and_run_all(page, f"{url}/lab/tree/demo.ipynb?reset&token={token}")

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


#: A turn's code with what escaping gets wrong: quotes, backslashes, ``</script>``,
#: HTML, unicode beyond the BMP, and indentation an editor could redo.
TRICKY = r'''s = "it's \"quoted\" </script> <b>&amp;</b> C:\\new\\table ünï ✓ 🐍"
for word in s.split():
    if word.startswith(("<", "\\")):
        print(repr(word))
print(len(s), 'done\t!')'''


def _saved_cells(path: Path, count: int, timeout: float = 15.0) -> list[str]:
    """The sources of the notebook's cells once it has ``count`` of them on disk."""
    import nbformat

    deadline = time.monotonic() + timeout
    while True:
        try:
            cells = nbformat.read(str(path), as_version=4).cells
        except Exception:  # the server may be writing it right now
            cells = []
        if len(cells) == count or time.monotonic() > deadline:
            return [cell.source for cell in cells]
        time.sleep(0.2)


def test_copy_to_cell_inserts_the_turns_code_below_or_says_why_not(
        jupyter_lab, make_chat_server, image_path, tmp_path):
    import nbformat

    playwright = pytest.importorskip("playwright.sync_api")
    url, token, root = jupyter_lab

    def reply(body):
        if not any(m["role"] == "assistant" for m in body["messages"]):
            return code_reply(TRICKY)
        return "Done.\n<answer>ok</answer>"

    server = make_chat_server([], default=reply)
    image = root / "copy.png"
    shutil.copy(image_path, image)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    setup = (f"%load_ext pyvision_magic\n%config PyVision.base_url = {server.base_url!r}\n"
             "%config PyVision.replay_delay = 0.0")
    nb.cells = [nbformat.v4.new_code_cell(setup),
                nbformat.v4.new_code_cell(f"%%pyvision -i {image}\nCopy me."),
                nbformat.v4.new_code_cell("print('the last cell')")]
    path = root / "copy.ipynb"
    nbformat.write(nb, str(path))

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            _open_and_run_all(page, f"{url}/lab/tree/copy.ipynb?reset&token={token}")
            page.locator(".pyvision-answer").wait_for(timeout=45_000)
            card = page.locator(".pyvision-card").first
            assert card.locator("textarea").input_value() == TRICKY

            card.locator("button", has_text="Copy to cell").click()
            card.get_by_text("Inserted as a new cell below.", exact=True).wait_for(timeout=15_000)
            page.keyboard.press("Control+s")
            cells = _saved_cells(path, 4)
            assert cells == [setup, nb.cells[1].source, TRICKY, "print('the last cell')"]
            assert not errors

            # Outside a notebook: the code goes to the clipboard, the card says so,
            # and showing the same widget again (a reload) does not copy again.
            context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
            plain = context.new_page()
            plain.on("pageerror", lambda exc: errors.append(str(exc)))
            bridge = copy_to_cell_script(TRICKY, ".pyvision-message-x")
            body = ("<div class='pyvision-card'><div class='pyvision-message pyvision-message-x'>"
                    "<div class='widget-html-content'>waiting</div></div></div>" + bridge)
            plain.route("http://127.0.0.1:9/plain",
                        lambda route: route.fulfill(body=body, content_type="text/html"))
            plain.goto("http://127.0.0.1:9/plain")
            message = plain.locator(".pyvision-message-x")
            message.get_by_text("No notebook found", exact=False).wait_for(timeout=5_000)
            assert "copied to the clipboard" in message.inner_text()
            assert plain.evaluate("navigator.clipboard.readText()") == TRICKY
            plain.reload()
            plain.wait_for_timeout(300)
            assert message.inner_text() == "waiting"
            assert not errors
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            browser.close()
