"""Turning a kernel's iopub messages into :class:`Output` records, within the caps.

Text is capped as it arrives (head and tail kept, the middle dropped and
counted) so a tool that prints gigabytes costs the parent memory of the cap
only. Images beyond the per-execution cap are counted, not kept.
:func:`execution_result` words how an execution ended for the model.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from typing import Any

from ._records import ExecutionResult, Output

__all__ = ["OutputCollector", "collect_message", "execution_result", "image_output", "strip_ansi"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (IPython colours its tracebacks)."""
    return _ANSI.sub("", text)


def _image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


class OutputCollector:
    """Outputs of one execution, with the text capped to head and tail as it arrives.

    Text past the cap is dropped from the middle while collecting, so a tool that
    prints gigabytes costs memory of the cap, not of the output.

    Parameters
    ----------
    max_chars, max_images, max_pixels : int or None
        The caps of :class:`~pyvision_magic.ChildKernel` of the same names.
    """

    def __init__(self, max_chars: int | None, max_images: int | None, max_pixels: int | None):
        self.items: list[Output] = []
        self.max_chars = max_chars
        self.max_images = max_images
        self.max_pixels = max_pixels
        self.cut: int | None = None  # index in items where text was dropped
        self.total = 0  # text characters kept before the cut exists
        self.tail_chars = 0
        self.dropped_chars = 0
        self.images = 0
        self.dropped_images = 0

    def add_text(self, text: str, stream: str) -> None:
        last = self.items[-1] if self.items else None
        mergeable = (
            last is not None
            and last.kind == "text"
            and last.stream == stream
            and stream in ("stdout", "stderr")
            and (self.cut is None or self.cut < len(self.items))
        )
        if mergeable:
            last.text += text
        else:
            self.items.append(Output(kind="text", text=text, stream=stream))
        self._count(len(text))

    def add_error(self, ename: str, evalue: str, traceback: str) -> None:
        self.items.append(Output(kind="error", ename=ename, evalue=evalue, text=traceback))
        self._count(len(traceback))

    def add_image(self, output: Output) -> None:
        if self.max_images is not None and self.images >= self.max_images:
            self.dropped_images += 1
            return
        self.images += 1
        self.items.append(output)

    def clear(self) -> None:
        self.__init__(self.max_chars, self.max_images, self.max_pixels)  # type: ignore[misc]

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

    def _make_cut(self) -> None:
        kept = 0
        for index, item in enumerate(self.items):
            if item.kind == "image":
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
            if item.kind == "image":
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
        if self.cut is not None:
            # While collecting, the tail is trimmed only at twice its budget (so
            # 10^5 small prints stay cheap); trim it to the budget once at the end.
            self._trim_tail()
        items = [item for item in self.items if item.kind != "text" or item.text]
        if self.dropped_chars and self.cut is not None:
            before = self.items[: self.cut]
            position = len([item for item in before if item.kind != "text" or item.text])
            marker = f"\n[... {self.dropped_chars} characters of output dropped here ...]\n"
            items.insert(position, Output(kind="text", text=marker, stream="stdout"))
        return items


def collect_message(msg: dict[str, Any], collected: OutputCollector) -> None:
    """Add one iopub message of the execution to ``collected``."""
    kind, content = msg["msg_type"], msg["content"]
    if kind == "stream":
        collected.add_text(content.get("text", ""), content.get("name", "stdout"))
    elif kind in ("execute_result", "display_data", "update_display_data"):
        data, metadata = content.get("data", {}), content.get("metadata", {})
        pyvision = metadata.get("pyvision", {})
        if "dropped_images" in pyvision:
            collected.dropped_images += int(pyvision["dropped_images"])
            return
        for mime in ("image/png", "image/jpeg"):
            if mime in data:
                collected.add_image(
                    image_output(mime, data[mime], metadata.get(mime, {}), collected.max_pixels)
                )
                return
        text = data.get("text/plain", "")
        if text:
            collected.add_text(text if text.endswith("\n") else text + "\n", "result")
    elif kind == "error":
        collected.add_error(
            content.get("ename", ""),
            content.get("evalue", ""),
            strip_ansi("\n".join(content.get("traceback", []))),
        )
    elif kind == "clear_output":
        collected.clear()


def image_output(mime: str, encoded: Any, metadata: dict[str, Any], budget: int | None) -> Output:
    """An image Output from display data, scaled down here if the kernel did not."""
    if isinstance(encoded, str):
        encoded = "".join(encoded.split())  # some publishers wrap base64 in lines
    width, height = metadata.get("width"), metadata.get("height")
    variable = metadata.get("variable")
    if variable is None:
        # Not shown by our hooks (e.g. IPython.display.Image): check the budget here.
        raw = base64.b64decode(encoded)
        width, height = _image_size(raw)
        if budget and width * height > budget:
            encoded, width, height = _shrink(raw, budget)
            mime = "image/png"
    return Output(
        kind="image", mime=mime, data=encoded, width=width, height=height, variable=variable
    )


def _shrink(raw: bytes, budget: int) -> tuple[str, int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        scale = (budget / float(image.size[0] * image.size[1])) ** 0.5
        size = (max(1, int(image.size[0] * scale)), max(1, int(image.size[1] * scale)))
        small = image.convert("RGBA").resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii"), size[0], size[1]


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
