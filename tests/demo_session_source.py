"""Source of the shipped demo session (pyvision_magic/data/coins_session.json).

The model turns below were written by the pyvision_magic developers for the demo,
not produced by a model; the transcript says so in its ``model`` field. Their
tools really run and really give the answer. Rebuild the file with::

    python tests/demo_session_source.py

which runs the turns through a real Session and child kernel and records the
outputs, so the shipped outputs are what the tools print on a real machine.
"""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

FENCE = "```"
QUESTION = "How many coins are in this photo?"
MODEL_LABEL = "demo turns written by the pyvision_magic developers"
TARGET = Path(__file__).resolve().parent.parent / "pyvision_magic" / "data" / "coins_session.json"


def _code(before: str, code: str) -> str:
    return f"{before}\n<code>\n{FENCE}python\n{code}\n{FENCE}\n"


TURNS = [
    _code(
        "The coins are lighter than the tray, so I will separate them with a global "
        "threshold and count the connected regions, printing their areas to check "
        "that every region is one coin.",
        """\
gray = np.asarray(image_clue_0.convert("L"))
print("image:", gray.shape, "brightness top/bottom:", gray[:100].mean().round(1), gray[-100:].mean().round(1))
blur = cv2.GaussianBlur(gray, (5, 5), 0)
t, mask = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
areas = sorted(int(a) for a in stats[1:, cv2.CC_STAT_AREA])
print("Otsu threshold:", t)
print("regions larger than 200 px:", sum(a > 200 for a in areas))
print("largest areas:", areas[-5:])
plt.imshow(mask, cmap="gray"); plt.title("global threshold"); plt.axis("off"); plt.show()""",
    ),
    _code(
        "The largest region (11956 px) is four times the next one: the background is "
        "brighter at the top (mean 108.6 against 82.5 at the bottom), so the global "
        "threshold joined the top row of coins to the bright background. A local "
        "(adaptive) threshold copes with uneven lighting. I will count again and number "
        "each coin on the image to check it visually.",
        """\
local = cv2.adaptiveThreshold(blur, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 75, -8)
local = cv2.morphologyEx(local, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
contours, _ = cv2.findContours(local, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
coins = [c for c in contours if cv2.contourArea(c) > 200]
areas = sorted(int(cv2.contourArea(c)) for c in coins)
print("coins found:", len(coins))
print("smallest / largest area:", areas[0], areas[-1])
marked = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
for i, c in enumerate(sorted(coins, key=lambda c: ((cv2.boundingRect(c)[1] + cv2.boundingRect(c)[3] // 2) // 75, cv2.boundingRect(c)[0])), 1):
    x, y, w, h = cv2.boundingRect(c)
    cv2.rectangle(marked, (x, y), (x + w, y + h), (255, 0, 0), 1)
    cv2.putText(marked, str(i), (x + 2, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
display(Image.fromarray(marked))""",
    ),
    "The adaptive threshold finds 24 regions of similar size (largest about three "
    "times the smallest, as the coins differ in size), and the numbered marks sit on "
    "24 separate coins in four rows of six.\n<answer>24</answer>",
]


def build() -> None:
    """Run the turns for real and write the transcript next to the package."""
    sys.path.insert(0, str(TARGET.parent.parent.parent))
    from skimage import data

    from pyvision_magic import ChildKernel, ImageInput, ReplayModel, Session, Transcript, Turn

    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(data.coins()).save(buf, format="PNG", optimize=True)
    height, width = data.coins().shape
    image = ImageInput("coins.png", buf.getvalue(), "image/png", width, height)
    script = Transcript(question=QUESTION, model=MODEL_LABEL,
                        turns=[Turn(index=i, text=t) for i, t in enumerate(TURNS)])

    async def go() -> Transcript:
        kernel = ChildKernel()
        session = Session(QUESTION, [image], model=ReplayModel(script), executor=kernel)
        try:
            return await session._async_run()
        finally:
            await kernel.shutdown()

    transcript = asyncio.run(go())
    transcript.model = MODEL_LABEL
    assert transcript.answer == "24", transcript.answer
    transcript.save(TARGET)
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes)")


if __name__ == "__main__":
    build()
