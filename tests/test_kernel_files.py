"""What tools write and raise, as the model gets it, from real child kernels:
image files saved during an execution come back like shown images, photos come
as JPEG the parent passes on untouched, and host paths are shortened.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from collections.abc import Iterator

import pytest
from PIL import Image
from test_kernel import _LoopThread, decoded_size, images_of, loop, run, text_of  # noqa: F401

from pyvision_magic._images import encode_for_model
from pyvision_magic._prompt import output_as_image
from pyvision_magic.kernel._child import ChildKernel
from pyvision_magic.kernel._output import PathShortener

MODES = {"forked-sandbox": {}, "launched-sandbox": {"fork": False}, "forked-landlock": {"sandbox": False}}

PHOTO = "from skimage import data\nphoto = Image.fromarray(data.astronaut())\n"


@pytest.fixture(scope="module", params=list(MODES))
def kernel(request, loop: _LoopThread) -> Iterator[ChildKernel]:  # noqa: F811
    if request.param != "forked-landlock" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (Debian package `bubblewrap`)")
    child = ChildKernel(timeout=30.0, interrupt_grace=1.0, max_images=3, **MODES[request.param])
    loop.run(child.start())
    yield child
    loop.run(child.shutdown())


def ok(loop, kernel, code: str):  # noqa: F811
    result = run(loop, kernel, code)
    assert result.status == "ok", (text_of(result), result.note)
    return result


# -- saved files ----------------------------------------------------------------------


def test_files_saved_by_savefig_imwrite_and_save_come_back_bound(loop, kernel):  # noqa: F811
    result = ok(loop, kernel, """
import os
os.makedirs("out", exist_ok=True)
plt.plot([0, 1], [1, 0]); plt.savefig("line.png"); plt.close()
cv2.imwrite("out/block.jpg", np.full((30, 50, 3), (255, 0, 0), np.uint8))
Image.new("RGB", (20, 10), "green").save("small.png")
""")
    shown = images_of(result)
    assert len(shown) == 3
    text = text_of(result)
    names = [image.variable for image in shown]
    for path, name in zip(["line.png", "out/block.jpg", "small.png"], names):
        assert f"[saved file {path}, shown below as {name}]" in text
    assert decoded_size(shown[1]) == (50, 30) and decoded_size(shown[2]) == (20, 10)
    # Bound like shown images: the next tool uses them by name; BGR was written as BGR.
    found = json.loads(text_of(ok(loop, kernel, f"import json\nprint(json.dumps([{names[1]}.size, "
                                                f"{names[1]}.getpixel((0, 0))]))")))
    assert found[0] == [50, 30] and found[1][2] > 200 and found[1][0] < 50


def test_a_file_also_shown_comes_once_and_untouched_files_never(loop, kernel):  # noqa: F811
    first = ok(loop, kernel, "plt.plot([1, 2]); plt.savefig('shown.png'); plt.show()\n"
                             "img = Image.new('RGB', (9, 9), 'red'); img.save('both.png'); display(img)")
    assert len(images_of(first)) == 2 and "saved file" not in text_of(first)
    assert images_of(ok(loop, kernel, "x = 1")) == []  # files from before are not shown again
    again = ok(loop, kernel, "Image.new('RGB', (7, 7), 'blue').save('both.png')")
    (image,) = images_of(again)
    assert decoded_size(image) == (7, 7) and "saved file both.png" in text_of(again)


def test_a_saved_file_displayed_from_disk_comes_once(loop, kernel):  # noqa: F811
    """Saved, then shown by opening the file: by IPython's Image (its bytes reach
    the kernel as display data) or by PIL's ``Image.open``."""
    result = ok(loop, kernel, "from IPython.display import Image as IPImage\n"
                              "Image.new('RGB', (9, 9), 'red').save('a.png')\n"
                              "display(IPImage('a.png'))\n"
                              "Image.new('RGB', (8, 8), 'blue').save('b.png')\n"
                              "display(Image.open('b.png'))\n"
                              "Image.new('RGB', (7, 7), 'green').save('c.png')")
    assert sorted(decoded_size(image) for image in images_of(result)) == [(7, 7), (8, 8), (9, 9)]
    assert "saved file a.png" not in text_of(result) and "saved file b.png" not in text_of(result)
    assert "saved file c.png" in text_of(result)


def test_saved_files_count_against_the_image_cap(loop, kernel):  # noqa: F811
    result = ok(loop, kernel, "plt.plot([1]); plt.show()\n"
                              "for i in range(4): Image.new('L', (5, 5), i).save(f'many{i}.png')")
    assert len(images_of(result)) == 3
    assert "2 more image(s) were not shown (limit 3 per execution)" in result.note


