"""Which Python runs the tools, and which notable libraries it can import.

Both go into the model's prompt. The session asks before the first model
request, while the kernel is still starting, so when the kernel runs this very
interpreter the answer is computed here instead of waiting for the kernel.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

from . import _bootstrap

__all__ = ["NOTABLE_LIBRARIES", "describe_interpreter", "libraries_of_this_interpreter",
           "libraries_of_this_interpreter_if_known"]

#: Libraries worth telling the model about: (import name, distribution names).
NOTABLE_LIBRARIES: list[tuple[str, Any]] = [
    ("numpy", "numpy"),
    ("cv2", ["opencv-python-headless", "opencv-python", "opencv-contrib-python"]),
    ("PIL", "pillow"),
    ("matplotlib", "matplotlib"),
    ("scipy", "scipy"),
    ("skimage", "scikit-image"),
    ("sklearn", "scikit-learn"),
    ("pandas", "pandas"),
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("pytesseract", "pytesseract"),
    ("easyocr", "easyocr"),
    ("imageio", "imageio"),
    ("shapely", "shapely"),
    ("networkx", "networkx"),
    ("sympy", "sympy"),
]


@functools.lru_cache(maxsize=1)
def _probe_here() -> tuple[str, ...]:
    return tuple(json.loads(_bootstrap.probe_libraries(NOTABLE_LIBRARIES)))


def libraries_of_this_interpreter_if_known() -> list[str] | None:
    """The answer of :func:`libraries_of_this_interpreter` if already computed, else None."""
    return list(_probe_here()) if _probe_here.cache_info().currsize else None


def libraries_of_this_interpreter() -> list[str]:
    """:data:`NOTABLE_LIBRARIES` importable here, as ``"name version"``.

    Uses the same probe as the kernel (``find_spec`` and distribution metadata,
    no imports), so the answer equals the kernel's when it runs this interpreter.
    Computed once per process.
    """
    return list(_probe_here())


def describe_interpreter(
    interpreter: Mapping[str, str], *, kernel_name: str | None, sandboxed: bool
) -> str:
    """One log line saying which Python runs the tools, and whether it is this one.

    ``interpreter`` is ``{"executable": ..., "version": ...}`` as the kernel reports it.
    """
    version, executable = interpreter.get("version"), interpreter.get("executable", "")
    where = " in the sandbox" if sandboxed else ""
    if os.path.realpath(executable) == os.path.realpath(sys.executable):
        return f"Tools run{where} in this Python, {version} ({executable})."
    return (
        f"Tools run{where} in Python {version} ({executable}) from kernelspec {kernel_name!r}, "
        f"not in this Python {platform.python_version()} ({sys.executable}); they see "
        "that interpreter's packages."
    )
