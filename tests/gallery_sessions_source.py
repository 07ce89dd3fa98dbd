"""Source of the tool gallery's sessions (pyvision_magic/data/gallery/*.json).

One worked session per kind of tool that the PyVision paper describes: basic
image processing, advanced image processing, visual prompting and sketching,
numerical and statistical analysis, and a long-tail tool. The model turns below
were written by the pyvision_magic developers for the gallery, not produced by
a model; each transcript says so in its ``model`` field. Their tools really run
and really compute the answer. Rebuild the files with::

    python tests/gallery_sessions_source.py [NAME ...]

which runs the turns through a real Session and child kernel, records the
outputs, and checks that every tool printed the facts the next turn relies on
(:attr:`GallerySession.evidence`) and that the session reached its answer.

The images are real photos from ``skimage.data`` (downscaled or re-encoded so
each file stays small) or scenes drawn here with an exact ground truth.
"""

from __future__ import annotations

import asyncio
import io
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FENCE = "```"
MODEL_LABEL = "gallery turns written by the pyvision_magic developers"
ROOT = Path(__file__).resolve().parent.parent
TARGET_DIR = ROOT / "pyvision_magic" / "data" / "gallery"


def _code(before: str, code: str) -> str:
    return f"{before}\n<code>\n{FENCE}python\n{code}\n{FENCE}\n"


@dataclass
class GallerySession:
    """A hand-written session of the gallery and what its tools must show."""

    #: File stem under ``pyvision_magic/data/gallery/``.
    name: str
    #: The paper's category of tool.
    category: str
    #: One line for the gallery notebook.
    title: str
    question: str
    #: The final answer the last turn gives.
    answer: str
    #: Makes the input images, as ``[(name, encoded bytes, mime)]``.
    make_images: Callable[[], list[tuple[str, bytes, str]]]
    #: The model turns, as the model would write them.
    turns: list[str]
    #: For each turn with code, strings its text output must contain: the facts
    #: the next turn's reasoning quotes.
    evidence: list[list[str]]
    #: Python modules the tools import beyond the child kernel's preloads.
    needs: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return TARGET_DIR / f"{self.name}.json"


# -- images ------------------------------------------------------------------------