def test_an_unreadable_saved_image_is_one_line(loop, kernel):  # noqa: F811
    result = ok(loop, kernel, "open('broken.png', 'wb').write(b'not a png')")
    assert images_of(result) == []
    assert "[pyvision] the tool saved broken.png, which could not be read as an image" in text_of(result)


# -- photos as JPEG, passed on by the parent ----------------------------------------------


def test_photos_come_as_jpeg_the_parent_passes_on_and_plots_as_png(loop, kernel):  # noqa: F811
    result = ok(loop, kernel, PHOTO + "display(photo)\nplt.plot([0, 1, 4]); plt.show()\n"
                                      "photo.resize((1600, 1600)).show()")
    photo, plot, big = images_of(result)
    assert photo.mime == "image/jpeg" and plot.mime == "image/png" and big.mime == "image/jpeg"
    assert big.width * big.height <= 1024 * 1024
    for output in (photo, big):
        image = output_as_image(output)
        assert encode_for_model(image) == ("image/jpeg", image.data)  # not encoded again
    found = json.loads(text_of(ok(loop, kernel, f"import json\nprint(json.dumps([{photo.variable}.mode, "
                                                f"{photo.variable}.size]))")))
    assert found == ["RGB", [512, 512]]  # the bound image is the pixels, not the JPEG


# -- host paths ------------------------------------------------------------------------


def host_paths(kernel) -> list[str]:
    paths = kernel._interpreter["paths"]
    return [path for path in [*paths["packages"], *paths["prefixes"], paths["home"],
                              str(kernel.scratch_path)] if len(path) > 4]


def test_real_warnings_and_tracebacks_show_package_relative_paths(loop, kernel):  # noqa: F811
    result = run(loop, kernel, "import os, warnings\nwarnings.simplefilter('always')\n"
                               "np.mean([])\nprint(os.path.abspath('x.png'))\nImage.open('missing.png')")
    assert result.status == "error"
    text = text_of(result)
    assert "numpy/_core/fromnumeric.py" in text and "RuntimeWarning: Mean of empty slice" in text
    assert "PIL/Image.py" in text and "FileNotFoundError" in text
    assert "x.png\n" in text
    for path in host_paths(kernel):
        assert path not in text, path
    assert "site-packages" not in text and "/.pyenv/" not in text


def test_the_shortener_keeps_what_is_not_a_host_folder():
    shorten = PathShortener({"packages": ["/home/ann/.venv/lib/python3.11/site-packages",
                                          "/home/ann/.venv/lib/python3.11"],
                             "prefixes": ["/home/ann/.venv", "/usr"], "home": "/home/ann",
                             "cwd": "/tmp/pyvision-1-a/s-b"})
    assert shorten("File ~/.venv/lib/python3.11/site-packages/PIL/Image.py:3") == "File PIL/Image.py:3"
    assert shorten("/home/ann/.venv/lib/python3.11/warnings.py:10: UserWarning") == "warnings.py:10: UserWarning"
    assert shorten("/home/ann/.venv/bin/python") == "<python>/bin/python"
    assert shorten("/home/ann/notes.txt and /home/annie/x") == "~/notes.txt and /home/annie/x"
    assert shorten("cwd is /tmp/pyvision-1-a/s-b; saved /tmp/pyvision-1-a/s-b/o/x.png") == (
        "cwd is .; saved o/x.png")
    assert shorten("/usr/bin/tesseract 3/4 a/b") == "/usr/bin/tesseract 3/4 a/b"


def test_saved_images_are_not_kept_alive(loop, kernel):  # noqa: F811
    # A loop that saves a thousand big crops must not hold them all until its end.
    result = ok(loop, kernel, "import gc, weakref\nimg = Image.new('RGB', (300, 200))\n"
                              "img.save('kept.png')\nref = weakref.ref(img)\n"
                              "del img\ngc.collect()\nprint(ref() is None)")
    assert text_of(result).splitlines()[0] == "True"


def test_a_photo_figure_as_the_last_expression_comes_once_as_jpeg(loop, kernel):  # noqa: F811
    result = ok(loop, kernel, PHOTO + "fig = plt.figure(figsize=(6, 6))\n"
                                      "plt.imshow(np.asarray(photo)); plt.axis('off')\nfig")
    (image,) = images_of(result)
    assert image.mime == "image/jpeg" and image.variable
