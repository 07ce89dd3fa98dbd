"""The tool taxonomy on hand-written tools like the ones models write."""

from __future__ import annotations

import pytest

from pyvision_magic.eval.taxonomy import classify_tool

SAMPLES = {
    "crop and zoom": ("""
crop = image_clue_0.crop((100, 50, 300, 250))
crop = crop.resize((800, 800))
display(crop)""", "basic", {"basic"}),
    "numpy slicing crop": ("""
arr = np.array(image_clue_0)
patch = arr[120:260, 40:200]
plt.imshow(patch); plt.show()""", "basic", {"basic"}),
    "contrast": ("""
from PIL import ImageEnhance
img = ImageEnhance.Contrast(image_clue_0).enhance(2.5)
img = img.rotate(90, expand=True)
plt.imshow(img); plt.show()""", "basic", {"basic"}),
    "contours": ("""
gray = cv2.cvtColor(np.array(image_clue_0), cv2.COLOR_RGB2GRAY)
_, th = cv2.threshold(gray, 128, 255, cv2.THRESH_BINARY_INV)
contours, _ = cv2.findContours(th, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
print(len(contours))""", "advanced", {"advanced", "basic"}),
    "hough circles": ("""
circles = cv2.HoughCircles(gray, cv2.HOUGH_GRADIENT, 1, 20)
print(circles.shape)""", "advanced", {"advanced"}),
    "ocr": ("""
import pytesseract
print(pytesseract.image_to_string(image_clue_0))""", "advanced", {"advanced"}),
    "labelling": ("""
from scipy import ndimage
labels, n = ndimage.label(mask)
print(n)""", "advanced", {"advanced", "numerical"}),
    "draw boxes": ("""
from PIL import ImageDraw
img = image_clue_0.copy()
draw = ImageDraw.Draw(img)
draw.rectangle([10, 10, 60, 60], outline="red", width=3)
draw.line([(0, 100), (300, 100)], fill="blue")
display(img)""", "sketching", {"sketching"}),
    "matplotlib grid overlay": ("""
fig, ax = plt.subplots()
ax.imshow(image_clue_0)
for x in range(0, 500, 50):
    ax.axvline(x, color='r')
plt.show()""", "sketching", {"sketching"}),
    "cv2 marks": ("""
img = np.array(image_clue_0)
cv2.circle(img, (50, 50), 10, (255, 0, 0), 2)
cv2.putText(img, 'A', (40, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, (0, 0, 255), 2)
plt.imshow(img); plt.show()""", "sketching", {"sketching"}),
    "pixel statistics": ("""
arr = np.asarray(image_clue_0.convert('L'), dtype=float)
print(arr.mean(), arr.std())
print(np.count_nonzero(arr < 50))""", "numerical", {"numerical"}),
    "histogram": ("""
hist = np.histogram(np.array(image_clue_0)[..., 0], bins=16)
print(hist)""", "numerical", {"numerical"}),
    "image difference": ("""
from PIL import ImageChops
diff = ImageChops.difference(image_clue_0, image_clue_1)
print(diff.getbbox())""", "numerical", {"numerical"}),
    "inspection only": ("print(image_clue_0.size, image_clue_0.mode)", "other", {"other"}),
    "plain python": ("total = sum([1, 2, 3])\nwords = list(filter(None, ['a', '']))\nprint(total)",
                     "other", {"other"}),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_hand_written_tools(name):
    code, primary, categories = SAMPLES[name]
    result = classify_tool(code)
    assert result.primary == primary, result
    assert set(result.categories) == categories, result


def test_code_that_does_not_parse_is_read_token_by_token():
    broken = "img = image_clue_0.crop((0, 0, 10, 10)\ncontours = cv2.findContours(x"
    result = classify_tool(broken)
    assert result.primary == "advanced" and "basic" in result.categories


def test_operations_name_what_decided():
    result = classify_tool("c = cv2.Canny(g, 50, 150)\nprint(c.mean())")
    assert "cv2.Canny" in result.operations and result.primary == "advanced"
