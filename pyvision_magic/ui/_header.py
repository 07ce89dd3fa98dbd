"""The top of a session's view: question, input images, progress, Stop."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

import ipywidgets as w

from .._records import ImageInput, Usage
from .._render import thumbnail

__all__ = ["SessionHeader"]

_STATUS = {
    "running": "running",
    "answered": "answered",
    "max_turns": "turn limit reached",
    "stopped": "stopped",
    "error": "failed",
}


class SessionHeader(w.VBox):
    """Question, thumbnails of the images, and a line of model/status/turns/tokens/time.

    ``stop_button`` is enabled while the session runs.
    """

    def __init__(self, question: str, images: Sequence[ImageInput], model: str, **kwargs) -> None:
        self.title = w.HTML(
            f"<div style='font-size:15px'><b>Q:</b> {html.escape(question)}</div>"
        )
        thumbs = []
        for image in images:
            mime, data, width, height = thumbnail(image.data, 160, quality=75)
            thumbs.append(
                w.Image(value=data, format=mime.split("/")[1],
                        layout=w.Layout(width=f"{width}px", height=f"{height}px",
                                        margin="2px 6px 2px 0"))
            )
        self.thumbnails = w.HBox(thumbs)
        self.thumbnails.add_class("pyvision-thumb")
        self.info = w.HTML()
        self.stop_button = w.Button(
            description="Stop", icon="stop", button_style="warning", disabled=True,
            tooltip="End the session now, keeping every turn done so far",
            layout=w.Layout(width="auto"),
        )
        self.model = model
        self.status = "running"
        self.turns = 0
        self.usage = Usage()
        self.started: float | None = None
        self.ended: float | None = None
        super().__init__([self.title, self.thumbnails, w.HBox([self.info, self.stop_button])],
                         **kwargs)
        self.refresh()

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.monotonic()) - self.started

    def update(self, *, status: str | None = None, turns: int | None = None,
               usage: Usage | None = None) -> None:
        """Change what the info line shows; the elapsed time runs while ``running``."""
        if status is not None:
            if status == "running" and self.started is None:
                self.started = time.monotonic()
            if status != "running" and self.started is not None and self.ended is None:
                self.ended = time.monotonic()
            self.status = status
            self.stop_button.disabled = status != "running"
            self.stop_button.layout.display = None if status == "running" else "none"
        if turns is not None:
            self.turns = turns
        if usage is not None:
            self.usage = usage
        self.refresh()

    def refresh(self) -> None:
        self.info.value = (
            f"<span style='color:#57606a'>model <code>{html.escape(self.model)}</code> · "
            f"<b class='pyvision-status'>{_STATUS.get(self.status, self.status)}</b> · "
            f"{self.turns} turn(s) · {self.usage.total_tokens} tokens · "
            f"{self.elapsed:.1f} s</span>"
        )
