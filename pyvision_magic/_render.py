"""A session as static HTML and plain text, and its compact JSON for notebooks.

A ``%%pyvision`` cell's output keeps a static rendering next to the live
widgets, so a notebook opened without a kernel or without widget state
(GitHub, nbviewer, a colleague's JupyterLab) still shows the whole session; its
metadata carries a compact transcript from which ``%pyvision load`` rebuilds
the widgets. Images are stored as JPEG thumbnails (PNG when smaller, as for
line art), so a ten-turn session with an image per turn stays near 1 MB.
"""

from __future__ import annotations

import base64
import functools
import html
import re
from collections.abc import Sequence
from typing import Any

from ._console import plural
from ._thumbs import thumbnail
from ._transcript import Transcript

__all__ = [
    "thumbnail",
    "compact_transcript",
    "prose",
    "markdown_to_html",
    "render_html",
    "render_text",
    "STATIC_CLASS",
]

#: CSS class of the static rendering; the live view hides ``STATIC_CLASS-<uid>``.
STATIC_CLASS = "pyvision-static"
#: Longest side of images in the HTML rendering, and of output images in the metadata.
HTML_SIDE, STORED_SIDE = 320, 512
#: Input images up to this size are stored as they are; larger ones are reduced.
STORED_INPUT_BYTES, STORED_INPUT_SIDE = 300_000, 1024
#: (side, JPEG quality) of the reduced copies the static rendering uses, for output
#: images and for input images. A view can have them made while the session runs
#: (:func:`._thumbs.prepare`), so the copy built at the end finds them ready.
OUTPUT_SIZES = ((STORED_SIDE, 70), (HTML_SIDE, 65))
INPUT_SIZES = ((STORED_INPUT_SIDE, 80), (HTML_SIDE, 65))