def _encode(image: Any, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _skimage_photo(name: str, fmt: str = "JPEG") -> Callable[[], list[tuple[str, bytes, str]]]:
    def make() -> list[tuple[str, bytes, str]]:
        from PIL import Image
        from skimage import data

        image = Image.fromarray(getattr(data, name)())
        if fmt == "JPEG":
            return [(f"{name}.jpg", _encode(image, "JPEG", quality=92, subsampling=0), "image/jpeg")]
        return [(f"{name}.png", _encode(image, "PNG", optimize=True), "image/png")]

    return make


def ruler_scene() -> Any:
    """A pencil exactly 9.3 cm long (40 px per cm) above a 15 cm ruler."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    scale, width, height = 4, 640, 360
    big = Image.new("RGB", (width * scale, height * scale), (96, 112, 128))
    draw = ImageDraw.Draw(big)
    x0, y0, y1 = 20, 280, 350
    draw.rectangle([(x0 - 10) * scale, y0 * scale, (x0 + 610) * scale, y1 * scale],
                   fill=(236, 222, 160))
    font = ImageFont.load_default(size=11 * scale)
    for mm in range(151):
        x = (x0 + mm * 4) * scale
        length = 26 if mm % 10 == 0 else (16 if mm % 5 == 0 else 9)
        draw.line([x, y0 * scale, x, (y0 + length) * scale], fill=(30, 30, 30),
                  width=scale if mm % 10 else 2 * scale)
        if mm % 10 == 0:
            draw.text((x, (y0 + 30) * scale), str(mm // 10), fill=(30, 30, 30), font=font,
                      anchor="mt")
    length, thick, angle = 372, 14, math.radians(-17)
    cx, cy = 330, 150
    ux, uy = math.cos(angle), math.sin(angle)

    def at(t: float, s: float) -> tuple[float, float]:
        return ((cx + ux * t - uy * s) * scale, (cy + uy * t + ux * s) * scale)

    half = length / 2
    for a, b, colour in [(-half, -half + 22, (232, 130, 160)),       # eraser
                         (-half + 22, -half + 40, (190, 190, 196)),  # ferrule
                         (-half + 40, half - 46, (240, 170, 20))]:   # painted body
        draw.polygon([at(a, -thick / 2), at(b, -thick / 2), at(b, thick / 2), at(a, thick / 2)],
                     fill=colour)
    draw.polygon([at(half - 46, -thick / 2), at(half - 46, thick / 2), at(half, 0)],
                 fill=(222, 184, 135))                               # sharpened wood
    lead = thick / 2 * 14 / 46
    draw.polygon([at(half - 14, -lead), at(half - 14, lead), at(half, 0)], fill=(50, 50, 50))
    image = big.resize((width, height), Image.LANCZOS)
    noise = np.random.default_rng(7).normal(0, 3, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def house_scene(variant: int) -> Any:
    """A drawn landscape; variant 1 differs from variant 0 in exactly three places:
    the sun's colour, the house's right window (gone) and a third bird."""
    from PIL import Image, ImageDraw

    scale, width, height = 4, 400, 300
    big = Image.new("RGB", (width * scale, height * scale), (150, 200, 240))
    draw = ImageDraw.Draw(big)

    def box(x0: int, y0: int, x1: int, y1: int) -> list[int]:
        return [x0 * scale, y0 * scale, x1 * scale, y1 * scale]

    draw.rectangle(box(0, 220, width, height), fill=(90, 160, 70))
    draw.ellipse(box(320, 25, 370, 75), fill=(250, 215, 40) if variant == 0 else (245, 120, 30))
    for cx in (60, 95):
        draw.ellipse(box(cx - 30, 40, cx + 30, 75), fill=(250, 250, 250))
    draw.rectangle(box(130, 140, 270, 230), fill=(200, 80, 60))
    draw.polygon([(120 * scale, 140 * scale), (200 * scale, 85 * scale), (280 * scale, 140 * scale)],
                 fill=(110, 60, 40))
    draw.rectangle(box(185, 180, 215, 230), fill=(90, 50, 30))
    draw.rectangle(box(145, 160, 170, 185), fill=(200, 230, 250))
    if variant == 0:
        draw.rectangle(box(230, 160, 255, 185), fill=(200, 230, 250))
    draw.rectangle(box(305, 150, 320, 230), fill=(110, 70, 40))
    draw.ellipse(box(280, 105, 345, 170), fill=(40, 120, 50))
    for bx, by in [(180, 45), (210, 60)] + ([(250, 35)] if variant == 1 else []):
        draw.line([(bx - 8) * scale, (by - 4) * scale, bx * scale, by * scale,
                   (bx + 8) * scale, (by - 4) * scale], fill=(40, 40, 40), width=2 * scale,
                  joint="curve")
    return big.resize((width, height), Image.LANCZOS)


def _ruler_images() -> list[tuple[str, bytes, str]]:
    return [("pencil_and_ruler.jpg", _encode(ruler_scene(), "JPEG", quality=90), "image/jpeg")]


def _house_images() -> list[tuple[str, bytes, str]]:
    return [(f"scene_{'ab'[v]}.jpg", _encode(house_scene(v), "JPEG", quality=85), "image/jpeg")
            for v in (0, 1)]


# -- the sessions ------------------------------------------------------------------

BASIC = GallerySession(
    name="basic_crop_zoom",
    category="Basic image processing",
    title="Crop, zoom and enhance contrast to read a tiny detail: the flags on a mission patch",
    question="There is a round mission patch on the astronaut's suit. Which countries' "
             "flags are shown on it?",
    answer="The United States and France",
    make_images=_skimage_photo("astronaut"),
    turns=[
        _code(
            "The round patch is the purple disc on the left of the photo, on the sleeve "
            "near her elbow, about 90 pixels across, so the flags on it are only a few "
            "pixels tall. I will crop the disc, enlarge it and stretch its contrast.",
            """\
from PIL import ImageOps
photo = image_clue_0.convert("RGB")
print("photo size:", photo.size)
box = (125, 335, 220, 435)                     # left, top, right, bottom of the patch
patch = photo.crop(box)
zoom = ImageOps.autocontrast(patch.resize((patch.width * 2, patch.height * 2), Image.LANCZOS), cutoff=1)
print("patch:", patch.size, "-> zoomed:", zoom.size)
display(zoom)""",
        ),
        _code(
            "The enlarged patch shows a space shuttle, the names of the crew around the "
            "rim, and two small flags on its left half, the second a little below and to the "
            "right of the first, about 10 by 6 pixels each in the photo. That is too small to trust my eyes, so I will cut "
            "out just the flags, zoom 6 times, and also name the colour of every pixel "
            "(from its hue, saturation and brightness) to see the flags' layout.",
            """\
fx0, fy0, fx1, fy1 = 146, 376, 166, 392       # both flags, in photo coordinates
flags = photo.crop((fx0, fy0, fx1, fy1))
display(ImageOps.autocontrast(flags.resize((flags.width * 8, flags.height * 8), Image.LANCZOS), cutoff=1))
hsv = cv2.cvtColor(np.asarray(flags), cv2.COLOR_RGB2HSV).astype(int)
h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
names = np.full(h.shape, ".")
names[(s >= 60) & ((h < 10) | (h > 170))] = "R"        # red
names[(s >= 60) & (h >= 100) & (h <= 140)] = "B"       # blue (also the patch's ground)
names[(s >= 60) & (h > 140) & (h <= 170)] = "p"        # pink-purple, mixed edges
names[(s < 60) & (v > 190)] = "W"                      # white
print("colour map, x =", fx0, "...", fx1 - 1, "(R red, W white, B blue, p pink, . other)")
for y in range(fy0, fy1):
    print(y, "".join(names[y - fy0]))""",
        ),
        "The colour map settles it. The upper flag (x 148-156, y 377-383) has a white "
        "outline, a blue block in its top-left corner (x 149-151, y 377-379) and a field "
        "of red and pink rows: red and white stripes blurred together, with a blue "
        "canton at the top left, which is the flag of the United States. The lower flag "
        "(x 158-164, y 385-390) has three vertical bands from left to right: blue (x 158, "
        "the same blue as the patch around it), white (x 159-160) and red (x 161-163), "
        "every row alike, which is the French tricolour.\n"
        "<answer>The United States and France</answer>",
    ],
    evidence=[["photo size: (512, 512)", "zoomed: (190, 200)"],
              ["colour map", "BBWBBBpRRRW", "WWRRRW"]],
)

OCR = GallerySession(
    name="advanced_ocr",
    category="Advanced image processing",
    title="Flatten uneven lighting, binarise and run OCR (Tesseract) on a photographed page",
    question="This is a photo of a page from a textbook. What is the section heading, and "
             "which NumPy function does the code line at the bottom call?",
    answer="Region-based segmentation; np.zeros_like",
    make_images=_skimage_photo("page", fmt="PNG"),
    turns=[
        _code(
            'The photo shows a printed page with a heading, a paragraph and a line of code at the bottom. Its left side is in shadow, which often spoils text recognition. I will first run Tesseract OCR on the photo as it is, and measure how uneven the lighting is.',
            """\
import pytesseract
page = np.asarray(image_clue_0.convert("L"))
print("size:", page.shape[::-1])
print("mean brightness of the left / right quarter:", page[:, :96].mean().round(1), page[:, -96:].mean().round(1))
print("--- OCR of the photo as it is:")
print(pytesseract.image_to_string(page).strip())""",
        ),
        _code(
            "The raw OCR is incomplete: the heading lost its first word (it reads 'based segmentation'), most lines lost their beginnings, and the code line at the bottom is missing. The left quarter is half as bright as the right one (115.2 against 221.4), so a single black-and-white threshold drops the shadowed text. I will estimate the paper's lighting with a wide median filter, divide the photo by it so the paper becomes evenly white, enlarge it twice, binarise it with Otsu's threshold and read it again.",
            """\
paper = cv2.medianBlur(page, 41)                # the page without its text: the lighting
flat = cv2.divide(page, paper, scale=255)       # text on evenly lit paper
big = cv2.resize(flat, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
threshold, clean = cv2.threshold(big, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
print("mean brightness of the left / right quarter after flattening:",
      flat[:, :96].mean().round(1), flat[:, -96:].mean().round(1), "| Otsu threshold:", threshold)
display(Image.fromarray(clean).resize(image_clue_0.size, Image.LANCZOS))
print("--- OCR of the flattened page:")
print(pytesseract.image_to_string(clean).strip())""",
        ),
        "After flattening, the two sides are almost equally bright (231.0 and 243.4) and Tesseract reads every line. The heading is 'Region-based segmentation'. The code line reads 'tem, Markers = np.zeros_like(coins)': its first characters are noise from the cut-off edge of the page, but the call itself is clear: np.zeros_like, which makes an array of zeros shaped like coins.\n<answer>Region-based segmentation; np.zeros_like</answer>",
    ],
    evidence=[["115.2 221.4", "based segmentation"],
              ["231.0 243.4", "Region-based segmentation", "np.zeros_like(coins)"]],
    needs=("pytesseract",),
)

SKETCH = GallerySession(
    name="visual_prompting_marks",
    category="Visual prompting and sketching",
    title="Number the objects you count and draw guide lines to check the count",
    question="How many floodlights are shining around the launch pad in this photo?",
    answer="7",
    make_images=_skimage_photo("rocket"),
    turns=[
        _code(
            "The floodlights are the small star-shaped glares near the ground, on both sides of the rocket. A lamp's core is nearly pure white, so I will keep only near-saturated pixels (brightness 250 or more), label the connected regions, and look at their sizes: lamp cores should stand out from small glints.",
            """\
rgb = np.asarray(image_clue_0.convert("RGB"))
value = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 2]
bright = (value >= 250).astype(np.uint8)       # near-saturated pixels only
n, labels, stats, centres = cv2.connectedComponentsWithStats(bright)
areas = stats[1:, cv2.CC_STAT_AREA]
print("bright regions:", n - 1)
counts, edges = np.histogram(areas, bins=[1, 2, 5, 10, 20, 40, 100, 1000])
for c, lo, hi in zip(counts, edges, edges[1:]):
    print(f"  area {lo:>3}-{hi - 1:<3} px: {c}")
large = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 40]
large.sort(key=lambda i: centres[i][0])
for i in large:
    print(f"  large region at x={centres[i][0]:.0f}, y={centres[i][1]:.0f}: {stats[i, cv2.CC_STAT_AREA]} px")""",
        ),
        _code(
            "The sizes split cleanly: 7 regions of 41 to 192 pixels, then a gap (no region of 10 to 39 pixels), and 58 specks of at most 9 pixels. The 7 large regions all lie low in the picture (y 350 to 420), where the lamps are. Before answering I must check two things: that the specks are not dimmer lamps, and that none of the 7 is a reflection on the white rocket. I will sort the specks by where they are, then mark the 7 candidates with numbers, draw a horizontal guide line just above the highest one and vertical guide lines along the rocket's edges, and look.",
            """\
small = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] < 10]
lamp_xy = np.array([centres[i] for i in large])
column = value[150:300].mean(axis=0)
rocket_x = np.where(column > 150)[0]
rx0, rx1 = int(rocket_x.min()), int(rocket_x.max())
near_lamp = sum(np.hypot(*(lamp_xy - centres[i]).T).min() <= 25 for i in small)
on_rocket = sum(rx0 - 6 <= centres[i][0] <= rx1 + 6 for i in small
                if np.hypot(*(lamp_xy - centres[i]).T).min() > 25)
