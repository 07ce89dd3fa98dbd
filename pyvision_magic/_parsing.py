"""Reading the model's reply: its code, its answer, and what to cut.

Pure functions: no I/O. The model is asked to write::

    some reasoning
    <code>
    ```python
    ...
    ```
    </code>

or ``<answer>...</answer>``. Models stray from this, so we also accept a plain
python fence without tags (after other fences such as a ```json box), the
one-line form ``<code>```python\\nprint(x)```</code>``, a block indented under a
list item, an unclosed ``<code>`` (the ``</code>`` stop sequence eats the
closing tag, or leaves ``</code`` of it), and the answer forms of
:mod:`._answers`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ._answers import extract_boxed, find_answer, normalize_answer

__all__ = ["ParsedReply", "StreamedText", "parse_reply", "extract_boxed", "reply_end"]

_CODE_TAG = re.compile(r"<code>(?P<body>.*?)(?:</code>|$)", re.DOTALL)
# A fenced block: the opening fence and its info string (```python, ```json, ```),
# the code from the next line, and the closing fence: on a line of its own
# (indented under a list item, say), or ending the code's last line as in the
# one-line form ``print(x)```</code>``. It may be missing: a stop sequence or a
# cut stream can end the text early. Matching whole blocks in order pairs each
# fence with its own closing fence. The lookahead stops the info string from
# backtracking into the rest of its line (quadratic on a line without a newline).
_FENCE = re.compile(
    r"```[ \t]*(?P<lang>[\w+#.-]*)(?![\w+#.-])[^\n`]*\n(?P<code>.*?)"
    r"(?:(?<=\n)[ \t]*```|```(?=[ \t]*(?:\n|</code>|\Z))|\Z)",
    re.DOTALL,
)
_PYTHON_LANGS = {"python", "python3", "py", "ipython"}
# What a stop sequence can leave of "</code>" when it cuts mid-tag.
_PARTIAL_CLOSE = re.compile(r"</(?:c(?:o(?:d(?:e)?)?)?)?\s*\Z")
_INTERPRETER = re.compile(r"<interpreter>", re.IGNORECASE)


@dataclass(frozen=True)
class _Fence:
    start: int
    end: int
    code: str
    lang: str
    closed: bool


def _fences(text: str) -> Iterator[_Fence]:
    """Every fenced block in order, each paired with its own closing fence.

    Pairing matters: reading the closing fence of a ```json box as the opening
    of a bare block would swallow the ```python block after it.
    """
    for m in _FENCE.finditer(text):
        yield _Fence(m.start(), m.end(), m.group("code"), m.group("lang").lower(),
                     m.end() > m.end("code"))


def _clean_code(code: str) -> str:
    """The code without the margin of a block indented under a list item (an
    IndentationError as written); code without a margin is left byte for byte."""
    lines = code.split("\n")
    margins = [line[: len(line) - len(line.lstrip(" \t"))] for line in lines if line.strip()]
    margin = os.path.commonprefix(margins) if margins else ""
    if margin:
        lines = [line[len(margin):] if line.startswith(margin) else line.lstrip(" \t")
                 for line in lines]
    return "\n".join(lines).strip("\n")


@dataclass(frozen=True)
class ParsedReply:
    """What a reply asks for.

    ``code`` is the tool to run (or None), ``answer`` the final answer (or None);
    when both appear, the one written first wins, since an answer written after
    code was guessed before the code ran. ``text`` is the reply as it goes back
    into the conversation: everything after the first code block is cut, which
    removes interpreter output the model made up itself. ``answer`` is read
    without its wrapping (see :func:`~._answers.normalize_answer`);
    ``raw_answer`` is the text the model marked as its answer, as written.
    """

    text: str
    code: str | None
    answer: str | None
    raw_answer: str | None = None


def _find_code(text: str) -> tuple[int, int, str, bool] | None:
    """(start, end, code, closed) of the first tool in the text, or None.

    ``closed`` says the block's end arrived (its closing fence or ``</code>``),
    so more text cannot change the code.
    """
    text = _without_partial_close(text)
    tag = _CODE_TAG.search(text)
    if tag:
        body = tag.group("body")
        tag_closed = tag.group(0).endswith("</code>")
        fence = next((f for f in _fences(body) if not f.lang or f.lang in _PYTHON_LANGS), None)
        if fence:
            # End at the closing fence, not at a missing </code>: whatever the
            # model wrote after its code is not ours to keep.
            code, end = fence.code, tag.start("body") + fence.end
            closed = tag_closed or fence.closed
            if text[end:].lstrip().startswith("</code>"):
                end = text.index("</code>", end) + len("</code>")
        else:
            code, end, closed = body, tag.end(), tag_closed
        if code.strip():
            return tag.start(), end, _clean_code(code), closed
    for fence in _fences(text):
        # A bare fence counts only if it looks like Python: models also fence
        # plain text, JSON or output, which must not be executed.
        python = fence.lang in _PYTHON_LANGS or (not fence.lang and _looks_like_python(fence.code))
        if python and fence.code.strip():
            return fence.start, fence.end, _clean_code(fence.code), fence.closed
    return None


def _without_partial_close(text: str) -> str:
    """``text`` without a cut-off ``</code`` ending an open ``<code>`` block."""
    if text.rfind("<code>") > text.rfind("</code>"):
        return _PARTIAL_CLOSE.sub("", text)
    return text


def _looks_like_python(code: str) -> bool:
    return bool(
        re.search(r"^\s*(import |from \S+ import |def |for |print\(|\w+\s*=)", code, re.MULTILINE)
    )


def parse_reply(text: str) -> ParsedReply:
    """Find the code or the answer in a model reply; see :class:`ParsedReply`."""
    code = _find_code(text)
    # An answer phrase without a tag ("Final Answer: ...") only counts in a reply
    # without code: beside code it is a plan or a guess.
    answer = find_answer(text, lenient=code is None)
    if code and answer:
        if answer.start < code[0]:
            code = None
        else:
            answer = None
    if code:
        _, end, body, _ = code
        kept = _without_partial_close(text)[:end]
        # If the stop sequence ate "</code>", put it back so the conversation
        # history shows the model a well-formed turn.
        if kept.lstrip().find("<code>") >= 0 and not kept.rstrip().endswith("</code>"):
            if kept.count("```") % 2:
                kept = kept.rstrip() + "\n```"  # the fence was cut off too
            kept = kept.rstrip() + "\n</code>"
        return ParsedReply(text=kept, code=body, answer=None)
    if answer:
        return ParsedReply(text=_cut_interpreter(text), code=None,
                           answer=normalize_answer(answer.raw), raw_answer=answer.raw)
    return ParsedReply(text=_cut_interpreter(text), code=None, answer=None)


def reply_end(text: str) -> int | None:
    """Where a reply is complete for the agent loop, or None while more text could matter.

    That is the end of the first tool's code block once its closing fence or
    ``</code>`` has arrived, or the end of ``</answer>``, whichever
    :func:`parse_reply` would pick. Whatever the model writes after that point
    is cut by :func:`parse_reply` anyway, so a streamed reply can stop there.
    """
    code = _find_code(text)
    answer = find_answer(text, lenient=False)
    if code and (answer is None or code[0] < answer.start):
        return code[1] if code[3] else None
    if answer:
        return answer.end
    return None


class StreamedText:
    """A reply's text as it streams in, and where it became complete.

    ``end`` is :func:`reply_end` of the text so far, kept up to date in linear
    time overall: the text is parsed only when a delta brings a closing marker
    (a fence, ``</code>``, ``</answer>``), and after many fruitless parses only
    once the text has grown by an eighth, so a stream of markers cannot make
    reading quadratic.
    """

    _MARKERS = ("```", "</code>", "</answer>")
    _TAIL = max(len(m) for m in _MARKERS) - 1  # a marker split across two deltas
    _EAGER_PARSES = 32

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._tail = ""
        self._pending = False
        self._parses = 0
        self._next_parse = 0
        #: Characters so far.
        self.length = 0
        #: Where the text became complete (see :func:`reply_end`), once it has.
        self.end: int | None = None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def add(self, piece: str) -> None:
        """Append ``piece``; update :attr:`end`."""
        self._parts.append(piece)
        self.length += len(piece)
        if self.end is not None:
            return
        window = self._tail + piece
        self._tail = window[-self._TAIL :]
        if any(marker in window for marker in self._MARKERS):
            self._pending = True
        if self._pending and (self._parses < self._EAGER_PARSES or self.length >= self._next_parse):
            self._pending = False
            self._parses += 1
            self._next_parse = self.length + self.length // 8
            text = self.text
            self._parts = [text]  # joined once per parse, not once per delta
            self.end = reply_end(text)


def _cut_interpreter(text: str) -> str:
    m = _INTERPRETER.search(text)
    return text[: m.start()].rstrip() if m else text
