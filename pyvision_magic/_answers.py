r"""Finding the final answer in a model reply, and reading it without its wrapping.

Pure functions: no I/O. An answer is, in order of preference, the content of
``<answer>...</answer>`` (closed or not), the last ``\boxed{...}``, or, in a
reply without code, a closing "Final Answer: ..." / "ANSWER: ... TERMINATE"
paragraph. Models wrap answers in ways the user did not ask for (``\boxed{'B'}``,
``**C. S QT 911**``, ``\boxed{\text{yellow}}``, ``\boxed{B} (the right one)``):
:func:`normalize_answer` takes that wrapping off, and the session keeps the
raw text beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FoundAnswer", "extract_boxed", "find_answer", "normalize_answer"]

_ANSWER = re.compile(r"<answer>(?P<body>.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
# "Final Answer: X" (any case, markdown bold or heading allowed), or the upper-case
# "ANSWER: X" agents print before "TERMINATE"; a "### Final Answer" heading needs no
# colon. The answer runs to the end of the reply.
_ENDING = re.compile(
    r"^[ \t>#*_-]*(?:(?i:final[ \t]+answer)|ANSWER)(?:\*\*)?[ \t]*(?:[:：](?:\*\*)?|(?=\n))\s*",
    re.MULTILINE,
)
_ANSWER_LINE = re.compile(r"^[ \t>#*_-]*(?i:answer)(?:\*\*)?[ \t]*[:：](?:\*\*)?[ \t]*", re.MULTILINE)
# An ending longer than this is prose that merely mentions an answer.
_ENDING_MAX_CHARS = 300
_ENDING_MAX_LINES = 3
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|mathrm)\{")
_PAIRS = (("**", "**"), ("`", "`"), ('"', '"'), ("'", "'"), ("\u201c", "\u201d"),
          ("\u2018", "\u2019"))


@dataclass(frozen=True)
class FoundAnswer:
    """Where an answer is in a reply: ``start``, the ``raw`` text the model marked,
    and ``end``, the end of its closing tag (None while the reply could go on)."""

    start: int
    raw: str
    end: int | None


def _balanced(text: str, i: int) -> int | None:
    """Index of the ``}`` closing the brace opened just before ``text[i]``, or None."""
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def extract_boxed(text: str) -> str | None:
    r"""Return the content of the last ``\boxed{...}``, braces balanced, or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    j = _balanced(text, i)
    return None if j is None else text[i:j].strip()


def _first_boxed(text: str) -> str | None:
    i = len("\\boxed{")
    j = _balanced(text, i) if text.startswith("\\boxed{") else None
    return None if j is None else text[i:j].strip()


def find_answer(text: str, *, lenient: bool = True) -> FoundAnswer | None:
    """The answer in ``text``, or None; ``lenient`` also accepts a "Final Answer:" ending."""
    m = _ANSWER.search(text)
    if m:
        body = m.group("body").strip()
        if body:
            closed = m.group(0).lower().endswith("</answer>")
            return FoundAnswer(m.start(), body, m.end() if closed else None)
    boxed_at = text.rfind("\\boxed{")
    if boxed_at >= 0:
        j = _balanced(text, boxed_at + len("\\boxed{"))
        if j is not None and text[boxed_at + len("\\boxed{"):j].strip():
            return FoundAnswer(boxed_at, text[boxed_at:j + 1], None)
    if lenient:
        return _find_ending(text)
    return None


def _find_ending(text: str) -> FoundAnswer | None:
    # Not a regex: "\s*TERMINATE" searched over a long run of spaces is quadratic.
    stripped = text.rstrip(" \t\r\n.")
    terminated = stripped.endswith("TERMINATE") and not stripped[-10:-9].isalnum()
    body = stripped[: -len("TERMINATE")] if terminated else text
    # Any "Answer:" line counts when the agent said TERMINATE after it.
    pattern = _ANSWER_LINE if terminated else _ENDING
    marks = list(pattern.finditer(body))
    if not marks:
        return None
    mark = marks[-1]
    raw = body[mark.end():].strip()
    lines = [line for line in raw.splitlines() if line.strip()]
    if not raw or len(raw) > _ENDING_MAX_CHARS or len(lines) > _ENDING_MAX_LINES:
        return None
    return FoundAnswer(mark.start(), raw, None)


def _unwrap_text(s: str) -> str:
    r"""``s`` without a ``\text{...}`` that wraps all of it."""
    m = _TEXT_COMMAND.match(s)
    if m:
        j = _balanced(s, m.end())
        if j == len(s) - 1:
            return s[m.end():j].strip()
    return s


def _unwrap_pair(s: str) -> str:
    """``s`` without one pair of quotes, backticks or ``**`` around all of it."""
    for left, right in _PAIRS:
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            inner = s[len(left): len(s) - len(right)]
            if left == "'":
                # An apostrophe inside a word (shop's) is not a quote; 'a' or 'b' is two quotes.
                if re.search(r"(?<!\w)'|'(?!\w)", inner):
                    return s
            elif left in inner or right in inner:
                return s
            return inner.strip()
    return s


def normalize_answer(raw: str) -> str:
    r"""The answer without its wrapping.

    ``\boxed{X} trailing words`` gives ``X`` (else the last ``\boxed{}`` in it);
    then a ``\text{}`` around the whole answer and one matching pair of quotes,
    backticks or ``**`` around it are removed: ``\boxed{'B'}`` gives ``B``.
    """
    s = raw.strip()
    boxed = _first_boxed(s)
    if boxed is None and "\\boxed{" in s:
        boxed = extract_boxed(s)
    if boxed:
        s = boxed
    s = _unwrap_text(s)
    s = _unwrap_pair(s)
    s = _unwrap_text(s)
    return s or raw.strip()
