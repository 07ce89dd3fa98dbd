"""Load the images users have at hand, and encode them for the model.

:func:`load_image` turns a file path, encoded bytes, a PIL image, a numpy array or a
matplotlib ``Figure`` into an :class:`ImageInput`: the master copy that tools see as
``image_clue_N``. PNG and JPEG files keep their original bytes; anything else (TIFF,
BMP, WebP, GIF, arrays, PIL images, figures) becomes a lossless PNG. An EXIF
orientation is applied, so phone photos come out upright; a rotated JPEG is
re-encoded at quality 95 with full-resolution colour, far below the noise the original
compression already left, because a lossless PNG of a 12-megapixel photo takes seconds.

:func:`encode_for_model` decides what the model receives, by these rules:

1. **Photos are downscaled to** ``max_pixels`` **(default 1024 x 1024 = 1 MP)**,
   keeping the aspect ratio (within 1 px), with Lanczos resampling; big JPEGs are first
   decoded at 1/2, 1/4 or 1/8 scale, which is nearly free. That is about what endpoints
   keep anyway: OpenAI's high detail mode fits the short side to 768 px (0.79 MP for
   4:3), Anthropic resizes past ~1.15 MP, Qwen2.5-VL is commonly served at
   1280 x 28 x 28 = 1.0 MP. Larger uploads cost time and tokens for nothing; the tools
   still work on the full-resolution master.
2. **Line art** (diagrams, plots, screenshots, scans of drawings) is sent as lossless
   PNG: decoding it gives exactly the pixels of the master, and it is not resized up to
   ``line_art_max_pixels`` (default 4 MP), because downscaling erases 1-px lines and
   small text, and flat images compress well. Of the truecolour PNG, an exact palette
   PNG (when there are at most 256 colours) and the original PNG file, the smallest
   is sent. Larger line art is area-averaged down to that budget, which does not ring.
3. **Detecting line art** costs a few milliseconds: on up to 2^18 pixels in evenly
   spaced whole rows, line art has at least 75 % of neighbouring pixels exactly equal
   (large flat areas; sensor noise makes this rare in photos) and few distinct colours
   (at most 256, or 2 % of the sampled pixels; anti-aliasing adds some, a photo has
   tens of thousands). Gray images always have few colours, so flatness decides.
4. **Photos are sent as JPEG** at ``jpeg_quality`` (85), or as PNG when that is smaller
   (PNG is only tried when at least half of the neighbouring pixels are equal, since
   deflating a noisy photo is slow and never wins).
5. **A JPEG within its budget is sent unchanged**, byte for byte: re-encoding would only
   add generation loss. (JPEG noise makes most line art saved as JPEG look like a photo,
   so it gets the photo budget; clean line art JPEGs keep theirs.)
6. **Transparency is flattened on white**, as an image viewer shows it: an endpoint that
   drops alpha would otherwise show whatever colour hides under transparent pixels (often
   black, hiding black text). The master keeps the alpha channel.
"""

from __future__ import annotations

import base64
import io
import math
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError, ImageInputError
from ._records import ImageInput

if TYPE_CHECKING:  # PIL and numpy are imported lazily so importing the package stays fast
    import numpy as np
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_LINE_ART_MAX_PIXELS",
    "DEFAULT_JPEG_QUALITY",
    "load_image",
    "encode_for_model",
    "to_data_url",
]

DEFAULT_MAX_PIXELS = 1024 * 1024
DEFAULT_LINE_ART_MAX_PIXELS = 4 * 1024 * 1024
DEFAULT_JPEG_QUALITY = 85

_ROTATED_JPEG_QUALITY = 95
_SAMPLE_PIXELS = 1 << 18
_LINE_ART_MIN_FLAT = 0.75
_LINE_ART_MAX_DISTINCT = 0.02
_PNG_TRIAL_MIN_FLAT = 0.5
_KEPT_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg"}
_ACCEPTED = "a file path, encoded image bytes, a PIL image, a numpy array or a matplotlib Figure"


