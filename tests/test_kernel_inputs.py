"""Input images in real child kernels: bound as RGB, originals kept, files by bare name.

Each test runs in the three ways a kernel can be made here: forked from the
template in the shared sandbox (the default), launched into a sandbox of its
own (``fork=False``), and forked without the sandbox (Landlock only).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from test_kernel import _LoopThread, loop, run, text_of  # noqa: F401

from pyvision_magic._prompt import question_message, system_prompt
from pyvision_magic._records import ImageInput
from pyvision_magic.kernel._child import ChildKernel

MODES = {
    "forked-sandbox": {},
    "launched-sandbox": {"fork": False},
    "forked-landlock": {"sandbox": False},
}


@pytest.fixture(scope="module", params=list(MODES))
def kernel(request, loop: _LoopThread) -> Iterator[ChildKernel]:  # noqa: F811
    if request.param != "forked-landlock" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (Debian package `bubblewrap`)")
    child = ChildKernel(timeout=20.0, interrupt_grace=1.0, **MODES[request.param])
    loop.run(child.start())
    yield child
    loop.run(child.shutdown())


def encoded(image: Image.Image, fmt: str = "PNG", name: str = "input.png") -> ImageInput:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return ImageInput(name=name, data=buffer.getvalue(), mime=mime,
                      width=image.size[0], height=image.size[1])


def rgba_input() -> ImageInput:
    """Left half opaque red, right half fully transparent black."""
    pixels = np.zeros((20, 40, 4), np.uint8)
    pixels[:, :20] = (255, 0, 0, 255)
    return encoded(Image.fromarray(pixels, "RGBA"))


def probe(loop, kernel, code: str):  # noqa: F811
    result = run(loop, kernel, code)
    assert result.status == "ok", text_of(result)
    return json.loads(text_of(result))


def test_inputs_are_rgb_with_transparency_on_white_and_originals_kept(loop, kernel):  # noqa: F811
    gray = encoded(Image.new("L", (30, 10), 77))
    palette = encoded(Image.new("RGB", (30, 10), (0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE))
    wide = encoded(Image.fromarray(np.full((10, 30), 65535, np.uint16)))
    assert loop.run(kernel.bind_images([rgba_input(), gray, palette, wide])) == [
        "image_clue_0", "image_clue_1", "image_clue_2", "image_clue_3"]
    found = probe(loop, kernel, """
import json
arrays = [np.array(globals()[f"image_clue_{i}"]) for i in range(4)]
h, w, c = arrays[0].shape  # the shape real model code unpacks
print(json.dumps({
    "modes": [globals()[f"image_clue_{i}"].mode for i in range(4)],
    "originals": [globals()[f"image_clue_{i}_original"].mode for i in range(4)],
    "shape": [h, w, c],
    "rgba_left": arrays[0][0, 0].tolist(), "rgba_right": arrays[0][0, 39].tolist(),
    "gray": arrays[1][0, 0].tolist(), "palette": arrays[2][0, 0].tolist(),
    "wide": arrays[3][0, 0].tolist(),
    "original_right": list(image_clue_0_original.getpixel((39, 0))),
    "pixels": np.array(image_clue_0).reshape(-1, 3).shape[0],
}))
""")
    assert found["modes"] == ["RGB"] * 4
    assert found["originals"][0] == "RGBA" and found["originals"][1] == "L"
    assert found["shape"] == [20, 40, 3] and found["pixels"] == 800
    assert found["rgba_left"] == [255, 0, 0] and found["rgba_right"] == [255, 255, 255]
    assert found["original_right"] == [0, 0, 0, 0]  # the original keeps its alpha
    assert found["gray"] == [77, 77, 77] and found["palette"] == [0, 128, 255]
    assert found["wide"] == [255, 255, 255]  # 16-bit white is white, not clipped noise


def test_an_rgb_input_is_its_own_original(loop, kernel):  # noqa: F811
    loop.run(kernel.bind_images([encoded(Image.new("RGB", (8, 6), "blue"))]))
    assert probe(loop, kernel, "print(json.dumps(image_clue_0_original is image_clue_0))") is True


def test_input_files_open_by_the_bare_name_and_under_inputs(loop, kernel):  # noqa: F811
    photo = encoded(Image.new("RGB", (32, 24), (10, 200, 30)), "JPEG", name="photo.jpg")
    loop.run(kernel.bind_images([rgba_input(), photo]))
    found = probe(loop, kernel, """
import json, cv2
print(json.dumps({
    "pil": Image.open("image_clue_0.png").size,
    "cv2": cv2.imread("image_clue_0.png").shape,
    "jpeg": Image.open("image_clue_1.jpg").size,
    "inputs": Image.open("inputs/image_clue_1.jpg").size,
}))
""")
    assert found == {"pil": [40, 20], "cv2": [20, 40, 3], "jpeg": [32, 24], "inputs": [32, 24]}


def test_restart_binds_rgb_again_and_never_writes_through_a_planted_link(
        loop, kernel, tmp_path):  # noqa: F811
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    loop.run(kernel.bind_images([rgba_input()]))
    # The tool swaps the bare-name file for a link to a file of the user's, then dies:
    # the restart writes the input again, and must replace the link, not follow it.
    died = run(loop, kernel, f"import os\nos.remove('image_clue_0.png')\n"
                             f"os.symlink({str(victim)!r}, 'image_clue_0.png')\nos._exit(1)")
    assert died.status == "died"
    assert victim.read_text() == "the user's file"
    assert probe(loop, kernel, "import json, os\nprint(json.dumps([image_clue_0.mode, "
                               "os.path.islink('image_clue_0.png'), "
                               "Image.open('image_clue_0.png').mode]))") == ["RGB", False, "RGBA"]


def test_the_prompt_says_rgb_and_names_each_file():
    images = [rgba_input(), encoded(Image.new("RGB", (4, 4)), "JPEG", name="cat.jpg")]
    message = question_message("What is it?", images, lambda image: "data:,")
    labels = [part["text"] for part in message["content"] if part["type"] == "text"]
    assert "file image_clue_0.png" in labels[0] and "file image_clue_1.jpg" in labels[1]
    prompt = system_prompt(libraries=["numpy 2"], python="3.11", timeout=60)
    assert "RGB PIL images" in prompt and "working folder" in prompt


def test_inputs_sent_as_bytes_get_their_file_too(loop, kernel):  # noqa: F811
    # A gateway's kernel shares no file system with us: its images come as bytes,
    # bound by a silent call as here.
    photo = encoded(Image.new("RGB", (12, 8), (200, 10, 10)), "JPEG")
    names = loop.run(kernel._conn.call(
        f"bind_inputs([('image_clue_0', __import__('io').BytesIO({photo.data!r}))])"))
    assert names == ["image_clue_0"]
    found = probe(loop, kernel, "import json\n"
                                "print(json.dumps([image_clue_0.mode, Image.open('image_clue_0.jpg').size]))")
    assert found == ["RGB", [12, 8]]
