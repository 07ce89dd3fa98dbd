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

__all__ = ["ParsedReply", "parse_reply", "extract_boxed"]

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


def _find_code(text: str) -> tuple[int, int, str] | None:
    """(start, end, code) of the first tool in the text, or None."""
    tag = _CODE_TAG.search(text)
    if tag:
        body = tag.group("body")
        fence = _FENCE.search(body)
        if fence:
            # End at the closing fence, not at a missing </code>: whatever the
            # model wrote after its code is not ours to keep.
            code, end = fence.group("code"), tag.start("body") + fence.end()
            if text[end:].lstrip().startswith("</code>"):
                end = text.index("</code>", end) + len("</code>")
        else:
            code, end = body, tag.end()
        if code.strip():
            return tag.start(), end, code.strip("\n")
    for fence in _FENCE.finditer(text):
        lang = fence.group("lang")
        code = fence.group("code")
        # A bare fence counts only if it looks like Python: models also fence
        # plain text or output, which must not be executed.
        if lang or _looks_like_python(code):
            if code.strip():
                return fence.start(), fence.end(), code.strip("\n")
    return None


def _looks_like_python(code: str) -> bool:
    return bool(
        re.search(r"^\s*(import |from \S+ import |def |for |print\(|\w+\s*=)", code, re.MULTILINE)
    )


def _find_answer(text: str) -> tuple[int, str] | None:
    m = _ANSWER.search(text)
    if m:
        body = m.group("body").strip()
        boxed = extract_boxed(body)
        if boxed is not None and body.startswith("\\boxed{") and body.endswith("}"):
            body = boxed
        if body:
            return m.start(), body
    boxed_at = text.rfind("\\boxed{")
    if boxed_at >= 0:
        boxed = extract_boxed(text)
        if boxed:
            return boxed_at, boxed
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
        start, end, body = code
        kept = text[:end]
        # If the stop sequence ate "</code>", put it back so the conversation
        # history shows the model a well-formed turn.
        if kept.lstrip().find("<code>") >= 0 and not kept.rstrip().endswith("</code>"):
            kept = kept.rstrip() + "\n</code>"
        return ParsedReply(text=kept, code=body, answer=None)
    if answer:
        return ParsedReply(text=_cut_interpreter(text), code=None, answer=answer[1])
    return ParsedReply(text=_cut_interpreter(text), code=None, answer=None)


def _cut_interpreter(text: str) -> str:
    m = _INTERPRETER.search(text)
    return text[: m.start()].rstrip() if m else text
