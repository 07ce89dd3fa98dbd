"""A real browser: JupyterLab and Notebook 7 on 127.0.0.1, headless Chromium via Playwright.

JupyterLab, in its light and its dark theme, runs a notebook of ``%%pyvision``
cells against the loopback chat server: the code streams into the editor, the
answer shows in the header, real key presses edit a tool (Tab, ``x``, ``dd``,
``a`` never reach the notebook's shortcuts), Shift+Enter reruns it, the view
says what the edit invalidates, Fork opens below its turn, Stop ends a session
during the model's reply and during a tool, and every text in the view has
WCAG AA contrast. Copy to cell makes a cell that runs. Notebook 7 shows the view
at full height, streams, stops during a tool and during the model's reply, keeps keys
in the editor, runs with Ctrl+Enter, copies to a cell that runs and forks; its contrast is
checked too. Copy to cell runs in both JupyterLab themes. The saved copy's code and outputs
are in a fixed-width font. Screenshots are kept under ``$PYVISION_BROWSER_ARTIFACTS``
(default: ``$TMPDIR/pyvision_browser_artifacts``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from chat_server import Endless, Reply
from conftest import code_reply

CHROMIUM = os.environ.get("PYVISION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(os.environ.get("PYVISION_BROWSER_ARTIFACTS")
                 or Path(tempfile.gettempdir()) / "pyvision_browser_artifacts")

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} "
                       "(apt-get install chromium)"),
    pytest.mark.timeout(240),
]

#: Walks the text of every visible element of the views (and of the static copies) and
#: returns the pairs under
#: WCAG AA (4.5:1; 3:1 for large text). Colours are read through a canvas, which also
#: resolves ``color-mix()`` results; the background is the nearest opaque one up the
#: tree with any translucent layers in between composited over it. Disabled controls
#: are exempt, as WCAG exempts inactive components.
CONTRAST_JS = """() => {
  const cv = document.createElement('canvas'); cv.width = cv.height = 1;
  const ctx = cv.getContext('2d', {willReadFrequently: true});
  const rgba = (c) => { ctx.clearRect(0, 0, 1, 1); ctx.fillStyle = 'rgba(0,0,0,0)';
    ctx.fillStyle = c; ctx.fillRect(0, 0, 1, 1);
    const d = ctx.getImageData(0, 0, 1, 1).data; return [d[0], d[1], d[2], d[3] / 255]; };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3]))
    .concat([1]);
  const lum = (c) => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const background = (el) => { const layers = [];
    for (let n = el; n; n = n.parentElement) {
      const bg = rgba(getComputedStyle(n).backgroundColor);
      if (bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; } }
    let color = [255, 255, 255, 1];
    for (const layer of layers.reverse()) color = over(layer, color);
    return color; };
  const bad = [], seen = new Set(); let checked = 0;
  for (const root of document.querySelectorAll('.pyvision-view, .pyvision-static')) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let t = walker.nextNode(); t; t = walker.nextNode()) {
      const el = t.parentElement;
      if (!t.textContent.trim() || !el || seen.has(el)) continue;
      seen.add(el);
      const style = getComputedStyle(el);
      if (!el.getClientRects().length || style.visibility === 'hidden') continue;
      if (el.closest('button:disabled, [aria-disabled="true"], style')) continue;
      const bg = background(el), fg = over(rgba(style.color), bg);
      const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      const ratio = (a + 0.05) / (b + 0.05);
      const size = parseFloat(style.fontSize), weight = Number(style.fontWeight);
      const large = size >= 24 || (size >= 18.66 && weight >= 700);
      checked++;
      if (ratio < (large ? 3 : 4.5)) bad.push({text: t.textContent.trim().slice(0, 40),
        cls: String(el.className), color: style.color, ratio: Math.round(ratio * 100) / 100});
    }
  }
  return {checked, bad};
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(app: str, tmp_path: Path):
    """``jupyter lab`` or ``jupyter notebook`` on 127.0.0.1 with its own settings."""
    root = tmp_path / "root"
    root.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PYVISION_MODEL")}
    # The kernel imports pyvision_magic from this checkout, installed or not.
    project = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH")]))
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # Keep the "news" toast out of the way.
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    log = open(tmp_path / f"{app}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", app, "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}",
         "--ServerApp.port_retries=0", "--ServerApp.allow_root=True",
         f"--IdentityProvider.token={token}"] + (["--LabApp.news_url="] if app == "lab" else []),
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 45
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"jupyter {app} did not start:\n"
                                   + (tmp_path / f"{app}.log").read_text()[-3000:])
            time.sleep(0.3)
    return proc, log, url, token, root


