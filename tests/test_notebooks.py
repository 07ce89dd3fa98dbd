"""Real notebooks run by nbclient: the extension in a real ipykernel.

The chat server runs in this process on 127.0.0.1; the notebook gets its URL in
its first cell. Checked: the outputs of a ``%%pyvision`` cell (live view,
static HTML, transcript in the metadata), ``-o``, ``--replay``, a usage error,
the kernel interrupt, and ``%pyvision load`` of the saved notebook.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import code_reply

PROJECT = str(Path(__file__).resolve().parents[1])
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(autouse=True)
def kernel_env(monkeypatch):
    # The notebook's kernel imports pyvision_magic from this checkout; no real endpoint.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [PROJECT, os.environ.get("PYTHONPATH")])))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PYVISION_MODEL"):
        monkeypatch.delenv(name, raising=False)


def _run(cells: list[str], tmp_path: Path, name: str = "nb.ipynb", **options) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    NotebookClient(nb, timeout=90, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}, **options).execute()
    nbformat.write(nb, str(tmp_path / name))
    return nb


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _pyvision_outputs(cell):
    views = [o for o in cell.outputs if WIDGET_MIME in o.get("data", {})]
    static = [o for o in cell.outputs if "pyvision" in o.get("metadata", {})]
    return views, static


def test_a_live_session_in_a_notebook(make_chat_server, image_path, tmp_path):
    server = make_chat_server([
        code_reply("print('size', image_clue_0.size)\nplt.imshow(np.asarray(image_clue_0)); plt.show()"),
        "Two squares.\n<answer>2</answer>",
    ])
    nb = _run([
        f"BASE_URL = {server.base_url!r}\nfrom PIL import Image\nimg = Image.open({str(image_path)!r})",
        "%load_ext pyvision_magic\n%config PyVision.base_url = BASE_URL",
        "%%pyvision -i img -o result --max-turns 4\nHow many squares? {not expanded} $nor_this",
        "print(result.status, result.answer, len(result.transcript.turns), result.kernel.pid > 0)\n"
        "print('async cell:', 'await' in get_ipython().transform_cell('%%pyvision\\nq'))",
    ], tmp_path)
    views, static = _pyvision_outputs(nb.cells[2])
    assert len(views) == 1 and len(static) == 1
    text = views[0]["data"]["text/plain"]
    assert "\n" not in text and "pyvision session view" in text and "%pyvision load" in text, \
        "what a viewer without widgets shows is one line saying how to get the view back"
    html = static[0]["data"]["text/html"]
    assert "monospace" in html and "saved copy of a pyvision session" in html
    assert "How many squares? {not expanded} $nor_this" in html
    assert "print(&#x27;size&#x27;" in html or "size" in html
    assert "size (120, 80)" in html and "<img src='data:image/" in html
    assert "Answer:</b>" in html and "pyvision-static-" in html
    saved = static[0]["metadata"]["pyvision"]["transcript"]
    assert saved["status"] == "answered" and saved["answer"] == "2"
    assert saved["question"] == "How many squares? {not expanded} $nor_this"
    assert saved["turns"][0]["outputs"][0]["text"] == "size (120, 80)\n"
    assert "answered 2 2 True" in _text(nb.cells[3])
    assert "async cell: True" in _text(nb.cells[3])
    assert server.chat_requests[0].body["model"] == "gpt-4.1"

    # The saved notebook rebuilds its sessions with %pyvision load.
    nb2 = _run([
        "%load_ext pyvision_magic",
        "%pyvision load nb.ipynb -o loaded",
        "print(loaded.status, loaded.answer, loaded.kernel)",
        "%pyvision export out.ipynb loaded",
    ], tmp_path, name="nb2.ipynb")
    views, static = _pyvision_outputs(nb2.cells[1])
    assert len(views) == 1 and len(static) == 1
    assert "answered 2 None" in _text(nb2.cells[2])
    exported = nbformat.read(str(tmp_path / "out.ipynb"), 4)
    assert "image_clue_0" in exported.cells[1].source
    assert (tmp_path / "out_images" / "image_clue_0.png").exists()


def test_replay_of_the_shipped_session(tmp_path):
    # A folder with a space, named through a $variable: the line is expanded and
    # split with shell quoting, as in a terminal.
    shipped = resources.files("pyvision_magic") / "data" / "coins_session.json"
    (tmp_path / "my sessions").mkdir()
    transcript = tmp_path / "my sessions" / "coins.json"
    transcript.write_bytes(shipped.read_bytes())
    nb = _run([
        "%load_ext pyvision_magic",
        f"SOURCE = {str(transcript)!r}",
        f'%%pyvision --replay "$SOURCE" -o r --save "{tmp_path / "my sessions" / "again.json"}"',
        "print(r.status, r.answer)",
    ], tmp_path)
    del nb.cells[1]
    views, static = _pyvision_outputs(nb.cells[1])
    assert len(views) == 1 and len(static) == 1
    assert "answered 24" in _text(nb.cells[2])
    meta = static[0]["metadata"]["pyvision"]
    assert meta["transcript"]["answer"] == "24"
    assert "coins" in static[0]["data"]["text/html"]
    again = json.loads((tmp_path / "my sessions" / "again.json").read_text())
    assert again["answer"] == "24" and len(again["turns"]) == 3


def test_usage_errors_are_one_line(tmp_path):
    nb = _run([
        "%load_ext pyvision_magic",
        "%%pyvision -i no_such_variable\nWhat?",
        "%%pyvision --max-turns=many -i x\nq",
    ], tmp_path, allow_errors=True)
    for cell, expected in ((nb.cells[1], "UsageError: -i no_such_variable: there is no "
                            "variable 'no_such_variable'"),
                           (nb.cells[2], "UsageError: argument --max-turns: invalid int value")):
        text = "".join(o.get("text", "") for o in cell.outputs)
        assert expected in text
        assert "Traceback" not in text and len(text.strip().splitlines()) == 1


def test_a_kernel_that_cannot_start_is_one_sentence_without_traceback(make_chat_server,
                                                                     image_path, tmp_path,
                                                                     capfd):
    """Said once in the cell; jupyter_client's own traceback of the failure stays
    out of the notebook kernel's log (the Jupyter server's console)."""
    server = make_chat_server([code_reply("print(1)")])
    nb = _run([
        "%load_ext pyvision_magic\n%config PyVision.use_pool = False\n"
        "%config ChildKernel.kernel_name = 'no-such-kernel'",
        f"%%pyvision -i {image_path} --base-url {server.base_url} -o r\nq",
        "print(r.status)",
    ], tmp_path)
    text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")
                   for o in nb.cells[1].outputs)
    assert "There is no Jupyter kernel named 'no-such-kernel'" in text
    assert "Traceback" not in text and "NoSuchKernel" not in text
    assert _text(nb.cells[2]) == "error\n"
    assert "NoSuchKernel" not in capfd.readouterr().err  # the notebook kernel's stderr


def test_interrupting_the_cell_stops_the_session_and_keeps_it(make_chat_server, image_path,
                                                                tmp_path):
    server = make_chat_server([code_reply("import time\ntime.sleep(60)")])
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        f"%load_ext pyvision_magic\n%config PyVision.base_url = {server.base_url!r}",
        f"%%pyvision -i {image_path} -o r\nq",
        "print(r.status, len(r.transcript.turns))",
    ]]
    client = NotebookClient(nb, timeout=90, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    nb.cells[1].metadata["execution"] = {}
    client.timeout_func = lambda cell: 10 if "%%pyvision" in cell.source else 90
    client.interrupt_on_timeout = True
    client.allow_errors = True
    client.execute()
    assert "stopped 1" in _text(nb.cells[2])
    _, static = _pyvision_outputs(nb.cells[1])
    assert static and static[0]["metadata"]["pyvision"]["transcript"]["status"] == "stopped"


def test_the_notebook_kernel_shuts_down_cleanly_and_leaves_no_folder(tmp_path):
    """Loading the extension (its pool, its kernel template) must not hold up or
    break the notebook kernel's own shutdown: the kernel exits by itself, its exit
    hooks run, and the folder with its tools' kernels and image copies is gone."""
    import glob
    import tempfile

    shipped = resources.files("pyvision_magic") / "data" / "coins_session.json"
    transcript = tmp_path / "coins.json"
    transcript.write_bytes(shipped.read_bytes())
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in [
        "%load_ext pyvision_magic",
        "import os; print(os.getpid())",
        f"%%pyvision --replay {str(transcript)!r}\n",
    ]]
    client = NotebookClient(nb, timeout=90, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        pid = int(_text(nb.cells[1]))
        km = client.km
        assert glob.glob(os.path.join(tempfile.gettempdir(), f"pyvision-{pid}-*"))
    # setup_kernel asked the kernel to shut down and waited: it must have exited on
    # its own (a kernel killed after the wait runs no exit hooks).
    assert not km.has_kernel or not km.is_alive()
    assert glob.glob(os.path.join(tempfile.gettempdir(), f"pyvision-{pid}-*")) == []
