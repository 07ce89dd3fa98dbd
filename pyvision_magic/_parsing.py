"""Reading the model's reply: its code, its answer, and what to cut.

Pure functions: no I/O. The model is asked to write::

    some reasoning
    <code>
    ```python
    ...
    ```
    </code>

or ``<answer>...</answer>``. Models stray from this, so we also accept a plain
python fence without tags, an unclosed ``<code>`` (the ``</code>`` stop sequence
eats the closing tag), an unclosed ``<answer>`` and ``\\boxed{...}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ParsedReply", "StreamedText", "parse_reply", "extract_boxed", "reply_end"]

_CODE_TAG = re.compile(r"<code>(?P<body>.*?)(?:</code>|$)", re.DOTALL)
# A fence whose language is python/py/python3 or empty. The closing fence is
# optional because a stop sequence or a cut stream can end the text early.
_FENCE = re.compile(
    r"```[ \t]*(?P<lang>python3?|py|ipython)?[ \t]*\n(?P<code>.*?)(?:(?<=\n)[ \t]*```|$)",
    re.DOTALL | re.IGNORECASE,
)
_ANSWER = re.compile(r"<answer>(?P<body>.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_INTERPRETER = re.compile(r"<interpreter>", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedReply:
    """What a reply asks for.

    ``code`` is the tool to run (or None), ``answer`` the final answer (or None);
    when both appear, the one written first wins, since an answer written after
    code was guessed before the code ran. ``text`` is the reply as it goes back
    into the conversation: everything after the first code block is cut, which
    removes interpreter output the model made up itself.
    """

    text: str
    code: str | None
    answer: str | None


def extract_boxed(text: str) -> str | None:
    r"""Return the content of the last ``\boxed{...}``, braces balanced, or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def _find_code(text: str) -> tuple[int, int, str, bool] | None:
    """(start, end, code, closed) of the first tool in the text, or None.

    ``closed`` says the block's end arrived (its closing fence or ``</code>``),
    so more text cannot change the code.
    """
    tag = _CODE_TAG.search(text)
    if tag:
        body = tag.group("body")
        tag_closed = tag.group(0).endswith("</code>")
        fence = _FENCE.search(body)
        if fence:
            # End at the closing fence, not at a missing </code>: whatever the
            # model wrote after its code is not ours to keep.
            code, end = fence.group("code"), tag.start("body") + fence.end()
            closed = tag_closed or fence.end() > fence.end("code")
            if text[end:].lstrip().startswith("</code>"):
                end = text.index("</code>", end) + len("</code>")
        else:
            code, end, closed = body, tag.end(), tag_closed
        if code.strip():
            return tag.start(), end, code.strip("\n"), closed
    for fence in _FENCE.finditer(text):
        lang = fence.group("lang")
        code = fence.group("code")
        # A bare fence counts only if it looks like Python: models also fence
        # plain text or output, which must not be executed.
        if lang or _looks_like_python(code):
            if code.strip():
                return fence.start(), fence.end(), code.strip("\n"), fence.end() > fence.end("code")
    return None


def _looks_like_python(code: str) -> bool:
    return bool(
        re.search(r"^\s*(import |from \S+ import |def |for |print\(|\w+\s*=)", code, re.MULTILINE)
    )


def _find_answer(text: str) -> tuple[int, str, int | None] | None:
    """(start, answer, end) of the answer, or None; ``end`` is None until ``</answer>`` arrived."""
    m = _ANSWER.search(text)
    if m:
        body = m.group("body").strip()
        boxed = extract_boxed(body)
        if boxed is not None and body.startswith("\\boxed{") and body.endswith("}"):
            body = boxed
        if body:
            closed = m.group(0).lower().endswith("</answer>")
            return m.start(), body, m.end() if closed else None
    boxed_at = text.rfind("\\boxed{")
    if boxed_at >= 0:
        boxed = extract_boxed(text)
        if boxed:
            return boxed_at, boxed, None
    return None


def parse_reply(text: str) -> ParsedReply:
    """Find the code or the answer in a model reply; see :class:`ParsedReply`."""
    code = _find_code(text)
    answer = _find_answer(text)
    if code and answer:
        if answer[0] < code[0]:
            code = None
        else:
            answer = None
    if code:
        start, end, body, _ = code
        kept = text[:end]
        # If the stop sequence ate "</code>", put it back so the conversation
        # history shows the model a well-formed turn.
        if kept.lstrip().find("<code>") >= 0 and not kept.rstrip().endswith("</code>"):
            kept = kept.rstrip() + "\n</code>"
        return ParsedReply(text=kept, code=body, answer=None)
    if answer:
        return ParsedReply(text=_cut_interpreter(text), code=None, answer=answer[1])
    return ParsedReply(text=_cut_interpreter(text), code=None, answer=None)


def reply_end(text: str) -> int | None:
    """Where a reply is complete for the agent loop, or None while more text could matter.

    That is the end of the first tool's code block once its closing fence or
    ``</code>`` has arrived, or the end of ``</answer>``, whichever
    :func:`parse_reply` would pick. Whatever the model writes after that point
    is cut by :func:`parse_reply` anyway, so a streamed reply can stop there.
    """
    code = _find_code(text)
    answer = _find_answer(text)
    if code and (answer is None or code[0] < answer[0]):
        return code[1] if code[3] else None
    if answer:
        return answer[2]
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