def _stop_server(proc, log) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log.close()


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory):
    """A JupyterLab server; yields (url, token, root)."""
    pytest.importorskip("jupyterlab")
    proc, log, url, token, root = _start_server("lab", tmp_path_factory.mktemp("lab"))
    try:
        yield url, token, root
    finally:
        _stop_server(proc, log)


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):
    """A Notebook 7 server; yields (url, token, root)."""
    pytest.importorskip("notebook")
    proc, log, url, token, root = _start_server("notebook", tmp_path_factory.mktemp("nb7"))
    try:
        yield url, token, root
    finally:
        _stop_server(proc, log)


def _set_theme(url: str, token: str, theme: str) -> None:
    """Choose JupyterLab's theme through its settings API (as the Settings menu does)."""
    body = json.dumps({"raw": json.dumps({"theme": theme})}).encode()
    request = urllib.request.Request(
        f"{url}/lab/api/settings/@jupyterlab/apputils-extension:themes", data=body,
        method="PUT", headers={"Authorization": f"token {token}",
                               "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


def _write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, str(path))


def _run_all(page, address: str) -> None:
    """Open a notebook alone (``?reset`` drops a restored workspace) and run all cells.

    "Run All Cells" sent while the kernel still connects is dropped (seen on slow
    machines), so it is sent again until the first cell has started.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(address)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=45_000)
    page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first.wait_for(timeout=45_000)
    first_prompt = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first
    page.wait_for_timeout(1500)
    for _ in range(8):
        # On a slow start JupyterLab may ask which kernel to use ("Select Kernel", seen once
        # in CI): its modal dialog takes every click, so accept its default, the notebook's.
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and dialog.first.is_visible():
            dialog.first.locator("button.jp-mod-accept").click()
            page.wait_for_timeout(500)
        try:
            page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click(timeout=10_000)
            page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click(timeout=10_000)
        except PlaywrightTimeout:  # a dialog opened meanwhile: accept it on the next round
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(ch in first_prompt.inner_text() for ch in "*0123456789"):
                return
            page.wait_for_timeout(200)
    raise AssertionError("the notebook never started running its cells")


def _cell_count(page) -> int:
    return page.locator(".jp-Notebook .jp-Cell").count()


def _editor_text(card) -> str:
    return card.locator(".cm-content").first.evaluate(
        "el => [...el.querySelectorAll('.cm-line')].map(l => l.textContent).join('\\n')")


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _shot_of(locator, name: str) -> Path:
    """A screenshot of one element (a card, a header): what a user looks at, in full."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    locator.screenshot(path=str(path))
    return path


#: The colours of the editor's text: plain, and each highlighted token class in it.
HIGHLIGHT_JS = """el => { const out = {plain: getComputedStyle(el).color};
  for (const span of el.querySelectorAll('[class*="pv-tok-"]')) {
    const cls = [...span.classList].find(c => c.startsWith('pv-tok-'));
    out[cls] = getComputedStyle(span).color; }
  return out; }"""


def _assert_highlighted(card, tokens=("pv-tok-string", "pv-tok-comment"),
                        where=".cm-content") -> None:
    """The ``tokens`` in the editor (strings, comments, ...) have colours of their own."""
    colours = card.locator(where).first.evaluate(HIGHLIGHT_JS)
    for token in tokens:
        assert token in colours, f"no {token} in {where}: {colours}"
        assert colours[token] != colours["plain"], f"{token} is drawn as plain text: {colours}"


#: Views, headers and cards whose content is wider than their box (a horizontal scroll).
OVERFLOW_JS = """() => [...document.querySelectorAll(
    '.pyvision-view, .pyvision-header, .pyvision-card, .pyvision-outputs')]
  .filter(e => e.getClientRects().length && e.scrollWidth > e.clientWidth + 1)
  .map(e => e.className + ' ' + e.scrollWidth + '>' + e.clientWidth)"""


def _assert_contrast(page, name: str) -> None:
    result = page.evaluate(CONTRAST_JS)
    assert result["checked"] > 20, result
    assert not result["bad"], f"{name}: text under 4.5:1 contrast: {result['bad'][:8]}"


FIRST_TOOL = "print('red pixels', (np.asarray(image_clue_0)[..., 0] > 200).sum())"


def _reply(body, hold=None):
    """The scripted model of the session-view tests; ``hold`` keeps the first reply
    half written until the test has seen it stream (see `Reply.hold`)."""
    messages = json.dumps(body["messages"])
    done = sum(m["role"] == "assistant" for m in body["messages"])
    if "Wait in the tool" in messages:
        return code_reply("import time\nprint('waiting', flush=True)\ntime.sleep(120)")
    if "Talk forever" in messages:
        return Endless(text="and so on ", prefix="Let me think. ", chunk_delay=0.05)
    if done == 0:
        # Slow enough to see the code arrive in the editor while it is written.
        return Reply(code_reply(FIRST_TOOL + "\n" + "\n".join(f"# note {i}" for i in range(30))),
                     chunk_delay=0.02, hold=hold)
    if done == 1:
        return code_reply("print('second turn', 1)")
    return "Two squares: a red one and a blue one.\n<answer>2</answer>"


@pytest.mark.parametrize("theme", ["JupyterLab Light", "JupyterLab Dark"])
def test_edit_a_tool_with_editor_keys_rerun_fork_and_stop(jupyter_lab, make_chat_server,
                                                          image_path, theme):
    playwright = pytest.importorskip("playwright.sync_api")
    url, token, root = jupyter_lab
    _set_theme(url, token, theme)
    first_reply_seen = threading.Event()
    server = make_chat_server([], default=lambda body: _reply(body, first_reply_seen))
    image = root / "squares.png"
    shutil.copy(image_path, image)
    name = "dark" if "Dark" in theme else "light"
    _write_notebook(root / f"demo-{name}.ipynb", [
        f"%load_ext pyvision_magic\n%config PyVision.base_url = {server.base_url!r}",
        f"%%pyvision -i {image} -o result\nHow many squares are there?",
        f"%%pyvision -i {image} -o slow\nWait in the tool.",
        f"%%pyvision -i {image} -o chatty\nTalk forever.",
        "print('ended:', slow.status, chatty.status, slow.transcript.turns[0].exec_status)",
    ])

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            _run_all(page, f"{url}/lab/tree/demo-{name}.ipynb?reset&token={token}")
            if "Dark" in theme:
                assert page.evaluate("document.body.dataset.jpThemeLight") == "false"
            cells = page.locator(".jp-Notebook .jp-Cell")
            view = cells.nth(1).locator(".pyvision-view").first

            # The code streams into the editor while the model writes it.
            streaming = view.locator(".pyvision-card.pyvision-streaming")
            streaming.wait_for(timeout=45_000)
            streaming.locator(".cm-content", has_text="red pixels").wait_for(timeout=20_000)
            assert "second turn" not in view.inner_text()
            first_reply_seen.set()

            # The answer is in the header as soon as it exists; finished turns fold.
            view.locator(".pyvision-header .pyvision-answer").wait_for(timeout=45_000)
            assert "2" in view.locator(".pyvision-answer").inner_text()
            assert view.locator(".pyvision-model").inner_text() == "gpt-4.1"
            assert view.locator(".pyvision-status").inner_text() == "answered"
            thumb = view.locator(".pyvision-header .pyvision-thumb").first
            assert "image_clue_0" in thumb.inner_text()
            thumb.click()  # enlarge (this 120x80 input is already shown at its own size)
            page.wait_for_function("el => el.classList.contains('pyvision-thumb-large')",
                                   arg=thumb.element_handle(), timeout=5_000)
            thumb.click()
            cards = view.locator(":scope > .pyvision-turns > .pyvision-card")
            assert cards.count() == 3
            page.wait_for_function(
                "el => el.querySelectorAll(':scope > .pyvision-turns > .pyvision-collapsed')"
                ".length === 3", arg=view.element_handle(), timeout=10_000)
            summaries = cards.locator(".pyvision-summary").all_inner_texts()
            assert all(line.strip() for line in summaries), \
                f"a folded turn has a one-line summary: {summaries}"
            first = cards.nth(0)
            first.locator(".pyvision-card-title").click()
            assert "red pixels 8639" in first.locator(":scope > .pyvision-outputs").inner_text()
            _assert_highlighted(first)

            # Real editor keys: nothing reaches the notebook's shortcuts.
            count = _cell_count(page)
            editor = first.locator(".cm-content")
            editor.click()
            page.keyboard.press("Control+a")
            page.keyboard.type("for i in range(2):")
            page.keyboard.press("Enter")  # auto-indent
            page.keyboard.type("print('edited', 40 + i)")
            page.keyboard.press("Enter")
            page.keyboard.type("# x dd a b m y")
            for key in ["x", "d", "d", "a", "b", "m"]:
                page.keyboard.press(key)
            page.keyboard.press("Control+Home")
            page.keyboard.press("Tab")
            assert _editor_text(first).startswith("    for i in range(2):")
            page.keyboard.press("Shift+Tab")
            text = _editor_text(first)
            assert text.startswith("for i in range(2):\n    print('edited', 40 + i)"), text
            assert text.rstrip().endswith("xddabm"), text
            assert page.evaluate("document.activeElement.closest('.cm-editor') !== null"), \
                "Tab indents and keeps the focus in the editor"
            assert _cell_count(page) == count, "x/dd/a/b typed in the editor changed the notebook"
            first.locator(".pyvision-draft-note").wait_for(timeout=5_000)
            assert first.locator(".pyvision-draft-note").inner_text() == "edited, not run"
            _assert_highlighted(first, ("pv-tok-keyword", "pv-tok-string", "pv-tok-comment"))
            _shot_of(first, f"lab-{name}-editing")
            _assert_contrast(page, f"{theme}, a draft in the editor")
            prompt = cells.nth(1).locator(".jp-InputPrompt").inner_text()

            # Shift+Enter runs the edited tool; the view says what the edit invalidates.
            page.keyboard.press("Shift+Enter")
            first.locator(":scope > .pyvision-outputs", has_text="edited 41").wait_for(timeout=30_000)
            assert "red pixels" not in first.locator(":scope > .pyvision-outputs").inner_text()
            assert _cell_count(page) == count
            page.wait_for_function("el => el.classList.contains('pyvision-edited')",
                                   arg=first.element_handle(), timeout=10_000)
            assert first.locator(".pyvision-draft-note").count() == 0 or \
                not first.locator(".pyvision-draft-note").is_visible()
            assert first.locator(".pyvision-badge").is_visible()
            assert first.locator(".pyvision-badge").inner_text() == "edited"
            original = first.locator(".pyvision-original")
            original.locator("button").click()
            original.get_by_text("red pixels 8639").wait_for(timeout=5_000)
            assert original.locator("pre.pyvision-original-code").inner_text().startswith(
                FIRST_TOOL)
            _assert_highlighted(original, ("pv-tok-string", "pv-tok-comment", "pv-tok-number"),
                                where="pre.pyvision-original-code")
            assert "pyvision-stale" in (cards.nth(1).get_attribute("class") or "")
            view.locator(".pyvision-header .pyvision-stale-note").wait_for(timeout=5_000)
            assert "turn 1" in view.locator(".pyvision-header .pyvision-stale-note").inner_text()

            # Ctrl+Enter runs too; neither key reran the notebook's own cell.
            editor.click()
            page.keyboard.press("Control+End")
            page.keyboard.press("Enter")
            page.keyboard.type("print('ctrl-enter ran')")
            page.keyboard.press("Control+Enter")
            first.locator(":scope > .pyvision-outputs", has_text="ctrl-enter ran").wait_for(
                timeout=30_000)
            assert _cell_count(page) == count
            assert cells.nth(1).locator(".jp-InputPrompt").inner_text() == prompt, \
                "Shift/Ctrl+Enter in the editor ran the notebook cell again"
            view.locator(".pyvision-header").scroll_into_view_if_needed()
            _shot_of(view.locator(".pyvision-header"), f"lab-{name}-stale-answer")
            _shot_of(first, f"lab-{name}-edited")

            # Fork from the second turn: it opens below that turn, the first folded.
            second = cards.nth(1)
            second.locator(".pyvision-card-title").click()
            second.locator("button.pyvision-fork").click()
            fork = second.locator(".pyvision-fork-slot .pyvision-view")
            fork.locator(".pyvision-answer").wait_for(timeout=60_000)
            assert "pyvision-fork-view" in (fork.get_attribute("class") or "")
            inherited = fork.locator(".pyvision-card.pyvision-inherited")
            assert inherited.count() == 1
            assert "pyvision-collapsed" in (inherited.first.get_attribute("class") or ""), \
                "the turn a fork inherits is one folded line"
            below = second.locator(":scope > .pyvision-buttons").bounding_box()["y"]
            assert fork.locator(".pyvision-card").first.bounding_box()["y"] > below, \
                "the fork is below its turn"

            # Stop during a tool reads as stopped; then stop during the model's reply.
            slow = cells.nth(2).locator(".pyvision-view").first
            slow.locator(".pyvision-running").wait_for(timeout=45_000)
            running = slow.locator(".pyvision-running")
            first_line = running.inner_text()
            assert re.fullmatch(r"running tool… \d+\.\d s", first_line), first_line
            page.wait_for_timeout(700)
            assert running.inner_text() != first_line, "the tool's time runs"
            slow.locator("button.pyvision-stop").click()
            slow.locator(".pyvision-noanswer").wait_for(timeout=30_000)
            assert slow.locator(".pyvision-traceback").count() == 0
            assert "stopped" in slow.locator(".pyvision-card-title").first.inner_text()
            chatty = cells.nth(3).locator(".pyvision-view").first
            chatty.locator(".pyvision-card.pyvision-streaming").wait_for(timeout=45_000)
            chatty.locator(".pyvision-tokens", has_text="~").wait_for(timeout=10_000)
            before = chatty.locator(".pyvision-elapsed").inner_text()
            page.wait_for_timeout(700)
            assert chatty.locator(".pyvision-elapsed").inner_text() != before, \
                "the elapsed time runs while the model writes"
            chatty.locator("button.pyvision-stop").click()
            chatty.locator(".pyvision-noanswer").wait_for(timeout=30_000)
            tokens = chatty.locator(".pyvision-tokens").inner_text()
            assert re.fullmatch(r"~[1-9]\d* tokens", tokens), \
                f"a reply cut by Stop keeps its estimate, not '0 tokens': {tokens}"
            page.get_by_text("ended: stopped stopped stopped").wait_for(timeout=30_000)

            for index in range(cards.count()):  # everything visible for the contrast check
                if "pyvision-collapsed" in (cards.nth(index).get_attribute("class") or ""):
                    cards.nth(index).locator(".pyvision-card-title").click()
            page.wait_for_timeout(300)
            _shot(page, f"lab-{name}")
            _assert_contrast(page, theme)
            overflow = page.evaluate(OVERFLOW_JS)
            assert overflow == [], f"wider than their box: {overflow}"
            assert not errors, errors
        except BaseException:
            print(f"screenshot: {_shot(page, f'lab-{name}-failure')}")
            raise
        finally:
            browser.close()


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


#: A tool with what escaping gets wrong: quotes, backslashes, ``</script>``, HTML,
#: unicode beyond the BMP, and indentation an editor could redo.
TRICKY = r'''s = "it's \"quoted\" </script> <b>&amp;</b> C:\\new\\table ünï ✓ 🐍"
for word in s.split():
    if word.startswith(("<", "\\")):
        print(repr(word))
print('copied', np.asarray(image_clue_0).shape, len(s))'''


@pytest.mark.parametrize("theme", ["JupyterLab Light", "JupyterLab Dark"])
def test_copy_to_cell_makes_a_cell_that_runs_in_the_notebook(jupyter_lab, make_chat_server,
                                                             image_path, theme):
    playwright = pytest.importorskip("playwright.sync_api")
    url, token, root = jupyter_lab
    _set_theme(url, token, theme)
    name = "dark" if "Dark" in theme else "light"

    def reply(body):
        if not any(m["role"] == "assistant" for m in body["messages"]):
            return code_reply(TRICKY)
        return "Done.\n<answer>ok</answer>"

    server = make_chat_server([], default=reply)
    image = root / "copy.png"
    shutil.copy(image_path, image)
    setup = f"%load_ext pyvision_magic\n%config PyVision.base_url = {server.base_url!r}"
    ask = f"%%pyvision -i {image}\nCopy me."
    path = root / f"copy-{name}.ipynb"
    _write_notebook(path, [setup, ask, "print('the last cell')"])

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            _run_all(page, f"{url}/lab/tree/copy-{name}.ipynb?reset&token={token}")
            view = page.locator(".pyvision-view").first
            view.locator(".pyvision-answer").wait_for(timeout=45_000)
            card = view.locator(".pyvision-card").first
            card.locator(".pyvision-card-title").click()
            assert _editor_text(card) == TRICKY
            card.locator("button.pyvision-copy").click()
            card.locator(".pyvision-message", has_text="new cell below").wait_for(timeout=15_000)
            page.keyboard.press("Control+s")
            cells = _saved_cells(path, 4)
            assert cells[0] == setup and cells[1] == ask and cells[3] == "print('the last cell')"
            assert cells[2].endswith(TRICKY) and "%pyvision images 1 1" in cells[2]

            # The cell is inserted, not run: it runs in the user's own kernel, so the
            # user reads it first.
            new = page.locator(".jp-Notebook .jp-Cell").nth(2)
            page.wait_for_timeout(500)
            assert new.locator(".jp-OutputArea-output").count() == 0
            assert new.locator(".jp-InputPrompt").inner_text().strip() in ("[ ]:", "")
            # Run the new cell: the tool works in the notebook as it did in its kernel.
            new.locator(".jp-InputPrompt").click()
            page.keyboard.press("Shift+Enter")
            new.locator(".jp-OutputArea-output", has_text="copied (80, 120, 3)").wait_for(
                timeout=30_000)
            assert "Error" not in new.locator(".jp-OutputArea").inner_text()
            assert not errors, errors
        except BaseException:
            print(f"screenshot: {_shot(page, f'lab-copy-{name}-failure')}")
            raise
        finally:
            browser.close()


def test_notebook7_streams_runs_copies_and_forks_at_full_height_with_keys_in_the_editor(
        notebook7, make_chat_server, image_path):
    from PIL import Image

    playwright = pytest.importorskip("playwright.sync_api")
    url, token, root = notebook7

    def reply(body):
        done = sum(m["role"] == "assistant" for m in body["messages"])
        if "Wait in the tool" in json.dumps(body["messages"]) or \
                "Talk forever" in json.dumps(body["messages"]):
            return _reply(body)
        if done < 6:
            # The first one longer and slowly, to see it arrive in the editor.
            lines = 40 if done == 0 else 12
            code = code_reply(f"print('turn {done}')\n" + "\n".join(f"# line {i}"
                                                                    for i in range(lines)))
            return Reply(code, chunk_delay=0.03, hold=first_reply_seen) if done == 0 else code
        return "<answer>done</answer>"

    first_reply_seen = threading.Event()
    server = make_chat_server([], default=reply)
    image = root / "nb7.png"
    with Image.open(image_path) as small:  # big enough that a click visibly enlarges it
        small.resize((small.width * 4, small.height * 4), Image.Resampling.NEAREST).save(image)
    path = root / "nb7.ipynb"
    _write_notebook(path, [
        f"%load_ext pyvision_magic\n%config PyVision.base_url = {server.base_url!r}",
        f"%%pyvision -i {image}\nSix turns please.",
        f"%%pyvision -i {image}\nWait in the tool.",
        f"%%pyvision -i {image}\nTalk forever.",
    ])
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            _run_all(page, f"{url}/notebooks/nb7.ipynb?token={token}")
            view = page.locator(".pyvision-view").first
            streaming = view.locator(".pyvision-card.pyvision-streaming")
            streaming.wait_for(timeout=45_000)
            streaming.locator(".cm-content", has_text="turn 0").wait_for(timeout=20_000)
            first_reply_seen.set()
            view.locator(".pyvision-answer").wait_for(timeout=60_000)

            # Stop during a tool, then during the model's reply.
            notebook_cells = page.locator(".jp-Notebook .jp-Cell")
            slow = notebook_cells.nth(2).locator(".pyvision-view").first
            slow.locator(".pyvision-running", has_text="running tool").wait_for(timeout=45_000)
            slow.locator("button.pyvision-stop").click()
            slow.locator(".pyvision-noanswer").wait_for(timeout=30_000)
            assert slow.locator(".pyvision-traceback").count() == 0
            assert "stopped" in slow.locator(".pyvision-card-title").first.inner_text()
            chatty = notebook_cells.nth(3).locator(".pyvision-view").first
            chatty.locator(".pyvision-card.pyvision-streaming").wait_for(timeout=45_000)
            chatty.locator("button.pyvision-stop").click()
            chatty.locator(".pyvision-noanswer").wait_for(timeout=30_000)
            assert "stopped" in chatty.locator(".pyvision-status").inner_text()

            thumb = view.locator(".pyvision-header .pyvision-thumb").first
            small_width = thumb.locator("img").bounding_box()["width"]
            thumb.click()
            page.wait_for_timeout(300)
            large_width = thumb.locator("img").bounding_box()["width"]
            assert small_width <= 160 and large_width >= 400, (small_width, large_width)
            thumb.click()

            cards = view.locator(":scope > .pyvision-turns > .pyvision-card")
            assert cards.count() == 7
            page.wait_for_function(
                "el => el.querySelectorAll(':scope > .pyvision-turns > .pyvision-collapsed')"
                ".length === 7", arg=view.element_handle(), timeout=10_000)
            summaries = cards.locator(".pyvision-summary").all_inner_texts()
            assert summaries[-1] == "Answer: done", summaries
            assert all(line.strip() for line in summaries), summaries
            for index in range(cards.count()):
                cards.nth(index).locator(".pyvision-card-title").click()
            page.wait_for_timeout(300)
            height = view.bounding_box()["height"]
            assert height > 1200, f"six open turns in {height:.0f} px"
            boxes = view.evaluate("""v => { const out = [];
                for (let e = v.parentElement; e && !e.classList.contains('jp-Notebook')
                     && !e.classList.contains('jp-WindowedPanel-outer'); e = e.parentElement) {
                  const s = getComputedStyle(e);
                  if (/(auto|scroll)/.test(s.overflowY) && e.scrollHeight > e.clientHeight + 2)
                    out.push(e.className + ' ' + e.clientHeight);
                } return out; }""")
            assert boxes == [], f"the view sits in an inner scroll box: {boxes}"

            # Editor keys stay in the editor; Ctrl+Enter runs the tool, not the notebook cell.
            count = _cell_count(page)
            first = cards.first
            prompt = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(
                ".jp-InputPrompt").inner_text()
            first.locator(".cm-content").click()
            page.keyboard.press("Control+End")
            for key in ["x", "d", "d", "a"]:
                page.keyboard.press(key)
            assert _editor_text(first).endswith("xdda")
            assert _cell_count(page) == count
            _assert_highlighted(first)
            first.locator(".pyvision-draft-note").wait_for(timeout=5_000)
            _assert_contrast(page, "Notebook 7, a draft in the editor")
            page.keyboard.press("Enter")
            page.keyboard.type("print('nb7 ctrl-enter')")
            page.keyboard.press("Control+Enter")
            first.locator(":scope > .pyvision-outputs", has_text="nb7 ctrl-enter").wait_for(
                timeout=30_000)
            assert _cell_count(page) == count
            assert page.locator(".jp-Notebook .jp-Cell").nth(1).locator(
                ".jp-InputPrompt").inner_text() == prompt
            _shot(page, "notebook7")
            _assert_contrast(page, "Notebook 7")

            # Copy to cell, then run the new cell.
            first.locator("button.pyvision-copy").click()
            first.locator(".pyvision-message", has_text="new cell below").wait_for(timeout=15_000)
            assert _cell_count(page) == count + 1
            new = page.locator(".jp-Notebook .jp-Cell").nth(2)
            new.locator(".jp-InputPrompt").click()
            page.keyboard.press("Shift+Enter")
            new.locator(".jp-OutputArea-output", has_text="nb7 ctrl-enter").wait_for(
                timeout=30_000)
            assert "Error" not in new.locator(".jp-OutputArea").inner_text()

            # Fork from the last tool: the fork opens below that turn.
            last = cards.nth(5)
            last.locator("button.pyvision-fork").click()
            fork = last.locator(".pyvision-fork-slot .pyvision-view")
            fork.locator(".pyvision-answer").wait_for(timeout=60_000)
            assert fork.locator(".pyvision-card.pyvision-inherited").count() == 5
            # Notebook 7.6 itself throws this while it starts, before any output exists.
            errors = [e for e in errors if "reading 'schema'" not in e]
            assert not errors, errors
        except BaseException:
            print(f"screenshot: {_shot(page, 'notebook7-failure')}")
            raise
        finally:
            browser.close()


def test_a_saved_notebook_reopened_without_its_kernel_shows_the_static_copy_and_a_hint(
        jupyter_lab, monkeypatch):
    """Saved by nbclient with its widget state, opened later: the kernel that made the
    widgets is gone, so the view shrinks to its hint and the static copy shows."""
    from importlib import resources

    import nbformat
    from nbclient import NotebookClient

    playwright = pytest.importorskip("playwright.sync_api")
    url, token, root = jupyter_lab
    _set_theme(url, token, "JupyterLab Dark")
    project = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [project,
                                                                    os.environ.get("PYTHONPATH")])))
    shipped = resources.files("pyvision_magic") / "data" / "coins_session.json"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("%load_ext pyvision_magic\n"
                                          "%config PyVision.replay_delay = 0.0"),
                nbformat.v4.new_code_cell(f"%%pyvision --replay {shipped}\nq")]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(root)}}).execute()
    assert nb.metadata["widgets"], "nbclient saved the widget state"
    nbformat.write(nb, str(root / "saved.ipynb"))

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        try:
            page.goto(f"{url}/lab/tree/saved.ipynb?reset&token={token}")
            static = page.locator(".pyvision-static")
            static.wait_for(timeout=45_000)
            assert "saved copy of a pyvision session" in static.inner_text()
            assert "%pyvision load" in static.inner_text()
            view = page.locator(".pyvision-view")
            if view.count():  # drawn from the saved widget state: only its hint remains
                view.locator(".pyvision-saved-hint").wait_for(timeout=15_000)
                assert not view.locator(".pyvision-turns").is_visible()
            page.wait_for_timeout(500)
            assert static.is_visible(), "the static copy must not be hidden without a kernel"
            # Code and outputs in a fixed-width font (a printed pixel map lines up).
            fonts = static.evaluate("""s => [...s.querySelectorAll('pre')].map(p =>
                [getComputedStyle(p).fontFamily, p.getBoundingClientRect().width])""")
            assert len(fonts) >= 4, fonts
            assert all(family.rstrip().endswith("monospace") for family, _ in fonts), fonts
            widths = static.evaluate("""s => { const pre = s.querySelector('pre');
                const probe = (text) => { const span = document.createElement('span');
                  span.textContent = text; pre.append(span);
                  const w = span.getBoundingClientRect().width; span.remove(); return w; };
                return [probe('iiiiiiiiii'), probe('WWWWWWWWWW')]; }""")
            assert abs(widths[0] - widths[1]) < 0.5, f"not a fixed-width font: {widths}"
            _shot(page, "lab-saved-dark")
            _assert_contrast(page, "saved copy, dark theme")
        except BaseException:
            print(f"screenshot: {_shot(page, 'lab-saved-failure')}")
            raise
        finally:
            browser.close()
