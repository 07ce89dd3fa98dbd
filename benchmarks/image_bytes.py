"""How many bytes reach the model, and how fast, compared with sending full-resolution PNG.

The naive baseline sends every image as a PNG of all its pixels. Figures:

- ``photo bytes``: a 12-megapixel noisy photo (JPEG from a camera). Goal: at most 10 % of
  the baseline's bytes.
- ``line drawing bytes``: a 1-px line drawing with text. Goal: lossless (decoded pixels
  identical to the original), at no more bytes than the baseline.
- ``photo encode time``: ``load_image`` + ``encode_for_model`` for the 12 MP photo,
  against decoding it and writing the baseline PNG. Goal: under a second.
- ``array encode time``: the same for the photo as a numpy array (``cv2.imread``), whose
  lossless PNG master is what costs most. Reported, no goal.

Run ``python benchmarks/image_bytes.py [--quick]``; ``--quick`` uses a 3 MP photo.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyvision_magic._images import encode_for_model, load_image  # noqa: E402


def _encoded(im: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def _photo(size: tuple[int, int]) -> bytes:
    """A camera-like JPEG: a real photo upscaled, with sensor-like noise."""
    rng = np.random.default_rng(0)
    try:
        import skimage.data

        source = Image.fromarray(skimage.data.astronaut())
    except ImportError:  # a plain install: the shipped demo photo (coins) instead
        from pyvision_magic import Transcript

        source = Image.open(io.BytesIO(Transcript.load("demo").images[0].data)).convert("RGB")
    up = np.asarray(source.resize(size, Image.Resampling.BICUBIC))
    noisy = np.clip(up + rng.normal(0, 5, up.shape), 0, 255).astype(np.uint8)
    return _encoded(Image.fromarray(noisy), "JPEG", quality=92)


def _drawing(size: tuple[int, int]) -> Image.Image:
    width, height = size
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    for x in range(0, width, 29):
        draw.line([(x, 0), (width - 1 - x // 3, height - 1)], fill=(0, 0, 0), width=1)
    for k in range(12):
        draw.rectangle([40 + 90 * k, 40, 100 + 90 * k, 140 + 20 * k], outline=(200, 30, 30))
    font = ImageFont.load_default(size=22)
    for row in range(12):
        label = f"Step {row}: resistor R{row} = {row * 47} ohm"
        draw.text((60, height // 2 + 34 * row), label, fill=(20, 20, 20), font=font)
    return im


def _best_of(repeats: int, func) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(quick: bool) -> list[dict]:
    """Measure the figures; each row has figure, ours, baseline, ratio and goal."""
    size = (2000, 1500) if quick else (4000, 3000)
    megapixels = size[0] * size[1] / 1e6
    photo = _photo(size)
    decoded = Image.open(io.BytesIO(photo)).convert("RGB")
    baseline_photo = _encoded(decoded, "PNG")
    ours_time, (mime, sent) = _best_of(3, lambda: encode_for_model(load_image(photo)))
    base_time, _ = _best_of(1, lambda: _encoded(Image.open(io.BytesIO(photo)).convert("RGB"), "PNG"))

    array = np.asarray(decoded)
    array_time, _ = _best_of(1, lambda: encode_for_model(load_image(array)))
    array_base, _ = _best_of(1, lambda: _encoded(Image.fromarray(array), "PNG"))

    drawing = _drawing((1600, 1200))
    baseline_drawing = _encoded(drawing, "PNG")
    draw_mime, draw_sent = encode_for_model(load_image(drawing))
    decoded_drawing = Image.open(io.BytesIO(draw_sent)).convert("RGB")
    identical = np.array_equal(np.asarray(decoded_drawing), np.asarray(drawing))
    return [
        {
            "figure": f"photo bytes ({megapixels:.0f} MP, sent as {mime})",
            "ours": len(sent),
            "baseline": len(baseline_photo),
            "ratio": len(sent) / len(baseline_photo),
            "goal": "ratio <= 0.10",
        },
        {
            "figure": f"line drawing bytes (1.9 MP, {draw_mime}, pixels identical: {identical})",
            "ours": len(draw_sent),
            "baseline": len(baseline_drawing),
            "ratio": len(draw_sent) / len(baseline_drawing),
            "goal": "identical and ratio <= 1",
        },
        {
            "figure": f"photo encode time, s ({megapixels:.0f} MP, load + encode)",
            "ours": round(ours_time, 3),
            "baseline": round(base_time, 3),
            "ratio": ours_time / base_time,
            "goal": "ours < 1 s",
        },
        {
            "figure": f"array encode time, s ({megapixels:.0f} MP, load + encode)",
            "ours": round(array_time, 3),
            "baseline": round(array_base, 3),
            "ratio": array_time / array_base,
            "goal": "(reported)",
        },
    ]


if __name__ == "__main__":
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
