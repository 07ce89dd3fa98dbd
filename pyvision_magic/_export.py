"""A session as a plain notebook: the model's words and its tools, without the model.

One markdown cell per model text, one code cell per tool (with its recorded
outputs), and first a cell that loads the images as ``image_clue_0``, ... The
images are written next to the notebook, so its tools can be kept, edited and
rerun in any Python kernel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._errors import ConfigError
from ._records import Output
from ._render import prose
from ._transcript import Transcript

__all__ = ["export_notebook", "write_notebook", "to_notebook_outputs"]

_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}


def _setup_source(paths: list[tuple[str, str]]) -> str:
    items = ",\n    ".join(f"({name!r}, {path!r})" for name, path in paths)
    plain = "\n".join(f"    {name} = Image.open({path!r})" for name, path in paths) or "    pass"
    return (
        "# The tools' setup: np, cv2, Image and plt; the inputs as image_clue_0, ...\n"
        "import numpy as np\n"
        "import matplotlib.pyplot as plt\n"
        "from PIL import Image\n"
        "try:\n"
        "    import cv2\n"
        "except ImportError:\n"
        "    pass\n"
        "try:\n"
        "    # With pyvision_magic installed, images a tool shows become image_clue_N,\n"
        "    # as they did when the model ran the tools.\n"
        "    from pyvision_magic.kernel import _bootstrap as _pyvision\n"
        "    _pyvision.install({'max_image_pixels': 1024 * 1024})\n"
        f"    _pyvision.bind_inputs([\n    {items}\n    ])\n"
        "except ImportError:\n"
        f"{plain}\n"
    )


def to_notebook_outputs(outputs: list[Output]) -> list[dict[str, Any]]:
    """A tool's outputs as nbformat output dicts, images as recorded."""
    result: list[dict[str, Any]] = []
    for out in outputs:
        if out.kind == "image" and out.data:
            if out.variable:
                result.append({"output_type": "display_data", "metadata": {},
                               "data": {"text/markdown": f"`{out.variable}`",
                                        "text/plain": out.variable}})
            result.append({"output_type": "display_data", "metadata": {},
                           "data": {out.mime or "image/png": out.data,
                                    "text/plain": f"<image {out.variable or ''}>"}})
        elif out.kind == "error":
            result.append({"output_type": "error", "ename": out.ename or "Error",
                           "evalue": out.evalue or "",
                           "traceback": (out.text or f"{out.ename}: {out.evalue}").splitlines()})
        elif out.stream in ("stdout", "stderr"):
            result.append({"output_type": "stream", "name": out.stream, "text": out.text})
        else:
            result.append({"output_type": "display_data", "metadata": {},
                           "data": {"text/plain": out.text}})
    return result


def export_notebook(transcript: Transcript, image_dir: str | os.PathLike[str] | None = None,
                    *, image_prefix: str = "") -> Any:
    """Build the notebook (an ``nbformat`` node) of ``transcript``.

    Input images are written to ``image_dir`` (created if needed) and loaded
    from ``image_prefix + file name``; with no ``image_dir`` they are not
    written and the paths are bare file names.
    """
    import nbformat.v4 as nbf
    from nbformat import from_dict

    t = transcript
    paths = []
    for i, image in enumerate(t.images):
        filename = f"image_clue_{i}{_SUFFIX.get(image.mime, '.png')}"
        if image_dir is not None:
            Path(image_dir).mkdir(parents=True, exist_ok=True)
            (Path(image_dir) / filename).write_bytes(image.data)
        paths.append((f"image_clue_{i}", image_prefix + filename))
    cells = [
        nbf.new_markdown_cell(
            f"# {t.question}\n\nExported from a pyvision session with `{t.model}` "
            f"({t.created}, status: {t.status}). The tools below run without the model."
        ),
        nbf.new_code_cell(_setup_source(paths)),
    ]
    if t.videos:  # the clips, read from where they were (the transcript keeps no clip)
        from ._video_session import export_source

        cells.append(nbf.new_code_cell(export_source(t.videos)))
    for turn in t.turns:
        words = prose(turn.text, turn.code)
        if words:
            cells.append(nbf.new_markdown_cell(f"**Turn {turn.index + 1}.** {words}"))
        if turn.code:
            cell = nbf.new_code_cell(turn.code)
            cell.outputs = [from_dict(o) for o in to_notebook_outputs(turn.outputs)]
            if turn.note:
                cells.append(cell)
                cells.append(nbf.new_markdown_cell(f"*{turn.note}*"))
                continue
            cells.append(cell)
    if t.answer is not None:
        cells.append(nbf.new_markdown_cell(f"**Answer:** {t.answer}"))
    elif t.error:
        cells.append(nbf.new_markdown_cell(f"**No answer** ({t.status}): {t.error}"))
    nb = nbf.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["pyvision"] = {"question": t.question, "model": t.model, "status": t.status}
    return nb


def write_notebook(transcript: Transcript, path: str | os.PathLike[str]) -> Path:
    """Write the exported notebook to ``path`` and its images to ``<stem>_images/``."""
    import nbformat

    path = Path(path)
    if path.suffix != ".ipynb":
        raise ConfigError(f"Export to a .ipynb file, not {path.name}.")
    image_dir = path.with_name(path.stem + "_images")
    nb = export_notebook(transcript, image_dir, image_prefix=image_dir.name + "/")
    try:
        nbformat.write(nb, str(path))
    except OSError as exc:
        raise ConfigError(f"Cannot write {path}: {exc.strerror}.") from exc
    return path
