"""Size of a saved notebook holding a 10-turn session with one image per turn.

Run standalone: ``python benchmarks/notebook_size.py [--quick]``.

A real notebook runs ``%%pyvision --replay`` of a 10-turn session under nbclient
(a real kernel, the real magic); each tool really shows a photo-like 1024x1024
image (gradients plus noise, which compresses badly). The notebook is saved with
nbformat and its file size is "ours", twice: as nbclient saves it with the
widget state (``store_widget_state=True``, its default: the session widget's
state, images included, in ``metadata.widgets``), and without it
(``store_widget_state=False``, which is also what JupyterLab saves unless asked
to save widget state). nbclient's only difference between the two is that
metadata, so the notebook runs once and the second file is the first without
``metadata.widgets``. The baseline is the session's own transcript JSON, which
keeps every image at full resolution, as a notebook that embedded the images as
the tools made them would. Goal: at most 1.0 MB.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FENCE = "`" * 3
TOOL = """\
rng = np.random.default_rng({i})
y, x = np.mgrid[0:1024, 0:1024]
base = np.stack([x / 4, y / 4, (x + y) / 8], -1)
display(Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)))
print("turn {i} done")"""


def _transcript(turns: int):
    from pyvision_magic import ImageInput, Transcript, Turn, load_image

    from PIL import Image
    import io
    import numpy as np

    # A photo-like input: gradients plus sensor noise, like the tools' images.
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1536, 0:2048]
    base = np.stack([x / 8, y / 6, (x + y) / 14], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    image: ImageInput = load_image(buf.getvalue(), name="noise.png")
    texts = [f"Step {i}: look again.\n<code>\n{FENCE}python\n{TOOL.format(i=i)}\n{FENCE}\n"
             for i in range(turns - 1)] + ["<answer>42</answer>"]
    return Transcript(question="Benchmark question?", model="bench", images=[image],
                      turns=[Turn(index=i, text=t) for i, t in enumerate(texts)], max_turns=turns)


def run(quick: bool) -> list[dict]:
    from _table import needs

    skipped = needs("nbclient", "saved notebook size")
    if skipped:
        return [skipped]
    import nbformat
    from nbclient import NotebookClient

    turns = 4 if quick else 11  # ten turns with an image, then the answer
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        replay = folder / "session.json"
        _transcript(turns).save(replay)
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_code_cell("%load_ext pyvision_magic"),
            nbformat.v4.new_code_cell(f"%%pyvision --replay {replay} -o result\nBenchmark question?"),
            nbformat.v4.new_code_cell("assert result.answer == '42', result.status\n"
                                      "result.transcript.save('full.json')"),
        ]
        env_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = env_path
        try:
            NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True,
                           resources={"metadata": {"path": str(folder)}}).execute()
        finally:
            if old is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old
        saved = folder / "saved.ipynb"
        nbformat.write(nb, saved)
        with_state = saved.stat().st_size
        # What nbclient writes with store_widget_state=False: no metadata.widgets.
        nb.metadata.pop("widgets", None)
        bare = folder / "saved_without_widget_state.ipynb"
        nbformat.write(nb, bare)
        without_state = bare.stat().st_size
        full = (folder / "full.json").stat().st_size
        shown = ("widget" if any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                                 for o in nb.cells[1].outputs) else "static copy only")
    images = turns - 1
    goal = "<= 1.0 MB" if not quick else "(quick: fewer turns)"
    what = f"saved notebook, {images}-turn session, one 1024x1024 image per turn, {shown} (bytes)"
    return [
        {"figure": f"{what}, with widget state (nbclient's default)", "ours": with_state,
         "baseline": full, "ratio": round(with_state / full, 4), "goal": goal},
        {"figure": f"{what}, without widget state (JupyterLab's default)", "ours": without_state,
         "baseline": full, "ratio": round(without_state / full, 4), "goal": goal},
    ]


if __name__ == "__main__":
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
