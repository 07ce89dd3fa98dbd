"""One card per turn: the model's words, its tool in an editor, the outputs."""

from __future__ import annotations

import base64
import html
import time
import uuid
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from .._records import Output
from .._render import prose, thumbnail

__all__ = ["TurnCard", "to_notebook_outputs"]

#: Seconds between two redraws of a reply while it streams.
STREAM_REDRAW = 0.15


#: Longest side of an image shown in a turn card. Widget state (images included)
#: is saved in the notebook, so full-size tool images would make it tens of MB;
#: the full image stays in the kernel as ``image_clue_N`` and in the transcript.
DISPLAY_SIDE = 640


def to_notebook_outputs(outputs: list[Output], max_side: int | None = DISPLAY_SIDE
                        ) -> list[dict[str, Any]]:
    """A tool's outputs as nbformat output dicts (for Output widgets and notebooks).

    Images are shrunk to ``max_side`` pixels (JPEG or PNG, whichever is smaller);
    ``None`` keeps them as they are.
    """
    result: list[dict[str, Any]] = []
    for out in outputs:
        if out.kind == "image" and out.data:
            if out.variable:
                result.append({"output_type": "display_data", "metadata": {},
                               "data": {"text/markdown": f"`{out.variable}`",
                                        "text/plain": out.variable}})
            mime, data = out.mime or "image/png", out.data
            if max_side is not None:
                mime, small, _, _ = thumbnail(base64.b64decode(data), max_side, quality=80)
                data = base64.b64encode(small).decode("ascii")
            result.append({"output_type": "display_data", "metadata": {},
                           "data": {mime: data,
                                    "text/plain": f"<image {out.variable or ''}>"}})
        elif out.kind == "error":
            result.append({"output_type": "error", "ename": out.ename or "Error",
                           "evalue": out.evalue or "",
                           "traceback": (out.text or f"{out.ename}: {out.evalue}").splitlines()})
        elif out.stream in ("stdout", "stderr"):
            result.append({"output_type": "stream", "name": out.stream, "text": out.text})
        else:
            result.append({"output_type": "display_data", "metadata": {},
                           "data": {"text/plain": out.text}})
    return result


