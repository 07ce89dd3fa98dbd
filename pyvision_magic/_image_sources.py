"""What ``-i VALUE`` of ``%%pyvision`` means: a variable, a file path or a URL.

Resolution order: a Python name (or dotted name, or subscript such as
``frames[0]``) whose root is defined in the notebook's namespace is that
object; a value starting with ``http://`` or ``https://`` is downloaded (with a
timeout and a size cap); anything else is a file path. Lists and tuples of
images give several images. Every failure is an :class:`ImageInputError` with
one sentence saying what to do.
"""

from __future__ import annotations

import ast
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._errors import ImageInputError
from ._records import ImageInput

__all__ = ["resolve_image", "resolve_images", "fetch_url"]

_USER_AGENT = "pyvision_magic (+https://pypi.org/project/pyvision_magic)"


def resolve_images(
    values: Sequence[str],
    namespace: Mapping[str, Any],
    *,
    bgr: bool = False,
    url_timeout: float = 20.0,
    max_url_bytes: int = 20 * 2**20,
) -> list[ImageInput]:
    """Turn every ``-i`` value into images, in order (a list variable gives several)."""
    images: list[ImageInput] = []
    for value in values:
        images.extend(
            resolve_image(value, namespace, bgr=bgr, url_timeout=url_timeout,
                          max_url_bytes=max_url_bytes)
        )
    return images


def resolve_image(
    value: str,
    namespace: Mapping[str, Any],
    *,
    bgr: bool = False,
    url_timeout: float = 20.0,
    max_url_bytes: int = 20 * 2**20,
) -> list[ImageInput]:
    """The images one ``-i`` value stands for."""
    from ._images import load_image

    value = value.strip()
    if not value:
        raise ImageInputError("-i got an empty value; give a variable name, a file path or a URL.")
    found, obj = _lookup(value, namespace)
    if found:
        return _from_object(obj, value, bgr=bgr, url_timeout=url_timeout, max_url_bytes=max_url_bytes)
    if value.startswith(("http://", "https://")):
        data = fetch_url(value, timeout=url_timeout, max_bytes=max_url_bytes)
        name = Path(urllib.parse.urlparse(value).path).name or "image"
        if _is_video(name, data[:16]):  # a clip: see _video
            from ._video import load_video

            return [load_video(data, name=name, origin=value)]  # type: ignore[list-item]
        return [_load_bytes(data, name, value)]
    path = Path(os.path.expanduser(value))
    if not path.exists() and value.isidentifier():
        raise ImageInputError(
            f"-i {value}: there is no variable {value!r} in the notebook and no file of that "
            "name; define the variable first or give a file path.",
            source=value,
        )
    if path.is_file() and _is_video(path.name, _head(path)):  # a clip: see _video
        from ._video import load_video

        return [load_video(path)]  # type: ignore[list-item]
    return [load_image(path, name=path.name, bgr=bgr)]


def _is_video(name: str, head: bytes) -> bool:
    from ._video import is_video

    return is_video(name, head)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(16)
    except OSError:
        return b""


def _lookup(value: str, namespace: Mapping[str, Any]) -> tuple[bool, Any]:
    """(True, object) if ``value`` is an expression rooted in a defined name."""
    try:
        tree = ast.parse(value, mode="eval")
    except SyntaxError:
        return False, None
    node = tree.body
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    if not isinstance(node, ast.Name) or node.id not in namespace:
        return False, None
    # Only names, attributes, subscripts and literal indices: no calls.
    for sub in ast.walk(tree.body):
        if not isinstance(sub, (ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.Load,
                                ast.Slice, ast.UnaryOp, ast.USub, ast.Tuple)):
            raise ImageInputError(
                f"-i {value}: only variable names, attributes and indices are allowed "
                "(no calls); assign the image to a variable first.",
                source=value,
            )
    try:
        return True, eval(compile(tree, "<-i>", "eval"), {}, dict(namespace))  # noqa: S307
    except Exception as exc:
        raise ImageInputError(
            f"-i {value}: evaluating it failed ({type(exc).__name__}: {exc}).", source=value
        ) from None


def _from_object(obj: Any, label: str, **options: Any) -> list[ImageInput]:
    from ._images import load_image

    if isinstance(obj, (str, os.PathLike)):
        # A variable holding a path or a URL.
        return resolve_image(os.fspath(obj), {}, **options)  # type: ignore[arg-type]
    if isinstance(obj, (list, tuple)):
        if not obj:
            raise ImageInputError(f"-i {label}: the {type(obj).__name__} is empty.", source=label)
        images: list[ImageInput] = []
        for i, item in enumerate(obj):
            images.extend(_from_object(item, f"{label}[{i}]", **options))
        return images
    if getattr(obj, "ndim", None) == 4 and type(obj).__name__ == "ndarray":
        from ._video import load_video  # frames (T, H, W, 3): a clip, see _video

        return [load_video(obj, name=label, bgr=options.get("bgr", False))]  # type: ignore[list-item]
    figure = getattr(obj, "figure", None)
    if type(obj).__name__ in ("Axes", "AxesSubplot") and figure is not None:
        obj = figure  # an Axes stands for its figure
    try:
        return [load_image(obj, name=label, bgr=options.get("bgr", False))]
    except ImageInputError as exc:
        raise ImageInputError(f"-i {label}: {exc}", source=label) from None


def _load_bytes(data: bytes, name: str, label: str) -> ImageInput:
    from ._images import load_image

    try:
        return load_image(data, name=name)
    except ImageInputError:
        raise ImageInputError(
            f"{label} did not return an image that can be decoded; check the URL.", source=label
        ) from None


def fetch_url(url: str, *, timeout: float = 20.0, max_bytes: int = 20 * 2**20) -> bytes:
    """Download an image, refusing what is larger than ``max_bytes``.

    Raises
    ------
    ImageInputError
        On HTTP errors, timeouts, unreachable hosts, non-image content or size.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept": "image/*"})
    limit_text = f"{max_bytes / 2**20:g} MiB"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            kind = response.headers.get_content_type()
            if kind.startswith(("text/", "application/json")):
                raise ImageInputError(
                    f"{url} returned {kind}, not an image; check the URL.", source=url
                )
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ImageInputError(
                    f"{url} is {int(length) / 2**20:.1f} MiB, over the {limit_text} limit; "
                    "download it and pass the file, or raise PyVision.max_url_bytes.",
                    source=url,
                )
            data = response.read(max_bytes + 1)
    except ImageInputError:
        raise
    except urllib.error.HTTPError as exc:
        raise ImageInputError(
            f"{url} answered HTTP {exc.code} {exc.reason}; check the URL.", source=url
        ) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise ImageInputError(
                f"{url} did not answer within {timeout:g} s; try again or download the file.",
                source=url,
            ) from None
        raise ImageInputError(f"{url} cannot be reached ({reason}); check the URL.", source=url) from None
    except TimeoutError:
        raise ImageInputError(
            f"{url} did not answer within {timeout:g} s; try again or download the file.",
            source=url,
        ) from None
    except OSError as exc:
        raise ImageInputError(
            f"{url} could not be downloaded ({exc or 'timed out'}); try again or download the file.",
            source=url,
        ) from None
    if len(data) > max_bytes:
        raise ImageInputError(
            f"{url} is larger than the {limit_text} limit; download it and pass the file, "
            "or raise PyVision.max_url_bytes.",
            source=url,
        )
    if not data:
        raise ImageInputError(f"{url} returned no data; check the URL.", source=url)
    return data
