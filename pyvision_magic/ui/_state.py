"""What the session widget shows, as plain data (see ``docs/session_view.md``).

Pure functions and small caches: turn dicts, outputs with images by key,
tracebacks cleaned for people, the code and prose of a reply still streaming.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

from .._records import Output
from .._render import prose
from .._thumbs import Source, prepare, thumbnail

__all__ = [
    "DISPLAY_SIDE",
    "MediaStore",
    "VIEW_SIZE",
    "clean_traceback",
    "outputs_state",
    "split_stream",
]

#: Longest side of an image shown in the view; the full image stays in the kernel and
#: in the transcript.
DISPLAY_SIDE = 640

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# IPython names the hidden kernel's cells: "Cell In[7], line 3" (8.x) or
# "Input In [7]" / "<ipython-input-7-abc>" (older). Those numbers mean nothing here.
_CELL_LINE = re.compile(r"Cell In\s*\[\d+\], line (\d+)")
_INPUT_IN = re.compile(r"Input In \[\d+\]")
_IPYTHON_INPUT = re.compile(r"<ipython-input-\d+-[0-9a-f]+>")


def clean_traceback(text: str) -> str:
    """A tool's traceback without colours and without the hidden kernel's cell numbers."""
    text = _ANSI.sub("", text)
    text = _CELL_LINE.sub(r"tool code, line \1", text)
    text = _INPUT_IN.sub("tool code", text)
    return _IPYTHON_INPUT.sub("tool code", text)


#: (side, JPEG quality) of the images the view shows.
VIEW_SIZE = (DISPLAY_SIDE, 80)


class MediaStore:
    """The view's images by key; each distinct source is reduced once.

    A source is an output's base64 text or an input's bytes; its key comes from
    the object's own (cached) hash, so looking one up again costs nothing.
    :meth:`prepare` does the slow part and may run in a worker thread.
    """

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self._meta: dict[str, tuple[str, int, int]] = {}
        self._keys: dict[Source, str] = {}
        self._lock = threading.Lock()

    def key(self, source: Source) -> str:
        with self._lock:
            key = self._keys.get(source)
            if key is None:
                key = f"m{len(source):x}-{hash(source) & 0xFFFFFFFFFFFFFFFF:016x}"
                self._keys[source] = key
            return key

    def known(self, source: Source) -> bool:
        return self.key(source) in self._meta

    @staticmethod
    def prepare(source: Source, also: Sequence[tuple[int, int]] = ()) -> None:
        """Make the view's reduced copy (and the ``also`` sizes) of ``source``."""
        prepare(source, [VIEW_SIZE, *also])

    def mime(self, key: str) -> str:
        return self._meta[key][0]

    def add(self, source: Source) -> tuple[str, str, int, int]:
        """(key, mime, width, height) of ``source`` as shown; reduced on first sight."""
        key = self.key(source)
        meta = self._meta.get(key)
        if meta is None:
            mime, small, width, height = thumbnail(source, *VIEW_SIZE)
            with self._lock:
                self.data[key] = small
                self._meta[key] = meta = (mime, width, height)
        return (key, *meta)


def outputs_state(outputs: list[Output], media: MediaStore) -> list[dict[str, Any]]:
    """A tool's outputs as the view's output dicts (images go to ``media``)."""
    result: list[dict[str, Any]] = []
    for out in outputs:
        if out.kind == "image" and out.data:
            try:
                key, mime, width, height = media.add(out.data)
            except Exception as exc:  # an image PIL cannot read: say so, keep the rest
                result.append({"kind": "text", "text": f"[image not shown: {exc}]"})
                continue
            result.append({"kind": "image", "key": key, "mime": mime, "width": width,
                           "height": height, "variable": out.variable})
        elif out.kind == "error":
            result.append({"kind": "error", "ename": out.ename or "Error",
                           "evalue": out.evalue or "",
                           "traceback": clean_traceback(out.text or f"{out.ename}: {out.evalue}")})
        elif out.stream in ("stdout", "stderr"):
            result.append({"kind": "stream", "name": out.stream, "text": out.text})
        else:
            result.append({"kind": "text", "text": out.text})
    return result


# -- a reply while it streams ------------------------------------------------------

_CODE_OPEN = re.compile(
    r"<code>[ \t]*\n?(?:[ \t]*```[ \t]*(?:python3?|py|ipython)?[ \t]*\n)?"
    r"|```[ \t]*(?:python3?|py|ipython)[ \t]*\n",
    re.IGNORECASE,
)
_CODE_CLOSE = re.compile(r"\n?[ \t]*```|</code>", re.IGNORECASE)
# The end of a reply cut inside a closing fence or tag: "\n``", "</co".
_PARTIAL_CLOSE = re.compile(r"(\n[ \t]*`{1,2}|\n[ \t]*|<(/(c(o(d(e)?)?)?)?)?)$")


def split_stream(raw: str) -> tuple[str, str | None]:
    """(prose, code so far) of a reply that may still be arriving.

    The final split comes from the parser when the reply is complete; this one
    only has to look right while the text grows.
    """
    opened = _CODE_OPEN.search(raw)
    if opened is None:
        return prose(raw), None
    body = raw[opened.end():]
    closed = _CODE_CLOSE.search(body)
    if closed is not None:
        body = body[: closed.start()]
    else:
        body = _PARTIAL_CLOSE.sub("", body)
    return prose(raw[: opened.start()]), body