def load_image(source: Any, *, name: str | None = None, bgr: bool = False) -> ImageInput:
    """Read an image from a path, bytes, a PIL image, a numpy array or a Figure.

    Parameters
    ----------
    source : str, os.PathLike, bytes, PIL.Image.Image, numpy.ndarray or Figure
        A file path; the bytes of an image file; a PIL image; an array of shape (H, W),
        (H, W, 3) or (H, W, 4) of uint8 (or integers in 0-255), floats in [0, 1] or bools;
        or a matplotlib figure, rendered to PNG.
    name : str, optional
        Name shown to the model: the file name by default, else "image" ("figure").
    bgr : bool
        The array's channels are in OpenCV's BGR(A) order.

    Returns
    -------
    ImageInput
        Encoded bytes, MIME type and size of the upright image.

    Raises
    ------
    ImageInputError
        When the source cannot be found, read or decoded; the message says what to do.
    """
    if isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        if isinstance(label, bytes):
            label = os.fsdecode(label)
        if label.startswith(("http://", "https://")):
            msg = f"Image URLs are not supported: {label}. Download the file and pass its path."
            raise ImageInputError(msg, source=label)
        return _from_encoded(_read_file(Path(label), label), name or Path(label).name, label)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not source:
            msg = "The image bytes are empty. Pass the contents of an image file."
            raise ImageInputError(msg, source="<bytes>")
        return _from_encoded(bytes(source), name or "image", "<bytes>")
    # Only an imported module can have made the object, so checking sys.modules keeps
    # numpy, PIL and matplotlib out of the import path of the package.
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(source, pil.Image):
        filename = getattr(source, "filename", "") or ""
        return _from_pil(source, name or Path(filename or "image").name, filename or "<PIL image>")
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(source, numpy.ndarray):
        return _from_pil(_array_to_pil(source, bgr), name or "image", "<array>")
    figure = sys.modules.get("matplotlib.figure")
    if figure is not None and isinstance(source, figure.Figure):
        buffer = io.BytesIO()
        source.savefig(buffer, format="png")
        return _from_encoded(buffer.getvalue(), name or "figure", "<Figure>")
    kind = type(source).__name__
    raise ImageInputError(f"Cannot use a {kind} as an image; pass {_ACCEPTED}.", source=kind)