_STATUS_TEXT = {
    "running": "running",
    "answered": "answered",
    "max_turns": "no answer within the turn limit",
    "stopped": "stopped",
    "error": "failed",
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def compact_transcript(transcript: Transcript) -> dict[str, Any]:
    """The transcript's JSON with output images as thumbnails and big inputs reduced.

    Loading it back gives a session that can be shown, rerun and forked; only
    the pixels of large images are fewer.
    """
    data = transcript.to_dict()
    for image, original in zip(data["images"], transcript.images):
        if len(original.data) > STORED_INPUT_BYTES:
            mime, small, w, h = thumbnail(original.data, *INPUT_SIZES[0])
            image.update(mime=mime, data=_b64(small), width=w, height=h)
    for turn in data["turns"]:
        for out in turn["outputs"]:
            if out.get("kind") == "image" and out.get("data"):
                mime, small, w, h = thumbnail(out["data"], *OUTPUT_SIZES[0])
                out.update(mime=mime, data=_b64(small), width=w, height=h)
    return data


# -- model text ------------------------------------------------------------------

_CODE_BLOCK = re.compile(r"<code>.*?(?:</code>|$)", re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>.*?(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_PY_FENCE = re.compile(r"```[ \t]*(?:python3?|py|ipython)[ \t]*\n.*?(?:\n[ \t]*```|$)",
                       re.DOTALL | re.IGNORECASE)


def prose(text: str, code: str | None = None) -> str:
    """The model's words without its tool code and answer tags (shown apart)."""
    text = _CODE_BLOCK.sub("", text)
    if code:
        text = _PY_FENCE.sub("", text, count=1)
    text = _ANSWER_BLOCK.sub("", text)
    # A reply still streaming may end inside an opening tag.
    text = re.sub(r"<(c(o(d(e)?)?)?|a(n(s(w(e(r)?)?)?)?)?)?$", "", text.rstrip())
    return text.strip()


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"<em>\1</em>", text)
    return text


def markdown_to_html(text: str) -> str:
    """A small, safe Markdown subset: paragraphs, headings, lists, code, emphasis.

    Everything is escaped first, so model text can never inject markup.
    """
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            block: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            i += 1
            out.append(f"<pre style='{_PRE}'>{html.escape(chr(10).join(block))}</pre>")
            continue
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        if heading:
            level = min(len(heading.group(1)) + 2, 6)
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        if re.match(r"\s*([-*+]|\d+[.)])\s+", line):
            ordered = bool(re.match(r"\s*\d", line))
            items = []
            while i < len(lines) and re.match(r"\s*([-*+]|\d+[.)])\s+", lines[i]):
                items.append(re.sub(r"\s*([-*+]|\d+[.)])\s+", "", lines[i], count=1))
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + f"</{tag}>")
            continue
        if not line.strip():
            i += 1
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith("```") \
                and not re.match(r"(#{1,6})\s|\s*([-*+]|\d+[.)])\s+", lines[i]):
            para.append(_inline(lines[i]))
            i += 1
        out.append("<p>" + "<br>".join(para) + "</p>")
    return "\n".join(out)


# -- HTML ----------------------------------------------------------------------

# The static copy sets its own colours (text and background together), so it reads
# the same in light and dark themes; code and outputs are monospace.
# No quotes inside (the styles sit in single-quoted attributes), and no var(): JupyterLab's
# HTML sanitizer drops a font-family it cannot parse.
_MONO = "font-family:Menlo,Consolas,DejaVu Sans Mono,monospace"
_PRE = ("background:#f6f8fa;color:#24292f;border:1px solid #e1e4e8;border-radius:4px;"
        f"padding:6px 8px;{_MONO};font-size:12px;line-height:1.4;overflow-x:auto;"
        "white-space:pre-wrap;margin:4px 0;box-sizing:border-box")
_CARD = ("border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;margin:8px 0;"
         "box-sizing:border-box")
_HINT = ("This is the saved copy of a pyvision session. To edit, rerun or fork its tools, "
         "run the cell again, or load the notebook's sessions with "
         "<code>%pyvision load NOTEBOOK.ipynb</code>.")


@functools.lru_cache(maxsize=256)
def _code_html(code: str) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        body = highlight(code, PythonLexer(), HtmlFormatter(nowrap=True, noclasses=True))
    except ImportError:  # pragma: no cover - pygments comes with IPython
        body = html.escape(code)
    return f"<pre style='{_PRE}'>{body}</pre>"


def _img(data: bytes | str, alt: str) -> str:
    mime, small, w, h = thumbnail(data, *OUTPUT_SIZES[1])
    return (f"<img src='data:{mime};base64,{_b64(small)}' width='{w}' height='{h}' "
            f"alt='{html.escape(alt)}' style='margin:4px 6px 4px 0;border:1px solid #ddd'>")


def _outputs_html(turn: Any) -> str:
    parts = []
    for out in turn.outputs:
        if out.kind == "image" and out.data:
            parts.append(_img(out.data, out.variable or "image"))
        elif out.kind == "error":
            parts.append(f"<pre style='{_PRE};background:#fff5f5;color:#8b0000'>"
                         f"{html.escape(out.text or f'{out.ename}: {out.evalue}')}</pre>")
        elif out.text:
            color = "#8a6d00" if out.stream == "stderr" else "#24292f"
            parts.append(f"<pre style='{_PRE};color:{color}'>{html.escape(out.text)}</pre>")
    return "".join(parts)


def _answer_html(t: Transcript) -> str:
    if t.status == "answered" and t.answer is not None:
        return (f"<div style='border:2px solid #1a7f37;border-radius:6px;padding:8px 12px;"
                f"background:#f0fff4;margin:8px 0'><b>Answer:</b> "
                f"{markdown_to_html(t.answer)}</div>")
    message = _STATUS_TEXT.get(t.status, t.status)
    if t.error:
        message += f": {t.error}"
    return (f"<div style='border:2px solid #9a6700;border-radius:6px;padding:8px 12px;"
            f"background:#fff8c5;margin:8px 0'><b>No answer</b> ({html.escape(message)})</div>")


def _session_html(t: Transcript, title: str = "") -> str:
    u = t.usage
    head = (f"<div style='font-size:13px;color:#57606a'>{html.escape(title)}"
            f"pyvision · model <code>{html.escape(t.model)}</code> · "
            f"{html.escape(_STATUS_TEXT.get(t.status, t.status))} · {plural(len(t.turns), 'turn')} · "
            f"{plural(u.total_tokens, 'token')}"
            + (f" ({u.cached_tokens:,} cached)" if u.cached_tokens else "") + "</div>")
    question = f"<div style='font-size:15px;margin:6px 0'><b>Q:</b> {html.escape(t.question)}</div>"
    images = "".join(_img(im.data, im.name) for im in t.images)
    # Each input clip as its sampled frames (the clip itself is never stored).
    images += "".join(_img(f.image.data, f"video_clue_{i} {f.seconds:.2f} s")
                      for i, v in enumerate(t.videos) for f in v.frames)
    cards = []
    for turn in t.turns:
        status = f" · tool {turn.exec_status}" if turn.exec_status else ""
        body = [f"<div style='font-weight:600'>Turn {turn.index + 1}{html.escape(status)}</div>"]
        words = prose(turn.text, turn.code)
        if words:
            body.append(markdown_to_html(words))
        if turn.code:
            body.append(_code_html(turn.code))
        body.append(_outputs_html(turn))
        if turn.note:
            body.append(f"<div style='font-style:italic;color:#57606a'>{html.escape(turn.note)}</div>")
        cards.append(f"<div style='{_CARD}'>{''.join(body)}</div>")
    return head + question + f"<div>{images}</div>" + "".join(cards) + _answer_html(t)


def render_html(
    transcript: Transcript, *, forks: Sequence[tuple[int, Transcript]] = (), uid: str = ""
) -> str:
    """The whole session (and its forks) as self-contained HTML with inline styles.

    ``uid`` adds the class ``pyvision-static-<uid>``, which the live view of
    the same session hides, so the page does not show the session twice.
    """
    classes = STATIC_CLASS + (f" {STATIC_CLASS}-{uid}" if uid else "")
    parts = [f"<div style='font-size:12px;color:#57606a;margin-bottom:4px'>{_HINT}</div>",
             _session_html(transcript)]
    for turn_index, fork in forks:
        parts.append(
            f"<div style='margin-left:16px;border-left:3px solid #8250df;padding-left:10px'>"
            f"{_session_html(fork, title=f'Fork from turn {turn_index + 1} · ')}</div>"
        )
    return (f"<div class='{classes}' style='max-width:960px;background:#ffffff;color:#24292f;"
            f"padding:6px 10px;box-sizing:border-box'>{''.join(parts)}</div>")


def render_text(transcript: Transcript) -> str:
    """A few lines for plain-text viewers: question, how it ended, the answer."""
    t = transcript
    lines = [f"pyvision: {t.question}", f"{_STATUS_TEXT.get(t.status, t.status)} after "
             f"{plural(len(t.turns), 'turn')} with {t.model}"]
    if t.answer is not None:
        lines.append(f"Answer: {t.answer}")
    if t.error:
        lines.append(f"Error: {t.error}")
    return "\n".join(lines)
