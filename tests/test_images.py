"""Tests for pyvision_magic._images: loading every kind of source, and model encoding."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageFont

from pyvision_magic import _images
from pyvision_magic._errors import ConfigError, ImageInputError
from pyvision_magic._images import (
    DEFAULT_LINE_ART_MAX_PIXELS,
    DEFAULT_MAX_PIXELS,
    encode_for_model,
    load_image,
    to_data_url,
)
from pyvision_magic._records import ImageInput


def encoded(im: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def pixels(data: bytes, mode: str | None = None) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    return np.asarray(im.convert(mode) if mode else im)


def line_drawing(size: tuple[int, int], *, antialiased: bool = False) -> Image.Image:
    """1-px lines, outlines and text on white, as a diagram or a plot would have."""
    width, height = size
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    draw.fontmode = "L" if antialiased else "1"
    for x in range(0, width, 23):
        draw.line([(x, 0), (width - 1 - x // 2, height - 1)], fill=(0, 0, 0), width=1)
    for k in range(8):
        draw.rectangle([20 + 60 * k, 30, 60 + 60 * k, 90 + 15 * k], outline=(220, 30, 30))
    draw.ellipse([width // 3, height // 3, width // 2, height // 2], outline=(20, 60, 200), width=2)
    font = ImageFont.load_default(size=18)
    for row in range(6):
        label = f"Node {row} -> edge weight 0.{row}7"
        draw.text((30, height // 2 + 30 * row), label, fill=(25, 25, 25), font=font)
    return im


@pytest.fixture(scope="module")
def big_photo_jpeg() -> bytes:
    """A 12-megapixel noisy photo, as a camera would save it."""
    rng = np.random.default_rng(0)
    up = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((4000, 3000), Image.Resampling.BICUBIC))
    noisy = np.clip(up + rng.normal(0, 5, up.shape), 0, 255).astype(np.uint8)
    return encoded(Image.fromarray(noisy), "JPEG", quality=90)


# ---------------------------------------------------------------- load_image: sources


def test_png_and_jpeg_files_keep_their_bytes(tmp_path: Path) -> None:
    photo = Image.fromarray(skimage.data.coffee())
    for name, fmt, mime in [("coffee.png", "PNG", "image/png"), ("coffee.jpg", "JPEG", "image/jpeg")]:
        path = tmp_path / name
        path.write_bytes(encoded(photo, fmt))
        image = load_image(path)
        assert (image.name, image.mime, image.data) == (name, mime, path.read_bytes())
        assert (image.width, image.height) == (600, 400)
    assert load_image(str(tmp_path / "coffee.png"), name="cup").name == "cup"


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "WEBP", "GIF"])
def test_other_formats_become_lossless_png(tmp_path: Path, fmt: str) -> None:
    original = Image.fromarray(skimage.data.astronaut()[:200, :300])
    path = tmp_path / f"picture.{fmt.lower()}"
    path.write_bytes(encoded(original, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    image = load_image(path)
    assert (image.mime, image.width, image.height) == ("image/png", 300, 200)
    with Image.open(path) as im:
        assert np.array_equal(pixels(image.data, "RGB"), np.asarray(im.convert("RGB")))


def test_bytes_and_pil_sources() -> None:
    data = encoded(Image.fromarray(skimage.data.coins()), "PNG")
    for source in (data, bytearray(data), memoryview(data)):
        image = load_image(source)
        assert (image.name, image.data, image.width, image.height) == ("image", data, 384, 303)
    pil = Image.fromarray(skimage.data.astronaut()).convert("CMYK")  # PNG cannot store CMYK
    image = load_image(pil, name="astro")
    assert (image.name, image.mime, image.width) == ("astro", "image/png", 512)
    assert np.array_equal(pixels(image.data), np.asarray(pil.convert("RGB")))


def test_pil_image_opened_from_a_file_is_named_after_it(tmp_path: Path) -> None:
    path = tmp_path / "coins.png"
    Image.fromarray(skimage.data.coins()).save(path)
    with Image.open(path) as im:
        assert load_image(im).name == "coins.png"


def test_arrays_gray_rgb_rgba_float_bool() -> None:
    rgb = skimage.data.astronaut()
    gray = skimage.data.coins()
    assert np.array_equal(pixels(load_image(rgb).data), rgb)
    assert np.array_equal(pixels(load_image(gray).data), gray)
    assert np.array_equal(pixels(load_image(gray[..., None]).data), gray)
    assert np.array_equal(pixels(load_image(rgb / 255.0).data), rgb)
    assert np.array_equal(pixels(load_image(rgb.astype(np.int64)).data), rgb)
    mask = skimage.data.horse()
    assert np.array_equal(pixels(load_image(mask).data), mask.astype(np.uint8) * 255)
    logo = skimage.data.logo()  # RGBA with real transparency
    image = load_image(logo)
    assert Image.open(io.BytesIO(image.data)).mode == "RGBA"
    assert np.array_equal(pixels(image.data), logo)
    assert (image.width, image.height) == (500, 500)


def test_bgr_flag_swaps_channels() -> None:
    rgb = skimage.data.coffee()
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # what cv2.imread gives
    assert np.array_equal(pixels(load_image(bgr, bgr=True).data), rgb)
    bgra = np.dstack([bgr, np.full(rgb.shape[:2], 200, np.uint8)])
    assert np.array_equal(pixels(load_image(bgra, bgr=True).data)[..., :3], rgb)
    gray = skimage.data.coins()
    assert np.array_equal(pixels(load_image(gray, bgr=True).data), gray)


def test_matplotlib_figure_is_rendered() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=50)
    ax.plot([0, 1, 2], [2, 0, 1])
    try:
        image = load_image(fig)
    finally:
        plt.close(fig)
    assert (image.name, image.mime, image.width, image.height) == ("figure", "image/png", 200, 150)


def test_exif_rotated_jpeg_comes_out_upright(tmp_path: Path) -> None:
    upright = np.zeros((300, 200, 3), np.uint8)  # portrait: red on top, blue below
    upright[:150] = (255, 0, 0)
    upright[150:] = (0, 0, 255)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # as the sensor saw it
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    path.write_bytes(encoded(stored, "JPEG", quality=95, exif=exif))
    for image in (load_image(path), ImageInput("raw", path.read_bytes(), "image/jpeg", 300, 200)):
        mime, data = encode_for_model(image)
        sent = pixels(data, "RGB")
        assert sent.shape == (300, 200, 3)
        assert sent[20, 100, 0] > 200 and sent[280, 100, 2] > 200
    image = load_image(path)
    assert (image.width, image.height, image.mime) == (200, 300, "image/jpeg")


def test_no_heavy_imports_when_the_package_is_imported() -> None:
    code = (
        "import sys, pyvision_magic._images; "
        "print(sorted({'PIL', 'numpy', 'matplotlib'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- load_image: user mistakes


def assert_advice(excinfo: pytest.ExceptionInfo, *words: str) -> None:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ConfigError)
    assert "Traceback" not in message and message.endswith(".")
    for word in words:
        assert word in message, message


def test_missing_file_directory_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError) as excinfo:
        load_image(tmp_path / "photo.png")
    assert_advice(excinfo, "Image file not found", "photo.png", "Check the path")
    assert excinfo.value.source.endswith("photo.png")
    with pytest.raises(ImageInputError) as excinfo:
        load_image(tmp_path)
    assert_advice(excinfo, "is a directory", str(tmp_path))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageInputError) as excinfo:
        load_image(tmp_path / "empty.png")
    assert_advice(excinfo, "empty.png", "is empty")
    with pytest.raises(ImageInputError) as excinfo:
        load_image(b"")
    assert_advice(excinfo, "empty")
    with pytest.raises(ImageInputError) as excinfo:
        load_image("https://example.com/cat.png")
    assert_advice(excinfo, "URLs are not supported", "Download")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(encoded(Image.new("L", (4, 4)), "PNG"))
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make the OS refusal happen anyway
        def refuse(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ImageInputError) as excinfo:
        load_image(path)
    assert_advice(excinfo, "secret.png", "permission denied", "permissions")


def test_not_an_image_and_corrupt_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("these are notes, not pixels")
    with pytest.raises(ImageInputError) as excinfo:
        load_image(text)
    assert_advice(excinfo, "notes.png", "not an image")
    photo = Image.fromarray(skimage.data.astronaut())
    png, jpeg = encoded(photo, "PNG"), encoded(photo, "JPEG")
    for name, data in [("cut.png", png[: len(png) // 2]), ("cut.jpg", jpeg[:3000])]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageInputError) as excinfo:
            load_image(tmp_path / name)
        assert_advice(excinfo, name, "truncated or corrupt")


def test_unsupported_object_types_list_what_is_accepted() -> None:
    for source in (42, [[0, 1], [1, 0]], None):
        with pytest.raises(ImageInputError) as excinfo:
            load_image(source)
        assert_advice(excinfo, type(source).__name__, "file path", "numpy array", "PIL image", "Figure")


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((3, 64, 64), np.uint8), ["(3, 64, 64)", "transpose(1, 2, 0)"]),
        (np.zeros((8, 8, 2), np.uint8), ["(H, W, 3)"]),
        (np.zeros(10, np.uint8), ["(H, W)"]),
        (np.zeros((0, 5), np.uint8), ["no pixels"]),
        (np.full((4, 4), 2.0), ["[0, 1]", "by 255"]),
        (np.array([[0.5, np.nan]]), ["NaN"]),
        (np.full((4, 4), 1000, np.uint16), ["0 to 255", "1000", "uint8"]),
        (np.zeros((4, 4), complex), ["complex128", "uint8"]),
    ],
)
def test_bad_arrays(array: np.ndarray, words: list[str]) -> None:
    with pytest.raises(ImageInputError) as excinfo:
        load_image(array)
    assert_advice(excinfo, *words)


@pytest.mark.parametrize("limit", [60 * 50, 100 * 100 // 2 - 1])  # warning range, error range
def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(encoded(Image.new("1", (100, 100)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ImageInputError) as excinfo:
        load_image(path)
    assert_advice(excinfo, "bomb.png", "decompression bomb", "downscale")


# ---------------------------------------------------------------- encode_for_model


def test_big_photo_fits_the_budget_and_keeps_its_aspect(big_photo_jpeg: bytes) -> None:
    image = load_image(big_photo_jpeg)
    mime, data = encode_for_model(image)
    width, height = Image.open(io.BytesIO(data)).size
    assert mime == "image/jpeg"
    assert width * height <= DEFAULT_MAX_PIXELS
    assert abs(height - width * 3000 / 4000) <= 1
    assert width * height > 0.99 * DEFAULT_MAX_PIXELS
    assert len(data) < len(big_photo_jpeg) / 10
    mime, data = encode_for_model(image, max_pixels=100_000)
    assert np.prod(Image.open(io.BytesIO(data)).size) <= 100_000


def test_big_photo_from_an_array_is_downscaled() -> None:
    photo = np.asarray(Image.fromarray(skimage.data.coffee()).resize((1500, 1000)))
    mime, data = encode_for_model(load_image(photo), max_pixels=300_000)
    width, height = Image.open(io.BytesIO(data)).size
    assert mime == "image/jpeg" and width * height <= 300_000 and abs(height - width / 1.5) <= 1


def test_jpeg_within_budget_is_sent_unchanged() -> None:
    data = encoded(Image.fromarray(skimage.data.astronaut()), "JPEG", quality=80)
    assert encode_for_model(load_image(data)) == ("image/jpeg", data)


@pytest.mark.parametrize("antialiased", [False, True])
def test_line_art_is_sent_losslessly_at_full_size(antialiased: bool) -> None:
    drawing = line_drawing((1600, 1200), antialiased=antialiased)  # 1.9 MP: over the photo budget
    assert _images._measure(drawing)[0]
    mime, data = encode_for_model(load_image(drawing))
    assert mime == "image/png"
    assert np.array_equal(pixels(data, "RGB"), np.asarray(drawing))
    if not antialiased:  # few colours: the exact palette PNG wins
        assert Image.open(io.BytesIO(data)).mode == "P"
        assert len(data) < len(encoded(drawing, "PNG"))


def test_gray_line_art_and_original_png_candidates() -> None:
    drawing = line_drawing((800, 600)).convert("L")
    original = encoded(drawing, "PNG", compress_level=9)
    mime, data = encode_for_model(load_image(original))
    assert mime == "image/png" and len(data) <= len(original)
    assert np.array_equal(pixels(data, "L"), np.asarray(drawing))


def test_huge_line_art_is_downscaled_to_its_budget() -> None:
    drawing = line_drawing((1200, 900))
    mime, data = encode_for_model(load_image(drawing), line_art_max_pixels=300_000)
    width, height = Image.open(io.BytesIO(data)).size
    assert mime == "image/png" and width * height <= 300_000 and abs(height - width * 0.75) <= 1


def test_clean_line_art_saved_as_jpeg_is_passed_through() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=200)  # 1600 x 1200: over the photo budget
    ax.plot([0, 1, 2, 3], [1, 3, 2, 4])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", pil_kwargs={"quality": 90})
    plt.close(fig)
    data = buffer.getvalue()
    assert encode_for_model(load_image(data)) == ("image/jpeg", data)
    # Over both budgets: decoded again at the line-art budget, not the photo one.
    mime, sent = encode_for_model(load_image(data), max_pixels=200_000, line_art_max_pixels=1_000_000)
    width, height = Image.open(io.BytesIO(sent)).size
    assert mime == "image/png" and 990_000 < width * height <= 1_000_000


@pytest.mark.parametrize("name", ["astronaut", "coffee", "coins", "camera", "moon", "chelsea", "text"])
def test_photos_are_not_line_art(name: str) -> None:
    assert not _images._measure(Image.fromarray(getattr(skimage.data, name)()))[0]


def test_plots_and_masks_are_line_art() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    x = np.linspace(0, 10, 400)
    ax.plot(x, np.sin(x), x, np.cos(x))
    ax.set_title("Two curves")
    ax.grid(True)
    image = load_image(fig)
    plt.close(fig)
    mime, data = encode_for_model(image)
    assert mime == "image/png"
    assert np.array_equal(pixels(data, "RGB"), pixels(image.data, "RGB"))
    assert _images._measure(Image.fromarray(skimage.data.horse().astype(np.uint8) * 255))[0]


def test_transparency_is_flattened_on_white() -> None:
    rgba = np.zeros((1200, 1000, 4), np.uint8)  # transparent black, with an opaque red square
    rgba[100:300, 100:300] = (255, 0, 0, 255)
    rgba[500:700, 100:300] = (0, 0, 255, 128)
    mime, data = encode_for_model(load_image(rgba))
    sent = pixels(data, "RGB")
    assert mime == "image/png" and sent.shape == (1200, 1000, 3)
    assert tuple(sent[0, 0]) == (255, 255, 255)
    assert tuple(sent[200, 200]) == (255, 0, 0)
    assert tuple(sent[600, 200]) == (127, 127, 255)


def test_sixteen_bit_png_is_scaled_to_eight_bits() -> None:
    ramp = (np.arange(256 * 64, dtype=np.uint32).reshape(64, 256) * 4).astype(np.uint16)
    image = load_image(encoded(Image.fromarray(ramp), "PNG"))
    assert image.mime == "image/png"
    sent = pixels(encode_for_model(image)[1], "L")
    assert abs(int(sent.max()) - 255) <= 1 and sent.min() == 0


def test_bad_budgets_are_config_errors() -> None:
    image = load_image(skimage.data.coins())
    with pytest.raises(ConfigError, match="max_pixels=0"):
        encode_for_model(image, max_pixels=0)
    with pytest.raises(ConfigError, match="jpeg_quality=101"):
        encode_for_model(image, jpeg_quality=101)


def test_data_url_round_trips() -> None:
    mime, data = encode_for_model(load_image(skimage.data.coins()))
    url = to_data_url(mime, data)
    assert url.startswith(f"data:{mime};base64,")
    import base64

    assert base64.b64decode(url.split(",", 1)[1]) == data


def test_defaults() -> None:
    assert DEFAULT_MAX_PIXELS == 1024 * 1024
    assert DEFAULT_LINE_ART_MAX_PIXELS == 4 * 1024 * 1024
