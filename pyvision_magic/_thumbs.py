"""Reduced copies of images for what people see: the live view and the static copy.

One decode per image, however many sizes are wanted, and a cache keyed by the
source object itself (the encoded ``bytes`` or their base64 ``str``, both of
which keep their hash), so the static copy built at the end of a session finds
every thumbnail the live view already asked for while the session ran.
"""

from __future__ import annotations

import base64
import collections
import io
import threading
from collections.abc import Iterable, Sequence
from typing import Union

from ._images import _upright

__all__ = ["thumbnail", "prepare", "Source"]

#: Encoded image bytes, or their base64 text (as outputs hold them).
Source = Union[bytes, str]
Thumb = tuple[str, bytes, int, int]

#: Images at most this many bytes (and within the side) are kept as they are.
KEEP_BYTES = 200_000
#: The cache keeps references to its sources; it forgets the least recently used
#: sources beyond these (a session of ten 1024x1024 tool images holds ~50 MB of them).
_MAX_SOURCES, _MAX_SOURCE_BYTES = 256, 128 * 1024 * 1024

#: source -> {(side, quality): thumbnail}
_cache: collections.OrderedDict[Source, dict[tuple[int, int], Thumb]] = collections.OrderedDict()
_cache_bytes = 0
_lock = threading.Lock()
_inflight: dict[int, threading.Lock] = {}


def thumbnail(data: Source, max_side: int, quality: int = 70) -> Thumb:
    """(mime, bytes, width, height) of the image reduced to ``max_side``, encoded once.

    Small PNG/JPEG files are kept as they are. Otherwise: JPEG for photos (a
    JPEG source, or more than 2048 colours), PNG for plots, masks and line art.
    """
    found = _get(data, (max_side, quality))
    if found is None:
        prepare(data, [(max_side, quality)])
        found = _get(data, (max_side, quality))
        assert found is not None
    return found


def prepare(data: Source, sizes: Sequence[tuple[int, int]]) -> None:
    """Make and cache the thumbnails of ``data`` for ``sizes`` ((side, quality), ...).

    The image is decoded once; each smaller size is reduced from the previous one.
    Thread-safe: the views call this from a worker thread while the session runs.
    """
    with _lock:  # one decode at a time per source: a second caller waits, then finds it
        busy = _inflight.setdefault(id(data), threading.Lock())
    try:
        with busy:
            wanted = [size for size in sorted(set(sizes), reverse=True)
                      if _get(data, size) is None]
            if not wanted:
                return
            raw = base64.b64decode(data) if isinstance(data, str) else data
            _put(data, dict(zip(wanted, _reduce(raw, wanted))))
    finally:
        with _lock:
            if _inflight.get(id(data)) is busy:
                del _inflight[id(data)]


def _reduce(raw: bytes, sizes: Iterable[tuple[int, int]]) -> list[Thumb]:
    from PIL import Image

    sizes = list(sizes)
    with Image.open(io.BytesIO(raw)) as im:
        fmt, original = im.format, im.size
        if fmt == "JPEG":  # decode at a reduced scale when the largest size allows it
            im.draft("RGB", (sizes[0][0], sizes[0][0]))
        # Upright, 8-bit, transparency on white: what the model is sent (see _images).
        current = _upright(im, "image")
    photo: bool | None = None
    results = []
    for side, quality in sizes:
        if max(original) <= side and fmt in ("PNG", "JPEG") and len(raw) <= KEEP_BYTES:
            mime = "image/png" if fmt == "PNG" else "image/jpeg"
            results.append((mime, raw, original[0], original[1]))
            continue
        scale = min(1.0, side / max(current.size))
        if scale < 1.0:
            size = (max(1, round(current.width * scale)), max(1, round(current.height * scale)))
            current = current.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        if photo is None:
            photo = fmt == "JPEG" or current.getcolors(2048) is None
        buffer = io.BytesIO()
        if photo:
            current.save(buffer, format="JPEG", quality=quality)
        else:
            current.save(buffer, format="PNG", compress_level=6)
        results.append(("image/jpeg" if photo else "image/png", buffer.getvalue(),
                        current.width, current.height))
    return results


def _get(source: Source, size: tuple[int, int]) -> Thumb | None:
    with _lock:
        sizes = _cache.get(source)
        if sizes is None:
            return None
        _cache.move_to_end(source)
        return sizes.get(size)


def _put(source: Source, thumbs: dict[tuple[int, int], Thumb]) -> None:
    global _cache_bytes
    with _lock:
        if source in _cache:
            _cache[source].update(thumbs)
            return
        _cache[source] = thumbs
        _cache_bytes += len(source)
        while len(_cache) > 1 and (len(_cache) > _MAX_SOURCES
                                   or _cache_bytes > _MAX_SOURCE_BYTES):
            old, _ = _cache.popitem(last=False)
            _cache_bytes -= len(old)