def encode_for_model(
    image: ImageInput,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    line_art_max_pixels: int = DEFAULT_LINE_ART_MAX_PIXELS,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    short_side: int | None = None,
) -> tuple[str, bytes]:
    """Choose the bytes to send to the model for an image (see the module rules).

    Parameters
    ----------
    image : ImageInput
        The master image, as made by :func:`load_image`.
    max_pixels : int
        Pixel budget for photos; larger ones are downscaled to fit.
    line_art_max_pixels : int
        Pixel budget for line art, which is sent as lossless PNG.
    jpeg_quality : int
        JPEG quality for photos, 1 to 95.
    short_side : int, optional
        The short side the endpoint scales photos down to (768 for OpenAI's high
        detail). A photo that is downscaled anyway is sent at that size when it is
        smaller than the budget's, its long side rounded down, so that rounding never
        adds a column of tiles (a 4:3 photo goes as 1024x768, not 1182x886).

    Returns
    -------
    tuple of (str, bytes)
        MIME type (``"image/jpeg"`` or ``"image/png"``) and the encoded image.
    """
    if max_pixels < 1 or line_art_max_pixels < 1 or not 1 <= jpeg_quality <= 95:
        raise ConfigError(
            f"Pixel budgets must be at least 1 and jpeg_quality 1 to 95, not max_pixels={max_pixels}, "
            f"line_art_max_pixels={line_art_max_pixels}, jpeg_quality={jpeg_quality}; the defaults "
            f"are {DEFAULT_MAX_PIXELS}, {DEFAULT_LINE_ART_MAX_PIXELS} and {DEFAULT_JPEG_QUALITY}."
        )
    from PIL import Image

    with _decoding(image.name):
        im = Image.open(io.BytesIO(image.data))
    is_jpeg = im.format in ("JPEG", "MPO")
    if is_jpeg:  # only JPEG: PNG's getexif() would decode the whole file
        stored, orientation = im.size, _orientation(im)
        size = stored[::-1] if orientation in (5, 6, 7, 8) else stored
        sendable_jpeg = im.mode in ("L", "RGB") and orientation <= 1
        if sendable_jpeg and size[0] * size[1] <= max_pixels:
            return "image/jpeg", image.data
        # JPEG decodes at 1/2, 1/4 or 1/8 scale almost for free; aim at the photo budget.
        with _decoding(image.name):
            im.draft(im.mode, _fit(stored, max_pixels))
        im = _upright(im, image.name)
        original_png = False
    else:
        header = (im.format, im.mode, "transparency" in im.info, getattr(im, "n_frames", 1))
        with _decoding(image.name):
            im.load()
        original_png = header[0] == "PNG" and header[3] == 1 and _orientation(im) <= 1 and (
            header[1] in ("1", "L", "RGB") or (header[1] == "P" and not header[2])
        )
        im = _upright(im, image.name)
        size, sendable_jpeg = im.size, False
    line_art, flatness = _measure(im)
    if line_art and sendable_jpeg and size[0] * size[1] <= line_art_max_pixels:
        return "image/jpeg", image.data
    target = _fit(size, line_art_max_pixels if line_art else max_pixels)
    if short_side and not line_art and target != size:
        target = _fit_short_side(size, short_side, target)
    if line_art and is_jpeg and im.size[0] < target[0]:
        # The draft was for the smaller photo budget: decode again for the line-art one.
        with _decoding(image.name):
            im = Image.open(io.BytesIO(image.data))
            im.draft(im.mode, _fit(stored, line_art_max_pixels))
        im = _upright(im, image.name)
    if not line_art:
        if im.size != target:
            im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        jpeg = _encode(im, "JPEG", quality=jpeg_quality, optimize=True)
        if flatness >= _PNG_TRIAL_MIN_FLAT:
            png = _encode(im, "PNG")
            if len(png) < len(jpeg):
                return "image/png", png
        return "image/jpeg", jpeg
    if im.size != target:
        im = im.resize(target, Image.Resampling.BOX)
    candidates = [_encode(im, "PNG")]
    palette = _exact_palette(im)
    if palette is not None:
        candidates.append(_encode(palette, "PNG"))
    if original_png and target == size:
        candidates.append(image.data)
    return "image/png", min(candidates, key=len)


def to_data_url(mime: str, data: bytes) -> str:
    """Return a ``data:`` URL (``data:image/png;base64,...``) for the image bytes.

    Parameters
    ----------
    mime : str
        MIME type, e.g. ``"image/png"``.
    data : bytes
        The encoded image.
    """
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _read_file(path: Path, label: str) -> bytes:
    if not label:
        raise ImageInputError("The image path is empty. Pass the path of an image file.")
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        msg = f"Image file not found: {label}. Check the path."
        raise ImageInputError(msg, source=label) from exc
    except IsADirectoryError as exc:
        msg = f"{label} is a directory, not an image file. Pass the path of an image inside it."
        raise ImageInputError(msg, source=label) from exc
    except PermissionError as exc:
        msg = f"Image file {label} cannot be read: permission denied. Check its permissions."
        raise ImageInputError(msg, source=label) from exc
    except OSError as exc:
        msg = f"Image file {label} cannot be read ({exc.strerror or exc}). Check the path."
        raise ImageInputError(msg, source=label) from exc
    if not data:
        msg = f"Image file {label} is empty (0 bytes). Check that it was saved completely."
        raise ImageInputError(msg, source=label)
    return data