others = [i for i in small if np.hypot(*(lamp_xy - centres[i]).T).min() > 25
          and not rx0 - 6 <= centres[i][0] <= rx1 + 6]
print(f"rocket body: x={rx0}..{rx1}")
print(f"small specks: {len(small)}; within 25 px of a large region: {near_lamp}; "
      f"on the rocket: {on_rocket}; elsewhere: {len(others)}")
for i in others:
    print(f"  speck at x={centres[i][0]:.0f}, y={centres[i][1]:.0f}: {stats[i, cv2.CC_STAT_AREA]} px")
top = int(min(stats[i, cv2.CC_STAT_TOP] for i in large))
print("highest large region starts at y =", top)
marked = rgb.copy()
cv2.line(marked, (0, top - 8), (marked.shape[1], top - 8), (0, 255, 255), 1)
for x in (rx0, rx1):
    cv2.line(marked, (x, 0), (x, marked.shape[0]), (255, 0, 255), 1)
for k, i in enumerate(large, 1):
    x, y = (int(round(c)) for c in centres[i])
    cv2.circle(marked, (x, y), 11, (0, 255, 0), 2)
    cv2.putText(marked, str(k), (x - 5, y - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 2)
display(Image.fromarray(marked[top - 40:, 40:480]))""",
        ),
        'The marks confirm the count. Each of the numbered circles 1 to 7 sits on the bright core of a star-shaped glare, all below the guide line at the level of the pad, and none lies between the two vertical lines of the rocket (x 314 to 329). Of the 58 specks, 36 are within 25 pixels of a lamp (the spikes of its glare), 14 are glints on the rocket, and the other 8 are glints of 1 to 5 pixels: seven along the lit walls at the bottom edge of the photo (y 423 to 426) and one single pixel at x 302, y 374. They are far too small to be lamps, whose cores all have 40 pixels or more.\n<answer>7</answer>',
    ],
    evidence=[["bright regions: 65", "100-999 px: 3", "y=350: 41 px", "y=397: 192 px"],
              ["within 25 px of a large region: 36; on the rocket: 14; elsewhere: 8"]],
)

MEASURE = GallerySession(
    name="numerical_measure",
    category="Numerical and statistical analysis",
    title="Calibrate with a ruler from an intensity profile, then measure a length",
    question="How long is the pencil, in centimetres (to one decimal), according to the "
             "ruler in the picture?",
    answer="9.3",
    make_images=_ruler_images,
    turns=[
        _code(
            "To turn pixels into centimetres I need the ruler's scale. Its ticks are dark lines on a pale yellow strip; I will find the strip's rows by colour, take the brightness along a band a little below its top edge (where only the longer half-centimetre and centimetre ticks reach), and find the dark dips in that profile.",
            """\
rgb = np.asarray(image_clue_0.convert("RGB")).astype(int)
ruler_colour = (np.abs(rgb - [236, 222, 160]).sum(axis=2) < 60).mean(axis=1)
rows = np.where(ruler_colour > 0.3)[0]
top = rows.min()
print("ruler rows:", top, "to", rows.max())
for y in (top + 2, top + 12, top + 20):
    print(f"  share of ruler colour in row {y}: {ruler_colour[y]:.2f}")
# 11-15 px below the edge only the longer (half-centimetre and centimetre) ticks reach
profile = rgb[top + 11: top + 16].mean(axis=(0, 2))
dark = profile < profile.max() - 60
starts = np.where(dark[1:] & ~dark[:-1])[0] + 1
ends = np.where(~dark[1:] & dark[:-1])[0] + 1
ticks = (starts + ends[:len(starts)]) / 2
spacing = np.diff(ticks)
print("ticks found:", len(ticks), "first at x =", ticks[:4], "last at x =", ticks[-1])
print("spacing (px): median", np.median(spacing), "min", spacing.min(), "max", spacing.max())
fig, ax = plt.subplots(figsize=(6, 1.6), dpi=80)
ax.plot(profile, lw=0.8)
ax.set_title(f"ruler brightness, rows {top + 11}-{top + 15}")
ax.set_xlabel("x (px)")
plt.show()""",
        ),
        _code(
            "The ruler starts at row 280. The profile has 32 dips: the first, at x 14.5, is only 15.5 px from the next and is the ruler's left end, not a tick; the other 31 are exactly 20.0 px apart, one every half centimetre from 0 to 15 cm. So the scale is 40.0 px per cm. Now the pencil: I will separate it from the table by its colour distance to the table (with a threshold well above the noise of an empty corner), fit the smallest rotated rectangle around it, and divide its length by the scale.",
            """\
px_per_cm = 2 * np.median(spacing)              # a tick every half centimetre
ground = np.median(rgb[:top - 20].reshape(-1, 3), axis=0)
distance = np.abs(rgb - ground).sum(axis=2)     # colour distance from the table
print("table colour:", ground, "| largest distance in an empty corner:", distance[:60, :60].max())
mask = (distance > 40).astype(np.uint8)
mask[top - 10:] = 0                             # leave the ruler out
n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
print("objects above the ruler:", n - 1, "sizes:", sorted(stats[1:, cv2.CC_STAT_AREA].tolist())[-3:])
pencil = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
ys, xs = np.where(labels == pencil)
(cx, cy), (w, h), angle = cv2.minAreaRect(np.column_stack([xs, ys]).astype(np.float32))
length_px = max(w, h)
print(f"pencil: {len(xs)} px, box {length_px:.1f} x {min(w, h):.1f} px, angle {angle:.1f} deg")
print(f"scale: {px_per_cm:.1f} px per cm -> length {length_px / px_per_cm:.3f} = {length_px / px_per_cm:.1f} cm")
box = cv2.boxPoints(((cx, cy), (w, h), angle)).round().astype(int)
check = np.asarray(image_clue_0.convert("RGB")).copy()
cv2.drawContours(check, [box], 0, (255, 0, 0), 2)
display(Image.fromarray(check[40:260, 100:560]).resize((230, 110), Image.LANCZOS))""",
        ),
        'The empty corner differs from the table colour by at most 17, so the threshold of 40 keeps the noise out, and the only object found above the ruler is the pencil (5665 px). Its rotated box is 371.8 px long and 16.7 px wide, tilted 17 degrees, and the drawn box fits it from the eraser to the tip. 371.8 / 40.0 = 9.295 cm; one pixel more or less at either end changes this by only 0.025 cm, so to one decimal the pencil is 9.3 cm long.\n<answer>9.3</answer>',
    ],
    evidence=[["ticks found: 32", "median 20.0 min 15.5"],
              ["in an empty corner: 17", "sizes: [5665]", "box 371.8 x 16.7", "= 9.3 cm"]],
)

DIFFERENCES = GallerySession(
    name="long_tail_differences",
    category="Long-tail tools",
    title="Spot the differences between two pictures by subtracting them pixel by pixel",
    question="These two pictures should be identical. How many differences are there, "
             "and what are they?",
    answer="3",
    make_images=_house_images,
    turns=[
        _code(
            'Both pictures show a house, a tree, a cloud, the sun and birds; comparing them by eye is slow and easy to get wrong. Since they have the same size, I will subtract them pixel by pixel and look at the histogram of the differences.',
            """\
a = np.asarray(image_clue_0.convert("RGB")).astype(int)
b = np.asarray(image_clue_1.convert("RGB")).astype(int)
print("sizes:", a.shape, b.shape)
diff = np.abs(a - b).max(axis=2)
print("pixels that differ at all:", int((diff > 0).sum()), "of", diff.size)
counts, edges = np.histogram(diff, bins=[0, 1, 5, 10, 20, 40, 80, 256])
for c, lo, hi in zip(counts, edges, edges[1:]):
    print(f"  difference {lo:>3}-{hi - 1:<3}: {c} px")""",
        ),
        _code(
            'Of 120000 pixels, 113414 are identical. Most of the rest differ only a little (1 to 39: 3866 px), which is JPEG noise around edges, while 2720 px differ by 40 or more: those are real changes. I will keep the differences of 40 or more, dilate them so the parts of one change join up, count the connected regions, compare the mean colour of each region in the two pictures, and box them on the second picture.',
            """\
changed = (diff >= 40).astype(np.uint8)
changed = cv2.dilate(changed, np.ones((5, 5), np.uint8))  # join the parts of one change
n, labels, stats, _ = cv2.connectedComponentsWithStats(changed)
regions = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 20]
print("changed regions:", len(regions))
marked = np.asarray(image_clue_1.convert("RGB")).copy()
for k, i in enumerate(regions, 1):
    x, y, w, h = stats[i, :4]
    inside = labels[y:y + h, x:x + w] == i
    mean_a = a[y:y + h, x:x + w][inside].mean(axis=0).round()
    mean_b = b[y:y + h, x:x + w][inside].mean(axis=0).round()
    print(f"  {k}: x={x}..{x + w}, y={y}..{y + h}; mean colour {mean_a} -> {mean_b}")
    cv2.rectangle(marked, (int(x), int(y)), (int(x + w), int(y + h)), (255, 0, 0), 2)
    cv2.putText(marked, str(k), (int(x), int(y) - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 0, 0), 2)
