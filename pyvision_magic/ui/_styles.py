"""The CSS of the live view, sent once per view inside an HTML widget."""

from __future__ import annotations

from .._render import STATIC_CLASS

CSS = """
.pyvision-view { max-width: 980px; }
.pyvision-card { border: 1px solid #d0d7de; border-radius: 6px; padding: 4px 10px; margin: 6px 0; }
.pyvision-card-title { font-weight: 600; }
.pyvision-code textarea { font-family: var(--jp-code-font-family, monospace); font-size: 12px;
  line-height: 1.4; background: #f6f8fa; }
.pyvision-answer { border: 2px solid #1a7f37; border-radius: 6px; padding: 6px 12px;
  background: #f0fff4; font-size: 15px; }
.pyvision-noanswer { border: 2px solid #9a6700; border-radius: 6px; padding: 6px 12px;
  background: #fff8c5; }
.pyvision-message { color: #57606a; font-style: italic; }
.pyvision-error { color: #b42318; }
.pyvision-fork { border-left: 3px solid #8250df; padding-left: 10px; margin-left: 12px; }
.pyvision-thumb img { border: 1px solid #ddd; }
"""


def style_html(uid: str) -> str:
    """A ``<style>`` for the view; it also hides this session's static rendering,
    which is there for viewers that cannot show widgets."""
    return f"<style>{CSS} .{STATIC_CLASS}-{uid} {{ display: none !important; }}</style>"
