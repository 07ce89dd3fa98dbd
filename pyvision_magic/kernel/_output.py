"""Turning a kernel's iopub messages into :class:`Output` records, within the caps.

Text is cleaned and capped as it arrives (head and tail kept, the middle dropped
and counted) so a tool that prints gigabytes costs the parent memory of the cap
only. Images are counted against the per-execution cap before anything is
decoded; the few kept are checked and decoded by :meth:`OutputCollector.finish`
in a worker thread, and one that cannot be read becomes a line of text.
:func:`execution_result` words how an execution ended for the model.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from collections.abc import Sequence
from typing import Any

from .._records import ExecutionResult, Output

__all__ = [
    "MAX_DECODE_PIXELS",
    "OutputCollector",
    "PathShortener",
    "clean_text",
    "collect_message",
    "execution_result",
    "strip_ansi",
]

#: Largest image (width x height) the parent decodes. A bigger header is refused
#: before decoding: 50 megapixels cost 200 MB as RGBA, and PIL's own bomb limit
#: (89 M, a warning, then an error at 179 M) is no guard for a shared process.
MAX_DECODE_PIXELS = 50_000_000

# Terminal escape sequences: CSI (colours, cursor movement), OSC (window title,
# clipboard, links) and DCS/SOS/PM/APC strings when terminated, else any other
# ESC + intermediates + final byte (which also eats an unterminated introducer).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[PX^_][^\x1b]*\x1b\\"
    r"|\x1b[ -/]*[0-~]"
)
# Bell and backspace only make sense on a terminal (progress bars use them): dropped.
_DROPPED = re.compile(r"[\x07\x08]")
# Other C0 and C1 controls and DEL are escaped, so binary output stays visible as such.
_CONTROLS = re.compile(r"[\x00-\x06\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Lone surrogates cannot be encoded as UTF-8: the transcript and the request would fail.
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# Any of the above (or a carriage return): most text has none, and is passed as is.
_UNCLEAN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


def strip_ansi(text: str) -> str:
    """Remove terminal escape sequences (colours, cursor movement, titles)."""
    return _ESCAPES.sub("", text)


def clean_text(text: str) -> str:
    """Text as a terminal would show it, safe to store as JSON and send to a model.

    Escape sequences are removed, carriage-return frames are collapsed line by
    line (``"10%\\r100%\\n"`` becomes ``"100%\\n"``), bell and backspace are
    dropped, other control characters become ``\\xNN`` and lone surrogates
    U+FFFD. Newlines and tabs stay.
    """
    text = _without_controls(text)
    return _collapse_returns(text, final=True) if "\r" in text else text


def _without_controls(text: str) -> str:
    """:func:`clean_text` but for carriage returns, which are left in place."""
    if not _UNCLEAN.search(text):
        return text
    text = _SURROGATES.sub("\ufffd", text)
    if "\x1b" in text:
        text = _ESCAPES.sub("", text)
    text = _DROPPED.sub("", text)
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _collapse_returns(text: str, *, final: bool) -> str:
    """Each line as its last carriage-return frames left it on a terminal.

    With ``final`` False, a last line without a newline keeps its cursor
    position (as ``shown + "\\r" + shown[:cursor]``), so later output can go on
    overwriting it.
    """
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if "\r" not in line:
            continue
        frames = line.split("\r")
        # Each frame overwrites from the start of the line, so a column shows the
        # last frame long enough to reach it: linear even for 10^5 frames.
        parts, covered = [], 0
        for frame in reversed(frames):
            if len(frame) > covered:
                parts.append(frame[covered:])
                covered = len(frame)
        shown = "".join(parts)
        cursor = len(frames[-1])
        if not final and index == len(lines) - 1 and cursor < len(shown):
            shown += "\r" + shown[:cursor]  # collapses to the same line, cursor kept
        lines[index] = shown
    return "\n".join(lines)


#: Prefixes never shortened: too general to say anything about the host (``/usr/bin``).
_KEPT_PREFIXES = frozenset({"/", "/usr", "/usr/local", "/opt", "/tmp"})


class PathShortener:
    """Shortens the host's folder names in what a tool printed or raised.

    Tracebacks and warnings name files by absolute path, and those carry the
    user's name and layout (``/home/alice/.venv/lib/python3.11/site-packages/``)
    to the model's provider. Each path under an import root becomes
    package-relative (``numpy/_core/fromnumeric.py``), the working folder
    relative, the interpreter's prefix ``<python>`` and the home folder ``~``.

    Parameters
    ----------
    paths : dict
        As the kernel reports them (``_bootstrap.interpreter()["paths"]``):
        ``packages``, ``prefixes``, ``home``, ``cwd``.
    scratch : sequence of str
        More names of the working folder (the parent's view of it).
    """

    def __init__(self, paths: dict[str, Any], scratch: Sequence[str] = ()) -> None:
        table: dict[str, str] = {}
        home = paths.get("home") if isinstance(paths.get("home"), str) else None
        for folder, short in [
            (home, "~"),
            *((prefix, "<python>") for prefix in paths.get("prefixes") or ()),
            *((root, "") for root in paths.get("packages") or ()),
            *((folder, ".") for folder in [paths.get("cwd"), *scratch]),
        ]:
            if not (isinstance(folder, str) and folder.startswith("/")):
                continue
            folder = folder.rstrip("/")
            if folder and folder not in _KEPT_PREFIXES:
                table[folder] = short
                if home and home not in _KEPT_PREFIXES and folder.startswith(home + "/"):
                    # IPython's tracebacks write the home folder as ~.
                    table["~" + folder[len(home):]] = short
        self._table = table
        # Longest first, so a package root wins over the prefix that holds it; a
        # folder is matched whole (followed by / or the end of the path).
        names = sorted(table, key=len, reverse=True)
        self._pattern = re.compile(
            "(" + "|".join(map(re.escape, names)) + r")(/|(?![\w.@+-]))") if names else None

    def _replace(self, match: re.Match[str]) -> str:
        short = self._table[match.group(1)]
        if match.group(2):  # within a path: numpy/..., ./x.png becomes x.png
            return short + "/" if short not in ("", ".") else ""
        return short or "."

    def __call__(self, text: str) -> str:
        if self._pattern is None or "/" not in text:
            return text
        return self._pattern.sub(self._replace, text)


class _Unreadable(Exception):
    """An image that is refused; the message says why, for the model."""


class OutputCollector:
    """Outputs of one execution, with the text capped to head and tail as it arrives.

    Text past the cap is dropped from the middle while collecting, so a tool that
    prints gigabytes costs memory of the cap, not of the output. Images are only
    counted while collecting; :meth:`finish` checks and decodes the kept ones.

    Parameters
    ----------
    max_chars, max_images, max_pixels : int or None
        The caps of :class:`~pyvision_magic.ChildKernel` of the same names.
    """

    def __init__(self, max_chars: int | None, max_images: int | None, max_pixels: int | None,
                 shorten_paths: PathShortener | None = None):
        self.items: list[Output] = []
        self.shorten_paths = shorten_paths
        self.max_chars = max_chars
        self.max_images = max_images
        self.max_pixels = max_pixels
        self.cut: int | None = None  # index in items where text was dropped
        self.total = 0  # text characters kept before the cut exists
        self.tail_chars = 0
        self.dropped_chars = 0
        self.images = 0
        self.dropped_images = 0
        self._unchecked: list[Output] = []  # image outputs still encoded as sent
        self._notices: set[int] = set()  # ids of our own text items, outside the cap

    def add_text(self, text: str, stream: str) -> None:
        last = self.items[-1] if self.items else None
        mergeable = (
            last is not None
            and last.kind == "text"
            and last.stream == stream
            and stream in ("stdout", "stderr")
            and id(last) not in self._notices
            and (self.cut is None or self.cut < len(self.items))
        )
        text = _without_controls(text)
        if not mergeable:
            if "\r" in text:
                text = _collapse_returns(text, final=stream not in ("stdout", "stderr"))
            self.items.append(Output(kind="text", text=text, stream=stream))
            self._count(len(text))
            return
        assert last is not None
        before = len(last.text)
        if "\r" in text or "\r" in last.text[last.text.rfind("\n") + 1:]:
            # A carriage return rewrites the unfinished last line only.
            head, newline, pending = last.text.rpartition("\n")
            last.text = head + newline + _collapse_returns(pending + text, final=False)
        else:
            last.text += text
        self._count(len(last.text) - before)

    def add_error(self, ename: str, evalue: str, traceback: str) -> None:
        traceback = clean_text(traceback)
        self.items.append(Output(kind="error", ename=clean_text(ename),
                                 evalue=clean_text(evalue), text=traceback))
        self._count(len(traceback))

    def add_notice(self, text: str) -> Output:
        """Add a line of our own (not the tool's), outside the text cap."""
        notice = Output(kind="text", text=clean_text(text), stream="stderr")
        self.items.append(notice)
        self._notices.add(id(notice))
        return notice

    def add_image(self, output: Output, *, check: bool = False) -> None:
        """Count an image against the cap and keep it, or drop it.

        With ``check``, ``output.data`` is the base64 as the kernel sent it, and
        is checked and decoded later by :meth:`finish`; nothing is decoded here.
        """
        if self.max_images is not None and self.images >= self.max_images:
            self.dropped_images += 1
            return
        self.images += 1
        self.items.append(output)
        if check:
            self._unchecked.append(output)

    async def finish(self) -> None:
        """Check and decode the images kept, in a worker thread.

        Call it once the execution ended, before :func:`execution_result`; a
        decoded photo takes the event loop's other sessions and views no time.
        """
        if self._unchecked:
            await asyncio.to_thread(self._check_images)

    def _check_images(self) -> None:
        unchecked, self._unchecked = self._unchecked, []
        for output in unchecked:
            try:
                _check_image(output, self.max_pixels)
            except _Unreadable as exc:  # the same item becomes a notice, in its place
                self._notices.add(id(output))
                output.kind, output.stream, output.mime, output.data = "text", "stderr", None, None
                output.width = output.height = output.variable = None
                output.text = f"[pyvision] the tool displayed an image that could not be read: {exc}.\n"

    def clear(self) -> None:
        self.__init__(self.max_chars, self.max_images, self.max_pixels,  # type: ignore[misc]
                      self.shorten_paths)

    def _count(self, n: int) -> None:
        if self.max_chars is None:
            return
        if self.cut is None:
            self.total += n
            if self.total > self.max_chars:
                self._make_cut()
        else:
            self.tail_chars += n
            # Trim lazily (at twice the budget) so many small prints stay linear.
            if self.tail_chars > 2 * self._tail_budget:
                self._trim_tail()

    @property
    def _head_budget(self) -> int:
        return (self.max_chars or 0) // 2

    @property
    def _tail_budget(self) -> int:
        return (self.max_chars or 0) - self._head_budget

    def _uncapped(self, item: Output) -> bool:
        return item.kind == "image" or id(item) in self._notices

    def _make_cut(self) -> None:
        kept = 0
        for index, item in enumerate(self.items):
            if self._uncapped(item):
                continue
            if kept + len(item.text) > self._head_budget:
                room = self._head_budget - kept
                rest = Output(**{**item.__dict__, "text": item.text[room:]})
                item.text = item.text[:room]
                self.items.insert(index + 1, rest)
                self.cut = index + 1
                break
            kept += len(item.text)
        assert self.cut is not None
        self.tail_chars = self.total - self._head_budget
        self._trim_tail()

    def _trim_tail(self) -> None:
        excess = self.tail_chars - self._tail_budget
        index = self.cut
        while excess > 0 and index is not None and index < len(self.items):
            item = self.items[index]
            if self._uncapped(item):
                index += 1
                continue
            take = min(excess, len(item.text))
            item.text = item.text[take:]
            excess -= take
            self.dropped_chars += take
            self.tail_chars -= take
            if not item.text and item.kind == "text":
                del self.items[index]
            else:
                index += 1

    def outputs(self) -> list[Output]:
        # Normally done off the loop by finish(); never return an unchecked image.
        self._check_images()
        if self.cut is not None:
            # While collecting, the tail is trimmed only at twice its budget (so
            # 10^5 small prints stay cheap); trim it to the budget once at the end.
            self._trim_tail()
        for item in self.items:
            if "\r" in item.text:  # a last line left with its cursor mid-line
                item.text = _collapse_returns(item.text, final=True)
            if self.shorten_paths is not None:
                # Here, on whole texts: a path split over two writes is whole again.
                item.text = self.shorten_paths(item.text)
                if item.evalue:
                    item.evalue = self.shorten_paths(item.evalue)
        items = [item for item in self.items if item.kind != "text" or item.text]
        if self.dropped_chars and self.cut is not None:
            before = self.items[: self.cut]
            position = len([item for item in before if item.kind != "text" or item.text])
            marker = f"\n[... {self.dropped_chars} characters of output dropped here ...]\n"
            items.insert(position, Output(kind="text", text=marker, stream="stdout"))
        return items


def collect_message(msg: dict[str, Any], collected: OutputCollector) -> None:
    """Add one iopub message of the execution to ``collected``.

    The kernel runs untrusted code, so a malformed message becomes a notice,
    never an exception.
    """
    try:
        _collect(msg["msg_type"], msg["content"], collected)
    except Exception as exc:  # noqa: BLE001 - anything a tool can forge
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        collected.add_notice(f"[pyvision] an output of the tool could not be read ({reason}).\n")


def _collect(kind: str, content: dict[str, Any], collected: OutputCollector) -> None:
    if kind == "stream":
        name = content.get("name")
        collected.add_text(_as_text(content.get("text", "")),
                           name if name in ("stdout", "stderr") else "stdout")
    elif kind in ("execute_result", "display_data", "update_display_data"):
        data, metadata = content.get("data") or {}, content.get("metadata") or {}
        pyvision = metadata.get("pyvision") or {}
        if isinstance(pyvision, dict) and "dropped_images" in pyvision:
            collected.dropped_images += max(0, int(pyvision["dropped_images"]))
            return
        for mime in ("image/png", "image/jpeg"):
            if mime in data:
                image_metadata = metadata.get(mime) or {}
                variable = image_metadata.get("variable") if isinstance(image_metadata, dict) else None
                if not (isinstance(variable, str) and variable.isidentifier()):
                    variable = None
                collected.add_image(
                    Output(kind="image", mime=mime, data=data[mime], variable=variable), check=True
                )
                return
        text = _as_text(data.get("text/plain", ""))
        if text:
            collected.add_text(text if text.endswith("\n") else text + "\n", "result")
    elif kind == "error":
        traceback = content.get("traceback") or []
        collected.add_error(
            _as_text(content.get("ename", "")),
            _as_text(content.get("evalue", "")),
            "\n".join(_as_text(line) for line in traceback) if isinstance(traceback, list)
            else _as_text(traceback),
        )
    elif kind == "clear_output":
        collected.clear()


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _check_image(output: Output, budget: int | None) -> None:
    """Decode an image output as sent, in place: verified, sized, within ``budget``.

    Only PNG and JPEG are opened, whatever the MIME type claimed, and the header's
    size is checked against :data:`MAX_DECODE_PIXELS` before any pixel is decoded.

    Raises
    ------
    _Unreadable
        Saying why, for the model.
    """
    from PIL import JpegImagePlugin, PngImagePlugin

    encoded = output.data
    if not isinstance(encoded, str):
        raise _Unreadable(f"its data is a {type(encoded).__name__}, not base64 text")
    encoded = "".join(encoded.split())  # some publishers wrap base64 in lines
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Unreadable(f"its data is not valid base64 ({exc})") from None
    if raw.startswith(_PNG_SIGNATURE):
        mime, opener = "image/png", PngImagePlugin.PngImageFile
    elif raw.startswith(_JPEG_SIGNATURE):
        mime, opener = "image/jpeg", JpegImagePlugin.JpegImageFile
    else:
        raise _Unreadable(f"its {len(raw)} bytes are neither PNG nor JPEG data")
    try:
        # The format's own class reads the header only, and without PIL's bomb
        # warning (a warning turned error in tests, noise in a notebook).
        with opener(io.BytesIO(raw)) as image:
            width, height = image.size
            if width < 1 or height < 1:
                raise _Unreadable(f"its header says {width}x{height} pixels")
            if width * height > MAX_DECODE_PIXELS:
                raise _Unreadable(
                    f"it is {width}x{height} pixels, more than the {MAX_DECODE_PIXELS:,} pixels "
                    "pyvision decodes; make it smaller in the tool first (e.g. image.thumbnail)"
                )
            if budget and width * height > budget:
                raw, width, height = _shrink(image, budget)
                mime, encoded = "image/png", base64.b64encode(raw).decode("ascii")
            else:
                image.load()  # the model's encoder must never meet a broken image
    except _Unreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for bad data
        raise _Unreadable(f"{type(exc).__name__}: {exc}") from None
    output.mime, output.data, output.width, output.height = mime, encoded, width, height


def _shrink(image: Any, budget: int) -> tuple[bytes, int, int]:
    """Scale an opened image down to ``budget`` pixels; PNG bytes and the new size."""
    from PIL import Image

    scale = (budget / float(image.size[0] * image.size[1])) ** 0.5
    size = (max(1, int(image.size[0] * scale)), max(1, int(image.size[1] * scale)))
    image.draft(image.mode, size)  # JPEG decodes at 1/2, 1/4 or 1/8 scale for free
    if image.mode not in ("1", "L", "LA", "RGB", "RGBA"):
        alpha = "A" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if alpha else "RGB")
    small = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return buffer.getvalue(), size[0], size[1]


def execution_result(
    collected: OutputCollector,
    *,
    outcome: str,
    interrupted: bool,
    reply_status: str | None,
    limit: float | None,
    duration: float,
    exit_clause: str = "",
    rebound: Sequence[str] = (),
) -> ExecutionResult:
    """The result the model sees, from how an execution ended.

    Parameters
    ----------
    collected : OutputCollector
        What the execution printed, showed and raised.
    outcome : str
        ``"done"``, ``"stuck"`` (ignored the interrupt; the kernel was restarted),
        ``"died"`` (the kernel was restarted) or ``"closed"`` (shut down meanwhile).
    interrupted : bool
        Whether the time limit interrupted it.
    reply_status : str or None
        The status of the kernel's execute reply, if one came.
    limit : float or None
        The time limit in seconds.
    duration : float
        Seconds the execution took, restart included.
    exit_clause : str
        How a dead kernel ended, e.g. ``" (killed by SIGKILL)"``.
    rebound : sequence of str
        Names of the input images bound again after a restart.
    """
    notes: list[str] = []
    again = f" (the input images are bound again as {', '.join(rebound)})." if rebound else "."
    if outcome == "done" and interrupted:
        status = "timeout"
        collected.items = [item for item in collected.items if item.ename != "KeyboardInterrupt"]
        notes.append(
            f"The tool was stopped at its time limit of {limit:g} s; the variables "
            "it and earlier tools defined are kept."
        )
    elif outcome == "done":
        failed = reply_status == "error" or any(item.kind == "error" for item in collected.items)
        status = "error" if failed else "ok"
    elif outcome == "stuck":
        status = "timeout"
        notes.append(
            f"The tool was stopped at its time limit of {limit:g} s and the kernel had to "
            "be restarted, so all variables from earlier tools are gone" + again
        )
    elif outcome == "closed":
        status = "died"
        notes.append("The kernel was shut down while the tool was running.")
    else:
        status = "died"
        notes.append(
            f"The kernel process died while running the tool{exit_clause}; it was restarted, "
            "so all variables from earlier tools are gone" + again
        )
    if collected.dropped_images:
        notes.append(
            f"{collected.dropped_images} more image(s) were not shown (limit "
            f"{collected.max_images} per execution)."
        )
    return ExecutionResult(
        status=status, outputs=collected.outputs(), duration=duration, note=" ".join(notes)
    )