display(Image.fromarray(marked))""",
        ),
        "There are exactly three changed regions, boxed and numbered on the picture. 1 is the sun (x 318-372, y 23-77): yellow in the first picture (233, 212, 76 on average) and orange in the second (228, 134, 67). 2 is a small region in the sky (x 240-261, y 28-38) that is darker in the second picture: a third bird was added there. 3 is on the house (x 228-258, y 158-188): the first picture's right window (light blue, 200, 186, 194 on average with its edges) became red wall (201, 80, 61) in the second, so that window is missing.\n<answer>3</answer>",
    ],
    evidence=[["0-0  : 113414 px", "80-255: 2555 px"],
              ["changed regions: 3", "1: x=318..372", "2: x=240..261", "3: x=228..258"]],
)

SESSIONS: list[GallerySession] = [BASIC, OCR, SKETCH, MEASURE, DIFFERENCES]


def by_name(name: str) -> GallerySession:
    for session in SESSIONS:
        if session.name == name:
            return session
    raise KeyError(f"no gallery session named {name!r}; known: {[s.name for s in SESSIONS]}")


# -- running -----------------------------------------------------------------------


def input_images(session: GallerySession) -> list[Any]:
    """The session's images as :class:`ImageInput` records."""
    from PIL import Image

    from pyvision_magic import ImageInput

    images = []
    for name, data, mime in session.make_images():
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        images.append(ImageInput(name, data, mime, width, height))
    return images