@contextmanager
def _decoding(label: str) -> Iterator[None]:
    """Turn every failure to open or decode an image into an ImageInputError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; both mean a bomb here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        msg = (f"Image {label} has too many pixels to decode safely (a possible decompression "
               f"bomb, over {Image.MAX_IMAGE_PIXELS:,}); downscale it first, or raise "
               "PIL.Image.MAX_IMAGE_PIXELS if you trust the file.")
        raise ImageInputError(msg, source=label) from exc
    except UnidentifiedImageError as exc:
        msg = f"{label} is not an image file Pillow can read. Pass a PNG, JPEG, WebP, GIF, BMP or TIFF."
        raise ImageInputError(msg, source=label) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = f"Image {label} could not be decoded: it is truncated or corrupt. Save or download it again."
        raise ImageInputError(msg, source=label) from exc


def _orientation(im: Image.Image) -> int:
    return int(im.getexif().get(0x0112, 1) or 1)


def _from_encoded(data: bytes, name: str, label: str) -> ImageInput:
    from PIL import Image

    with _decoding(label):
        im = Image.open(io.BytesIO(data))
        im.load()
    mime = _KEPT_FORMATS.get(im.format or "")
    if _orientation(im) > 1:
        from PIL import ImageOps

        im = ImageOps.exif_transpose(im)
        if mime == "image/jpeg" and im.mode in ("L", "RGB"):
            data = _encode(im, "JPEG", quality=_ROTATED_JPEG_QUALITY, subsampling=0)
        else:
            mime = None
    if mime is None:
        data, mime = _master_png(im), "image/png"
    return ImageInput(name=name, data=data, mime=mime, width=im.width, height=im.height)


def _from_pil(im: Image.Image, name: str, label: str) -> ImageInput:
    from PIL import ImageOps

    with _decoding(label):
        im.load()
    if _orientation(im) > 1:
        im = ImageOps.exif_transpose(im)
    return ImageInput(name=name, data=_master_png(im), mime="image/png", width=im.width, height=im.height)


def _master_png(im: Image.Image) -> bytes:
    if im.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        if im.mode in ("I", "F") or im.mode.startswith("I;16"):
            im = _wide_to_gray(im)
        else:
            im = im.convert("RGBA" if "A" in im.mode.upper() else "RGB")
    # Level 1: the master is stored, not sent; higher levels take seconds on big photos.
    return _encode(im, "PNG", compress_level=1)


def _wide_to_gray(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit or float gray (TIFF, 16-bit PNG) to 8-bit, scaled by its type."""
    import numpy as np
    from PIL import Image

    a = np.asarray(im, dtype=np.float64)
    top = float(a.max()) if a.size else 0.0
    if im.mode == "F" and top <= 1.0:
        a = a * 255.0
    elif im.mode != "F" and (im.mode.startswith("I;16") or top > 255):
        a = a / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def _array_to_pil(arr: np.ndarray, bgr: bool) -> Image.Image:
    import numpy as np
    from PIL import Image

    label = f"<array of shape {arr.shape} and dtype {arr.dtype}>"
    a = arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    problem = None
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        hint = "; it looks channel-first, so pass arr.transpose(1, 2, 0)"
        hint = hint if a.ndim == 3 and a.shape[0] in (1, 3, 4) else ""
        problem = f"An image array must have shape (H, W), (H, W, 3) or (H, W, 4), not {arr.shape}{hint}."
    elif a.size == 0:
        problem = f"The image array {arr.shape} has no pixels; pass a non-empty array."
    elif a.dtype.kind not in "biuf":
        problem = f"Cannot use an array of dtype {arr.dtype} as an image; pass uint8, floats or bools."
    elif a.dtype.kind == "f" and not np.isfinite(a).all():
        problem = "The image array contains NaN or infinite values; replace them first (np.nan_to_num)."
    elif a.dtype.kind in "fiu":
        low, high = a.min().item(), a.max().item()
        if a.dtype.kind == "f" and (low < -1e-6 or high > 1 + 1e-6):
            problem = (f"A float image array must hold values in [0, 1], not [{low:.4g}, {high:.4g}]; "
                       "divide it by 255 if it holds 0-255 values.")
        elif a.dtype.kind != "f" and (low < 0 or high > 255):
            problem = (f"An integer image array must hold values 0 to 255, not {low} to {high}; "
                       "convert it to uint8 first (for 16-bit data, arr // 257).")
    if problem:
        raise ImageInputError(problem, source=label)
    if a.dtype.kind == "b":
        a = a.astype(np.uint8) * 255
    elif a.dtype.kind == "f":  # rint: k / 255 must come back as k
        a = np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        a = a.astype(np.uint8, copy=False)
    if bgr and a.ndim == 3:
        a = a[..., [2, 1, 0, 3][: a.shape[2]]]
    return Image.fromarray(np.ascontiguousarray(a))


