"""Blind-task families drawn from lines and shapes (see :mod:`.blind`).

Every figure is drawn without anti-aliasing (text excepted), in colours the
tests can pick out exactly. Ground truth comes from the parameters.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from .blind import Drawing

RED = (230, 25, 25)
BLUE = (25, 60, 230)
INKS = [(0, 0, 0), (20, 40, 140), (130, 20, 20), (20, 100, 40), (90, 30, 120)]
# Random strings leave out letters that look alike in a sans-serif font (I/l, O/0);
# in the words, the word itself tells them apart.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz"
WORDS = ["Acknowledgement", "Subdermatoglyphic", "pyvision", "Zebra", "Mississippi",
         "quartz", "Hydrogen", "breakfast", "Wavelength", "Jukebox", "Rhythm", "Sphinx"]


def _canvas(width: int, height: int) -> tuple[Any, Any]:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    return image, ImageDraw.Draw(image)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path(), "fonts/ttf/DejaVuSans.ttf")), size)


def line_intersections(rng: random.Random) -> Drawing:
    """Two piecewise-linear plots over the same three x positions."""
    size, margin = 512, 48
    xs = [margin, size // 2, size - margin]
    target = rng.choice([0, 1, 2])
    while True:
        red = [rng.randint(margin, size - margin) for _ in xs]
        blue = [rng.randint(margin, size - margin) for _ in xs]
        diff = [r - b for r, b in zip(red, blue)]
        # Far apart at every node: crossings are clear and never at a node.
        if min(abs(d) for d in diff) < 48:
            continue
        crossings = sum((a > 0) != (b > 0) for a, b in zip(diff, diff[1:]))
        if crossings == target:
            break
    width = rng.choice([2, 3, 4])
    image, draw = _canvas(size, size)
    draw.line(list(zip(xs, red)), fill=RED, width=width, joint="curve")
    draw.line(list(zip(xs, blue)), fill=BLUE, width=width, joint="curve")
    return Drawing(
        image,
        "How many times do the red line and the blue line intersect?",
        str(crossings),
        "integer",
        "line_intersections",
        {"xs": xs, "red": red, "blue": blue, "width": width},
    )


def touching_circles(rng: random.Random) -> Drawing:
    """Two circles that overlap, touch, or stand clearly apart."""
    size = 512
    kind = rng.choice(["overlap", "touch", "apart"])
    width = rng.choice([2, 3, 4])
    while True:
        r1, r2 = rng.randint(40, 100), rng.randint(40, 100)
        if kind == "overlap":
            gap = -rng.randint(6, min(r1, r2) // 2)
        elif kind == "touch":
            gap = -1  # outer edges share a pixel column
        else:
            gap = rng.randint(10, 60)
        distance = r1 + r2 + gap
        angle = rng.uniform(0, 2 * math.pi)
        cx1 = rng.uniform(r1 + 4, size - r1 - 4)
        cy1 = rng.uniform(r1 + 4, size - r1 - 4)
        cx2, cy2 = cx1 + distance * math.cos(angle), cy1 + distance * math.sin(angle)
        if r2 + 4 <= cx2 <= size - r2 - 4 and r2 + 4 <= cy2 <= size - r2 - 4:
            break
    ink = rng.choice(INKS)
    image, draw = _canvas(size, size)
    for cx, cy, r in ((cx1, cy1, r1), (cx2, cy2, r2)):
        draw.ellipse([round(cx - r), round(cy - r), round(cx + r), round(cy + r)], outline=ink, width=width)
    return Drawing(
        image,
        "Are the two circles touching each other or overlapping? Answer Yes or No.",
        "Yes" if gap <= 0 else "No",
        "text",
        "touching_circles",
        {"circles": [[round(cx1, 2), round(cy1, 2), r1], [round(cx2, 2), round(cy2, 2), r2]],
         "gap": gap, "kind": kind, "width": width},
    )


def circled_letter(rng: random.Random) -> Drawing:
    """A word with one letter circled by a red ellipse."""
    if rng.random() < 0.5:
        word = rng.choice(WORDS)
    else:
        word = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(5, 12)))
    font = _font(44)
    gap, margin = 10, 30
    boxes = [font.getbbox(c) for c in word]
    widths = [b[2] - b[0] for b in boxes]
    total = sum(widths) + gap * (len(word) - 1)
    width, height = total + 2 * margin, 150
    image, draw = _canvas(width, height)
    index = rng.randrange(len(word))
    baseline = 50
    cursor = margin
    spans = []
    for c, box, w in zip(word, boxes, widths):
        spans.append((cursor, cursor + w))
        cursor += w + gap
    left, right = spans[index]
    top = baseline + min(b[1] for b in boxes)
    bottom = baseline + max(b[3] for b in boxes)
    pad = 7
    draw.ellipse([left - pad, top - pad, right + pad, bottom + pad], outline=RED, width=3)
    # Letters go over the ellipse, so no letter pixel turns red.
    for c, box, (x0, _) in zip(word, boxes, spans):
        draw.text((x0 - box[0], baseline), c, fill=(0, 0, 0), font=font)
    return Drawing(
        image,
        "Which letter is being circled in red? Answer with the letter.",
        word[index],
        "text",
        "circled_letter",
        {"word": word, "index": index},
    )


def _chain(rng: random.Random, n: int, r: float, shape: str) -> list[tuple[float, float]]:
    """Centres of n shapes where only neighbours in the chain overlap.

    Shapes k and k + 2 are more than 2r apart, so they never meet; neighbours
    are close enough that even a pentagon (whose narrowest half-width is
    r cos 36 = 0.81 r) overlaps its neighbour by a third of r or more.
    """
    two_rows = rng.random() < 0.5  # like the Olympic rings
    if shape == "circle":
        dx, dy = (1.1 * r, 0.9 * r) if two_rows else (1.5 * r, 0.0)
    else:
        dx, dy = (1.1 * r, 0.7 * r) if two_rows else (1.2 * r, 0.0)
    return [(k * dx, (k % 2) * dy) for k in range(n)]


def _overlapping(rng: random.Random, shape: str) -> Drawing:
    n = rng.randint(5, 9)
    r = rng.randint(34, 44)
    width = rng.choice([2, 3, 4])
    ink = rng.choice(INKS)
    centres = _chain(rng, n, r, shape)
    margin = 24
    xs = [c[0] for c in centres]
    ys = [c[1] for c in centres]
    w = round(max(xs) - min(xs) + 2 * r + 2 * margin)
    h = round(max(ys) - min(ys) + 2 * r + 2 * margin)
    image, draw = _canvas(w, h)
    rotation = rng.uniform(0, 2 * math.pi / 5)
    placed = []
    for cx, cy in centres:
        x, y = cx + r + margin, cy + r + margin
        placed.append([round(x, 2), round(y, 2)])
        if shape == "circle":
            draw.ellipse([round(x - r), round(y - r), round(x + r), round(y + r)], outline=ink, width=width)
        else:
            pts = [(x + r * math.cos(rotation + 2 * math.pi * i / 5),
                    y + r * math.sin(rotation + 2 * math.pi * i / 5)) for i in range(5)]
            draw.polygon(pts, outline=ink, width=width)
    plural = "circles" if shape == "circle" else "pentagons"
    return Drawing(
        image,
        f"How many {plural} are in the image? Answer with a number.",
        str(n),
        "integer",
        f"overlapping_{plural}",
        {"centres": placed, "radius": r, "width": width, "rotation": round(rotation, 4)},
    )


def overlapping_circles(rng: random.Random) -> Drawing:
    return _overlapping(rng, "circle")


def overlapping_pentagons(rng: random.Random) -> Drawing:
    return _overlapping(rng, "pentagon")


def nested_squares(rng: random.Random) -> Drawing:
    """2-5 squares, each strictly inside the one before."""
    k = rng.randint(2, 5)
    size = 512
    width = rng.choice([2, 3, 4])
    ink = rng.choice(INKS)
    image, draw = _canvas(size, size)
    side = rng.randint(360, 460)
    x0 = rng.randint(10, size - side - 10)
    y0 = rng.randint(10, size - side - 10)
    squares = []
    for level in range(k):
        squares.append([x0, y0, side])
        draw.rectangle([x0, y0, x0 + side, y0 + side], outline=ink, width=width)
        if level == k - 1:
            break
        # The next square keeps at least 12 px of white from this one on every
        # side, and the innermost is still 40 px wide.
        least = 2 * (12 + width) + 8
        step = rng.randint(least, max(least, (side - 40) // (k - 1 - level)))
        x0 += rng.randint(12 + width, step - 12 - width)
        y0 += rng.randint(12 + width, step - 12 - width)
        side -= step
    return Drawing(
        image,
        "How many squares are in the image? Answer with a number.",
        str(k),
        "integer",
        "nested_squares",
        {"squares": squares, "width": width},
    )