class TurnCard(w.VBox):
    """A turn: title, the reply as Markdown (streamed), the code, buttons, outputs.

    Buttons: ``run_button`` (run the edited code again in the session's kernel),
    ``fork_button`` (let the model continue from the edited code),
    ``copy_button`` (insert the code as a new notebook cell). Their clicks go to
    the callbacks given with :meth:`on_action`.
    """

    def __init__(self, index: int, **kwargs: Any) -> None:
        self.index = index
        self.title = w.HTML()
        self.title.add_class("pyvision-card-title")
        self.text = w.Output()
        self.code = w.Textarea(layout=w.Layout(width="100%", display="none"),
                               continuous_update=False)
        self.code.add_class("pyvision-code")
        self.run_button = w.Button(description="Run", icon="play", disabled=True,
                                   tooltip="Run the edited code in this session's kernel",
                                   layout=w.Layout(width="auto"))
        self.fork_button = w.Button(description="Fork", icon="code-branch", disabled=True,
                                    tooltip="Continue the session from this turn with the "
                                    "edited code", layout=w.Layout(width="auto"))
        self.copy_button = w.Button(description="Copy to cell", icon="copy",
                                    tooltip="Insert the code as a new notebook cell",
                                    layout=w.Layout(width="auto"))
        self.message = w.HTML()
        self.message.add_class("pyvision-message")
        #: A class only this card's message line has, for scripts in the page.
        self.message_class = f"pyvision-message-{uuid.uuid4().hex[:12]}"
        self.message.add_class(self.message_class)
        self.buttons = w.HBox([self.run_button, self.fork_button, self.copy_button,
                               self.message], layout=w.Layout(display="none"))
        self.outputs = w.Output()
        self.note = w.HTML()
        self.note.add_class("pyvision-message")
        super().__init__([self.title, self.text, self.code, self.buttons, self.outputs,
                          self.note], **kwargs)
        self.add_class("pyvision-card")
        self._raw = ""
        self._shown = ""
        self._last_draw = 0.0
        self._status: str | None = None
        self._seconds = 0.0
        self._actions_allowed = False
        self._busy = False
        self._handlers: dict[str, Callable[["TurnCard"], Any]] = {}
        self.run_button.on_click(lambda _: self._fire("run"))
        self.fork_button.on_click(lambda _: self._fire("fork"))
        self.copy_button.on_click(lambda _: self._fire("copy"))
        self._draw_title()

    # -- what the session says -------------------------------------------------

    def append_text(self, delta: str) -> None:
        """Add a streamed piece of the reply; redrawn at most every ``STREAM_REDRAW`` s."""
        self._raw += delta
        now = time.monotonic()
        if now - self._last_draw >= STREAM_REDRAW:
            self._draw_text(self._raw)
            self._last_draw = now

    def set_text(self, text: str, code: str | None = None) -> None:
        self._raw = text
        self._draw_text(text, code)

    def _draw_text(self, text: str, code: str | None = None) -> None:
        words = prose(text, code)
        if words == self._shown:
            return
        self._shown = words
        self.text.outputs = (
            ({"output_type": "display_data", "metadata": {},
              "data": {"text/markdown": words, "text/plain": words}},) if words else ()
        )

    def set_code(self, code: str | None) -> None:
        """Show the tool's code in the editor (hidden when the reply has none)."""
        if code is None:
            self.code.layout.display = "none"
            self.buttons.layout.display = "none"
            return
        self.code.value = code
        self.code.rows = min(max(code.count("\n") + 2, 3), 30)
        self.code.layout.display = None
        self.buttons.layout.display = None

    def set_outputs(self, outputs: list[Output], status: str | None, note: str = "",
                    seconds: float = 0.0) -> None:
        """Replace the outputs with what the tool gave."""
        self.outputs.outputs = tuple(to_notebook_outputs(outputs))
        self._status, self._seconds = status, seconds
        self.note.value = html.escape(note) if note else ""
        self._draw_title()

    def _draw_title(self) -> None:
        parts = [f"Turn {self.index + 1}"]
        if self._status:
            parts.append(f"tool {self._status}" + (f" in {self._seconds:.2f} s"
                                                   if self._status != "skipped" else ""))
        self.title.value = html.escape(" · ".join(parts))

    # -- buttons ---------------------------------------------------------------

    def on_action(self, name: str, callback: Callable[["TurnCard"], Any] | None) -> None:
        """Call ``callback(card)`` when the ``run``, ``fork`` or ``copy`` button is clicked."""
        if callback is None:
            self._handlers.pop(name, None)
        else:
            self._handlers[name] = callback

    def allow_actions(self, allowed: bool) -> None:
        """Enable Run and Fork (not while the session itself runs)."""
        self._actions_allowed = allowed
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        can = self._actions_allowed and not self._busy
        self.run_button.disabled = not can
        self.fork_button.disabled = not can
        self.copy_button.disabled = self._busy

    def set_busy(self, message: str) -> None:
        """Disable the buttons while an action runs, and say what runs."""
        self._busy = True
        self._sync_buttons()
        self.show_message(message)

    def set_done(self, message: str = "", error: bool = False) -> None:
        self._busy = False
        self._sync_buttons()
        self.show_message(message, error=error)

    def show_message(self, message: str, error: bool = False) -> None:
        """A line next to the buttons, e.g. an action's error (shown in place)."""
        css = "pyvision-error" if error else ""
        self.message.value = f"<span class='{css}'>{html.escape(message)}</span>" if message else ""

    def _fire(self, name: str) -> None:
        handler = self._handlers.get(name)
        if handler is None or self._busy:
            return
        try:
            handler(self)
        except Exception as exc:  # a click must never print into some other cell
            self.set_done(f"{name} failed: {exc}", error=True)