def _upright(im: Image.Image, label: str) -> Image.Image:
    """Decode to an upright 8-bit L or RGB image, with transparency flattened on white."""
    from PIL import Image, ImageOps

    with _decoding(label):
        im.load()
    if _orientation(im) > 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in ("L", "RGB"):
        return im
    if im.mode == "1":
        return im.convert("L")
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return _wide_to_gray(im)
    if "A" not in im.mode.upper() and not (im.mode == "P" and "transparency" in im.info):
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    out_mode = "L" if im.mode in ("LA", "La") else "RGB"
    if rgba.getchannel("A").getextrema()[0] < 255:
        rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return rgba.convert(out_mode)


def _measure(im: Image.Image) -> tuple[bool, float]:
    """Return (looks like line art, fraction of equal neighbouring pixels) from a sample."""
    import numpy as np
    from PIL import Image

    width, height = im.size
    rows = max(1, min(height, _SAMPLE_PIXELS // max(width, 1)))
    # Nearest-neighbour on the height only picks whole rows: no new colours appear.
    sample = np.asarray(im if rows == height else im.resize((width, rows), Image.Resampling.NEAREST))
    if sample.ndim == 3:
        wide = sample.astype(np.uint32)
        sample = (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]
    codes = sample.ravel()
    flatness = float(np.count_nonzero(codes[1:] == codes[:-1])) / max(codes.size - 1, 1)
    few_colours = np.unique(codes).size <= max(256, _LINE_ART_MAX_DISTINCT * codes.size)
    return flatness >= _LINE_ART_MIN_FLAT and few_colours, flatness


def _exact_palette(im: Image.Image) -> Image.Image | None:
    """The same pixels as a palette image, when there are at most 256 colours."""
    import numpy as np
    from PIL import Image

    colours = im.getcolors(256)
    if colours is None:
        return None
    a = np.asarray(im)
    if im.mode == "L":
        codes, keys = a, np.array(sorted(c for _, c in colours), dtype=np.uint8)
        rgb = np.repeat(keys[:, None], 3, axis=1)
    else:
        wide = a.astype(np.uint32)
        codes = (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]
        keys = np.array(sorted((r << 16) | (g << 8) | b for _, (r, g, b) in colours), dtype=np.uint32)
        rgb = np.stack([keys >> 16, (keys >> 8) & 255, keys & 255], axis=1)
    palette = Image.fromarray(np.searchsorted(keys, codes).astype(np.uint8))
    palette.putpalette(rgb.astype(np.uint8).ravel().tolist())
    return palette


def _fit(size: tuple[int, int], budget: int) -> tuple[int, int]:
    """Largest size with the same aspect (within 1 px) and at most ``budget`` pixels."""
    width, height = size
    if width * height <= budget:
        return width, height
    flip = height > width
    long, short = (height, width) if flip else (width, height)
    new_long = max(1, int(long * math.sqrt(budget / (width * height))))
    new_short = max(1, round(short * new_long / long))
    if new_long * new_short > budget:  # rounding up overshot: rounding down is within 1 px too
        new_short = max(1, new_short - 1)
    return (new_short, new_long) if flip else (new_long, new_short)


def _fit_short_side(size: tuple[int, int], short_side: int,
                    target: tuple[int, int]) -> tuple[int, int]:
    """``size`` scaled to ``short_side`` (long side rounded down), if smaller than ``target``."""
    width, height = size
    if min(width, height) <= short_side:
        return target
    if width >= height:
        grid = (max(1, width * short_side // height), short_side)
    else:
        grid = (short_side, max(1, height * short_side // width))
    return grid if grid[0] * grid[1] < target[0] * target[1] else target


def _encode(im: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()