def text_of(turn: Any) -> str:
    """Everything a turn's tool printed (text and errors), as one string."""
    return "\n".join(o.text for o in turn.outputs if o.kind in ("text", "error"))


def check(session: GallerySession, transcript: Any) -> list[str]:
    """What is wrong with a run of ``session`` (empty when it reached its answer)."""
    problems = []
    if transcript.status != "answered" or transcript.answer != session.answer:
        problems.append(f"ended {transcript.status} with answer {transcript.answer!r}, "
                        f"expected {session.answer!r}")
    coded = [t for t in transcript.turns if t.code]
    if len(coded) != len(session.evidence):
        problems.append(f"{len(coded)} turns ran code, expected {len(session.evidence)}")
    for turn, facts in zip(coded, session.evidence):
        if turn.exec_status != "ok":
            problems.append(f"turn {turn.index + 1}: {turn.exec_status}: {text_of(turn)[-800:]}")
        printed = text_of(turn)
        for fact in facts:
            if fact not in printed:
                problems.append(f"turn {turn.index + 1} did not print {fact!r}; it printed:\n"
                                f"{printed}")
    return problems


async def run_session(session: GallerySession, transcript: Any = None, kernel: Any = None) -> Any:
    """Replay ``transcript`` (default: the hand-written turns) in a real child kernel."""
    from pyvision_magic import ChildKernel, ReplayModel, Session, Transcript, Turn

    if transcript is None:
        transcript = Transcript(question=session.question, model=MODEL_LABEL,
                                images=input_images(session),
                                turns=[Turn(index=i, text=t) for i, t in enumerate(session.turns)])
    own = kernel is None
    kernel = kernel or ChildKernel()
    run = Session(transcript.question, transcript.images, model=ReplayModel(transcript),
                  executor=kernel, max_turns=max(len(transcript.turns), 4))
    try:
        return await run._async_run()
    finally:
        if own:
            await kernel.shutdown()
        else:
            await kernel.restart()


def build(names: Sequence[str] = ()) -> None:
    """Run the turns for real and write the transcripts next to the package."""
    sys.path.insert(0, str(ROOT))
    TARGET_DIR.mkdir(parents=True, exist_ok=True)
    chosen = [by_name(n) for n in names] if names else SESSIONS
    for session in chosen:
        transcript = asyncio.run(run_session(session))
        transcript.model = MODEL_LABEL
        for turn in transcript.turns:
            if turn.code:
                print(f"--- {session.name} turn {turn.index + 1} ({turn.exec_status})")
                print(text_of(turn))
        problems = check(session, transcript)
        if problems:
            raise SystemExit(f"{session.name}:\n" + "\n".join(problems))
        transcript.save(session.path)
        print(f"wrote {session.path} ({session.path.stat().st_size} bytes)")


if __name__ == "__main__":
    build(sys.argv[1:])
