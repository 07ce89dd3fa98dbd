"""Parent-side cost of a photo a tool shows: published as JPEG by the kernel vs as PNG.

Run standalone: ``python benchmarks/tool_images.py [--quick]``.

A tool shows a 1024x1024 photo-like crop. The kernel used to publish every image
as PNG, and the parent then checked it and re-encoded it as JPEG for the model on
every turn; now the kernel publishes photos as JPEG of the right size and the
parent passes them on. Both payloads come from a real child kernel (the new one
as it sends it; the old one is the same pixels as the PNG the kernel made
before, ``compress_level=3``). Rows, from interleaved rounds (A, B, A, B ...),
min and median:

- ``parent ms per tool photo``: what the parent does with one image output until
  its data URL is ready (``OutputCollector`` check + ``encode_for_model`` +
  ``to_data_url``). Goal: <= 0.3x.
- ``bytes from kernel``: the payload's size. Reported, no goal.
- ``kernel ms to encode``: the kernel's own encoding of a shown photo and of a
  plot (``_bootstrap._encode``: the line-art test, then JPEG or PNG) against the
  PNG it made before. Goal: photo <= 0.3x; a plot costs the test (a few ms) more.
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyvision_magic._images import encode_for_model, to_data_url  # noqa: E402
from pyvision_magic._prompt import output_as_image  # noqa: E402
from pyvision_magic._records import Output  # noqa: E402
from pyvision_magic.kernel._child import ChildKernel  # noqa: E402
from pyvision_magic.kernel._output import OutputCollector  # noqa: E402

SHOW_PHOTO = """
from skimage import data
photo = Image.fromarray(data.astronaut()).resize((1024, 1024), Image.Resampling.LANCZOS)
display(photo)
"""


async def _kernel_payloads() -> tuple[Output, Output]:
    """(the JPEG the kernel publishes, the PNG it published before) for one photo."""
    async with ChildKernel(max_output_chars=None) as kernel:
        result = await kernel.execute(SHOW_PHOTO)
        (shown,) = [o for o in result.outputs if o.kind == "image"]
        assert shown.mime == "image/jpeg", shown.mime
        png = await kernel.execute(
            "import io, base64\nbuffer = io.BytesIO()\n"
            "photo.save(buffer, format='PNG', compress_level=3)\n"
            "print(base64.b64encode(buffer.getvalue()).decode())")
    data = "".join(o.text for o in png.outputs if o.kind == "text").strip()
    return (Output(kind="image", mime=shown.mime, data=shown.data, variable="image_clue_1"),
            Output(kind="image", mime="image/png", data=data, variable="image_clue_1"))


def _parent_seconds(sent: Output) -> float:
    output = Output(**sent.__dict__)
    started = time.perf_counter()
    collected = OutputCollector(None, 8, 1024 * 1024)
    collected.add_image(output, check=True)
    (checked,) = collected.outputs()
    mime, data = encode_for_model(output_as_image(checked))
    to_data_url(mime, data)
    return time.perf_counter() - started


def _encode_rows(rounds: int) -> list[dict[str, Any]]:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    from skimage import data

    from pyvision_magic.kernel import _bootstrap

    photo = Image.fromarray(data.astronaut()).resize((1024, 1024), Image.Resampling.LANCZOS)
    figure = plt.figure(figsize=(6.4, 4.8), dpi=100)
    plt.plot([0, 1, 4, 2])
    plot = _bootstrap._figure_image(figure)
    plt.close(figure)
    rows = []
    for label, image in (("photo 1024x1024", photo), ("plot 640x480", plot)):
        ours, before = [], []
        for _ in range(rounds):
            for encode, times in ((_bootstrap._encode, ours), (_bootstrap._encode_png, before)):
                started = time.perf_counter()
                encode(image)
                times.append(time.perf_counter() - started)
        mine, theirs = statistics.median(ours) * 1e3, statistics.median(before) * 1e3
        rows.append({"figure": f"kernel ms to encode a shown {label}, now vs PNG before "
                               f"(min {min(ours) * 1e3:.1f} vs {min(before) * 1e3:.1f})",
                     "ours": mine, "baseline": theirs, "ratio": mine / theirs,
                     "goal": "<= 0.3x" if label.startswith("photo") else "-"})
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure and return the rows (see the module docstring)."""
    jpeg, png = asyncio.run(_kernel_payloads())
    rounds = 5 if quick else 30
    ours: list[float] = []
    before: list[float] = []
    for _ in range(rounds):
        ours.append(_parent_seconds(jpeg))
        before.append(_parent_seconds(png))
    mine, theirs = statistics.median(ours) * 1e3, statistics.median(before) * 1e3
    jpeg_bytes, png_bytes = (len(base64.b64decode(o.data)) for o in (jpeg, png))
    return [
        {"figure": f"parent ms per 1024x1024 tool photo, kernel JPEG vs kernel PNG "
                   f"(min {min(ours) * 1e3:.1f} vs {min(before) * 1e3:.1f})",
         "ours": mine, "baseline": theirs, "ratio": mine / theirs, "goal": "<= 0.3x"},
        {"figure": "bytes from kernel per tool photo, JPEG vs PNG", "ours": jpeg_bytes,
         "baseline": png_bytes, "ratio": jpeg_bytes / png_bytes, "goal": "-"},
        *_encode_rows(rounds),
    ]


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
