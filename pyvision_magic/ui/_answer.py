"""The final answer, shown prominently, or why there is none."""

from __future__ import annotations

import html

import ipywidgets as w

from .._render import markdown_to_html

__all__ = ["AnswerBox"]

_WHY = {
    "max_turns": "the model did not answer within the turn limit",
    "stopped": "the session was stopped",
    "error": "the session failed",
}


class AnswerBox(w.HTML):
    """Empty while the session runs; then the answer, or the reason there is none."""

    def show(self, status: str, answer: str | None, error: str | None = None) -> None:
        """Show how the session ended."""
        if status == "running":
            self.value = ""
            self.remove_class("pyvision-noanswer")
            return
        if status == "answered" and answer is not None:
            self.remove_class("pyvision-noanswer")
            self.add_class("pyvision-answer")
            body = markdown_to_html(answer)
            if body.startswith("<p>") and body.count("<p>") == 1:
                body = body[3:-4]
            self.value = f"<b>Answer:</b> {body}"
            return
        self.remove_class("pyvision-answer")
        self.add_class("pyvision-noanswer")
        why = _WHY.get(status, status)
        detail = f": {html.escape(error)}" if error else ""
        self.value = f"<b>No answer</b>: {why}{detail}. Everything done so far is kept."
