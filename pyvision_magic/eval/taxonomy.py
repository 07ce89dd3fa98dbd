"""Which kind of tool the model wrote, by static analysis of its code.

The categories follow the PyVision paper's taxonomy of generated tools:

``basic``
    Basic image processing: crop, rotate, flip, resize, contrast, brightness,
    colour conversion, blur, thresholding.
``advanced``
    Advanced image processing: segmentation, detection, edge or shape finding,
    connected components, OCR, learned models.
``sketching``
    Visual prompting and sketching: drawing boxes, lines, points, text or grids
    on the image.
``numerical``
    Numerical and statistical analysis: pixel statistics, histograms, image
    differences, counting and fitting.
``other``
    Long-tail operations: none of the above.

A tool can do several of these; its *primary* category is the first found in
the order advanced, sketching, basic, numerical (the rarer, more specific
operation names the tool). Calls are read from the syntax tree by their
dotted name (``cv2.findContours``, ``img.crop``, ``ImageDraw.Draw``); code that
does not parse is read token by token instead.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

__all__ = ["CATEGORIES", "PRIORITY", "ToolClass", "classify_tool"]

CATEGORIES = ("basic", "advanced", "sketching", "numerical", "other")
PRIORITY = ("advanced", "sketching", "basic", "numerical")

# Last part of a called name -> category. Names generic enough to mean other
# things (e.g. "line", "text", "mean") are qualified in _QUALIFIED below.
_CALLS: dict[str, str] = {}
for _category, _names in {
    "basic": """crop rotate resize thumbnail transpose flip fliplr flipud rot90 mirror
        autocontrast equalize invert grayscale posterize solarize
        Contrast Brightness Sharpness Color enhance cvtColor equalizeHist createCLAHE
        GaussianBlur medianBlur bilateralFilter blur filter threshold adaptiveThreshold
        warpAffine warpPerspective getRotationMatrix2D getPerspectiveTransform normalize
        convertScaleAbs LUT zoom erode dilate morphologyEx getStructuringElement
        rescale_intensity equalize_adapthist UnsharpMask GaussianBlur MedianFilter""",
    "advanced": """findContours connectedComponents connectedComponentsWithStats watershed
        grabCut kmeans SimpleBlobDetector_create SimpleBlobDetector HoughCircles HoughLines
        HoughLinesP Canny Sobel Laplacian Scharr matchTemplate CascadeClassifier ORB_create
        SIFT_create goodFeaturesToTrack cornerHarris approxPolyDP minEnclosingCircle
        boundingRect contourArea fitEllipse convexHull distanceTransform floodFill
        image_to_string image_to_data image_to_boxes readtext Reader slic felzenszwalb
        quickshift regionprops find_contours canny hough_circle hough_line probabilistic_hough_line
        peak_local_max blob_log blob_dog blob_doh label KMeans DBSCAN readNet
        readNetFromONNX fasterrcnn_resnet50_fpn maskrcnn_resnet50_fpn""",
    "sketching": """Draw rectangle ellipse polygon arrowedLine putText drawContours polylines
        drawMarker add_patch Rectangle Circle Polygon FancyBboxPatch Arrow annotate
        axhline axvline hlines vlines arrow""",
    "numerical": """mean median std var sum count_nonzero histogram histogram2d unique argmax
        argmin percentile quantile diff absdiff difference calcHist hist bincount polyfit
        corrcoef cov average nonzero argwhere where getcolors mode linregress pearsonr
        ttest_ind norm lstsq cumsum gradient""",
}.items():
    for _name in _names.split():
        _CALLS.setdefault(_name, _category)

# Calls that count only with a given receiver: (receiver's last name part, call).
_QUALIFIED = {
    ("cv2", "line"): "sketching",
    ("cv2", "circle"): "sketching",
    ("draw", "line"): "sketching",
    ("draw", "text"): "sketching",
    ("draw", "point"): "sketching",
    ("d", "line"): "sketching",
    ("d", "text"): "sketching",
    ("plt", "text"): "sketching",
    ("ax", "text"): "sketching",
    ("plt", "scatter"): "sketching",
    ("ax", "scatter"): "sketching",
    ("plt", "grid"): "sketching",
    ("ax", "grid"): "sketching",
    ("plt", "plot"): "sketching",
    ("ax", "plot"): "sketching",
    ("np", "max"): "numerical",
    ("np", "min"): "numerical",
    ("np", "abs"): "numerical",
    ("ImageChops", "subtract"): "numerical",
}
# Imports that say it by themselves.
_MODULES = {
    "pytesseract": "advanced",
    "easyocr": "advanced",
    "torch": "advanced",
    "torchvision": "advanced",
    "ultralytics": "advanced",
    "transformers": "advanced",
    "skimage.segmentation": "advanced",
    "skimage.feature": "advanced",
    "skimage.measure": "advanced",
    "sklearn.cluster": "advanced",
    "scipy.ndimage": "numerical",
    "scipy.stats": "numerical",
    "statistics": "numerical",
    "ImageDraw": "sketching",
    "PIL.ImageDraw": "sketching",
    "matplotlib.patches": "sketching",
    "ImageEnhance": "basic",
    "PIL.ImageEnhance": "basic",
    "ImageOps": "basic",
    "PIL.ImageOps": "basic",
}


@dataclass(frozen=True)
class ToolClass:
    """How one tool was classified.

    ``primary`` is one of :data:`CATEGORIES`; ``categories`` all that were found
    (``{"other"}`` when none); ``operations`` the names that decided, for audits.
    """

    primary: str
    categories: frozenset[str]
    operations: tuple[str, ...] = field(default=())


def _dotted(node: ast.AST) -> list[str]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif isinstance(node, ast.Call):
        parts.extend(reversed(_dotted(node.func)))
    return list(reversed(parts))


def _is_2d_slice(node: ast.Subscript) -> bool:
    index = node.slice
    return (isinstance(index, ast.Tuple) and sum(isinstance(e, ast.Slice) for e in index.elts) >= 2
            and any(isinstance(e, ast.Slice) and (e.lower or e.upper) for e in index.elts))


def _classify_call(parts: list[str]) -> str | None:
    if not parts:
        return None
    name = parts[-1]
    receiver = parts[-2] if len(parts) > 1 else ""
    for qualifier in (receiver, parts[0]):
        if (qualifier, name) in _QUALIFIED:
            return _QUALIFIED[(qualifier, name)]
    category = _CALLS.get(name)
    if category == "advanced" and name == "label" and receiver not in ("ndimage", "measure"):
        return None  # "label" is a common word; only scipy/skimage's labelling counts
    if category == "basic" and name == "filter" and receiver in ("", "builtins"):
        return None  # the builtin filter()
    if category == "numerical" and name in ("sum", "mean") and receiver == "":
        return category if name == "mean" else None  # builtin sum() of a list is not analysis
    return category


def _from_tokens(code: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for parts in re.findall(r"([A-Za-z_][\w.]*)\s*\(", code):
        category = _classify_call(parts.split("."))
        if category:
            found.setdefault(parts, category)
    for module, category in _MODULES.items():
        if re.search(rf"\b(import|from)\s+{re.escape(module)}\b", code):
            found.setdefault(module, category)
    return found


def classify_tool(code: str) -> ToolClass:
    """Classify one tool's code into the paper's categories (see the module docstring)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        found = _from_tokens(code)
    else:
        found = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                parts = _dotted(node.func)
                category = _classify_call(parts)
                if category:
                    found.setdefault(".".join(parts), category)
            elif isinstance(node, ast.Subscript) and _is_2d_slice(node):
                found.setdefault("array[y0:y1, x0:x1]", "basic")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{n}" for n in names] + names
                for name in names:
                    if name in _MODULES:
                        found.setdefault(name, _MODULES[name])
    categories = frozenset(found.values()) or frozenset({"other"})
    primary = next((c for c in PRIORITY if c in categories), "other")
    return ToolClass(primary, categories, tuple(sorted(found)))
