"""The seed libraries in a real child kernel: importable, named in the prompt, never
imported at start; OCR says what to install when it is missing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from test_kernel import _LoopThread, loop, run, text_of  # noqa: F401

from pyvision_magic.kernel._child import ChildKernel

SEED = {"pandas": "pandas", "sklearn": "scikit-learn", "skimage": "scikit-image",
        "scipy": "scipy", "sympy": "sympy"}


@pytest.fixture(scope="module")
def kernel(loop: _LoopThread) -> Iterator[ChildKernel]:  # noqa: F811
    child = ChildKernel(timeout=60.0)
    loop.run(child.start())
    yield child
    loop.run(child.shutdown())


def test_seed_libraries_are_listed_for_the_prompt_and_not_imported_at_start(loop, kernel):  # noqa: F811
    listed = {entry.split()[0] for entry in loop.run(kernel.importable_libraries())}
    assert set(SEED) <= listed
    found = json.loads(text_of(run(loop, kernel, "import sys, json\nprint(json.dumps("
                                                 f"[name for name in {list(SEED)!r} if name in sys.modules]))")))
    assert found == []  # start-up pays for none of them


def test_tools_use_the_seed_libraries(loop, kernel):  # noqa: F811
    result = run(loop, kernel, """
import pandas as pd, sympy
from sklearn.cluster import KMeans
from skimage import filters
from scipy import ndimage
pixels = np.array([[0, 0, 0], [2, 2, 2], [250, 250, 250], [255, 255, 255]], float)
labels = KMeans(n_clusters=2, n_init=2, random_state=0).fit_predict(pixels)
print(len(set(labels[:2])), len(set(labels)), pd.Series(labels).value_counts().tolist())
print(sympy.Rational(5, 2) * 2, filters.sobel(np.zeros((4, 4))).sum() == 0,
      ndimage.label(np.eye(3))[1])
""")
    assert result.status == "ok", text_of(result)
    assert text_of(result) == "1 2 [2, 2]\n5 True 3\n"


def test_missing_ocr_module_says_what_to_install(loop, kernel):  # noqa: F811
    result = run(loop, kernel, "import sys\nsys.modules['pytesseract'] = None\nimport pytesseract")
    assert result.status == "error"
    assert "pip install 'pyvision_magic[ocr]'" in text_of(result)
    assert "apt install tesseract-ocr" in text_of(result)
    plain = run(loop, kernel, "import no_such_module_here")
    assert plain.status == "error" and "pyvision_magic[ocr]" not in text_of(plain)


def test_missing_tesseract_program_says_what_to_install(loop, tmp_path):  # noqa: F811
    pytest.importorskip("pytesseract")
    # Without the program on PATH, as on a machine without the Debian package.
    child = ChildKernel(timeout=60.0, extra_env={"PATH": str(tmp_path)})
    try:
        loop.run(child.start())
        listed = {entry.split()[0] for entry in loop.run(child.importable_libraries())}
        result = run(loop, child, "import pytesseract\npytesseract.image_to_string(Image.new('L', (9, 9)))")
    finally:
        loop.run(child.shutdown())
    assert result.status == "error" and "TesseractNotFoundError" in text_of(result)
    assert "apt install tesseract-ocr" in text_of(result)
    assert "pandas" in listed


def test_find_objects_takes_a_boolean_mask_as_models_write_it(loop, kernel):  # noqa: F811
    # numpy >= 2.3 made scipy refuse bool masks here (scipy issue 23455); real GPT-4.1
    # code does it. Both import styles get the same function.
    result = run(loop, kernel, """
from scipy.ndimage import find_objects
import scipy.ndimage as ndi
mask = np.zeros((6, 8), bool)
mask[1:3, 2:7] = True
print(find_objects(mask), ndi.find_objects(mask.astype(int)) == find_objects(mask))
""")
    assert result.status == "ok", text_of(result)
    assert text_of(result) == "[(slice(1, 3, None), slice(2, 7, None))] True\n"
