"""Answer extraction and scoring, per answer type. Pure functions, no I/O.

The model's final text is first narrowed to what it marked as the answer (the
last ``\\boxed{...}``, else the content of ``<answer>...</answer>``), then read
according to the task's ``answer_type``:

- ``choice``: an option letter, found as a bare or quoted letter (``B``, ``(B)``,
  ``B.``, ``'B'``), a letter before the option's text (``B. the red one``,
  ``(B) red``, ``B.Red``), after "answer is"/"option", as a lone ``(B)`` or ``'B'``
  in the text, or as the text of exactly one option.
- ``integer``: a whole number (digits or a number word up to twenty); when the
  text holds several numbers, the last one.
- ``number``: a decimal, a fraction ``a/b`` or ``\\frac{a}{b}``, or a percentage;
  correct within the task's tolerance (default: half a unit of the answer's last
  written digit).

Numbers are read after LaTeX is made plain: spacing (``\\,``, ``\\ ``, ``~``),
``\\text{}``/``\\mathrm{}`` and unit powers (``m^2``, ``\\text{m}^2``, ``m²``,
``^\\circ``) are dropped, so ``12\\,\\text{m}^2`` reads as 12, not 2.
- ``text``: equal after case folding and dropping punctuation, articles and
  surrounding whitespace; for yes/no answers the first yes or no; for one-letter
  answers a quoted or lone letter, case-insensitively.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .._answers import normalize_answer
from .._parsing import extract_boxed
from .tasks import LETTERS, Task

__all__ = ["Score", "extract_answer", "score_answer", "final_answer_text", "default_tolerance"]

_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?%?")
_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_WORD_NUMBER = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"
# LaTeX a model writes around numbers, made plain before numbers are read.
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([-+]?\d+(?:\.\d+)?)\s*\}\s*\{\s*(\d+(?:\.\d+)?)\s*\}")
_THIN_THOUSANDS = re.compile(r"(?<=\d)\\[,;:! ](?=\d{3}(?!\d))")
_LATEX_SPACE = re.compile(r"\\[,;:! ]|~")
_LATEX_WRAP = re.compile(r"\\(?:text|mathrm|textrm|mathbf|textbf|operatorname)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|°")
# A power after a unit's letters or braces (m^2, \text{m}^{2}); 10^3 keeps its power.
_UNIT_POWER = re.compile(r"(?<=[A-Za-z}])\s*\^\s*(?:\{\s*-?\d+\s*\}|-?\d+)|[²³]")


@dataclass(frozen=True)
class Score:
    """The outcome of scoring one prediction: the value read from it and whether it is right."""

    correct: bool
    extracted: str | None


def final_answer_text(text: str | None) -> str:
    """What the model marked as its answer: the last ``\\boxed{}``, else ``<answer>``, else all."""
    if not text:
        return ""
    tagged = _ANSWER_TAG.findall(text)
    inner = tagged[-1] if tagged else text
    boxed = extract_boxed(inner) if "\\boxed{" in inner else None
    if boxed is None and "\\boxed{" in text:
        boxed = extract_boxed(text)
    if boxed is not None:
        return boxed.strip()
    return inner.strip()


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text)
    text = re.sub(r"[^\w\s.+-]|(?<!\d)\.|\.(?!\d)", " ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _plain_math(text: str) -> str:
    r"""``text`` with the LaTeX around numbers made plain: ``12\,\text{m}^2`` gives ``12 m``."""
    text = _FRAC.sub(r" \1/\2 ", text)
    text = _THIN_THOUSANDS.sub("", text)
    text = _LATEX_SPACE.sub(" ", text.replace("\\%", "%"))
    for _ in range(2):  # \text{\mathrm{m}}
        text = _LATEX_WRAP.sub(r"\1", text)
    text = _DEGREES.sub(" ", text)
    return _UNIT_POWER.sub("", text)


def _extract_choice(text: str, n: int) -> str | None:
    valid = LETTERS[:n]
    # "'B'", "**B**": the wrapping is not part of the letter.
    s = normalize_answer(text.strip())
    patterns = [
        r"^\(?([A-Z])\)?[.:)]?$",  # "B", "(B)", "B."
        # "B) the text", "(B) text", "B.Transverse": a letter before the option's text.
        r"^\(?([A-Z])(?:[).:]\s|[).:](?=(?-i:[A-Z])))",
        rf"(?:answer|option|choice)\s*(?:is|:)?\s*(?:option\s*)?[{_QUOTES}*]*\(?([A-Z])\)?(?![\w])",
    ]
    for pattern in patterns:
        m = re.search(pattern, s, re.IGNORECASE if pattern.startswith("^") else 0)
        if m and m.group(1).upper() in valid:
            return m.group(1).upper()
    for lone in (r"\(([A-Z])\)", rf"[{_QUOTES}]([A-Z])[{_QUOTES}]"):  # "(B)", "'B'" in the text
        found = {x for x in re.findall(lone, s) if x in valid}
        if len(found) == 1:
            return found.pop()
    return None


def _choice_by_text(text: str, choices: list[str]) -> str | None:
    norm = _normalize(text)
    texts = [_normalize(c) for c in choices]
    exact = [i for i, c in enumerate(texts) if c and c == norm]
    if len(exact) == 1:
        return LETTERS[exact[0]]
    found = [i for i, c in enumerate(texts) if c and re.search(rf"(?<!\w){re.escape(c)}(?!\w)", norm)]
    # An option contained in another ("red" in "dark red") must not count twice.
    found = [i for i in found if not any(j != i and texts[i] in texts[j] for j in found)]
    if len(found) == 1:
        return LETTERS[found[0]]
    lone = {x for x in re.findall(r"(?<![\w'])([A-Z])(?![\w'])", text) if x in LETTERS[: len(choices)]}
    if len(lone) == 1:
        return lone.pop()
    return None


def _parse_number(token: str) -> float | None:
    token = token.replace("−", "-").replace(",", "").replace(" ", "").rstrip("%")
    try:
        if "/" in token:
            num, den = token.split("/")
            return float(num) / float(den) if float(den) else None
        return float(token)
    except ValueError:
        return None


def _numbers(text: str) -> list[float]:
    found: list[tuple[int, float]] = []
    for m in _NUMBER.finditer(text):
        value = _parse_number(m.group(0))
        if value is not None:
            found.append((m.start(), value))
    for m in _WORD_NUMBER.finditer(text):
        found.append((m.start(), float(_WORDS[m.group(1).lower()])))
    return [value for _, value in sorted(found)]


def default_tolerance(answer: str) -> float:
    """Half a unit of the last written digit: ``"3.25"`` gives 0.005, ``"12"`` gives 0.5."""
    mantissa = answer.strip().lower().split("e")[0]
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    exponent = int(answer.lower().split("e")[1]) if "e" in answer.lower() else 0
    return 0.5 * 10.0 ** (exponent - decimals) * (1 + 1e-9)


def _format_number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _extract_text(text: str, answer: str) -> str | None:
    norm = _normalize(text)
    if not norm:
        return None
    target = _normalize(answer)
    if target in ("yes", "no"):
        m = re.search(r"\b(yes|no)\b", norm)
        return m.group(1) if m else norm
    if len(target) == 1 and len(norm) > 1:
        quoted = re.findall(r"[\"'“‘`]([A-Za-z0-9])[\"'”’`]", text)
        if quoted:
            return quoted[-1].casefold()
        m = re.search(r"\b(?:letter|character)\s+(?:is\s+)?([a-z0-9])\b", norm)
        if m:
            return m.group(1)
        singles = re.findall(r"(?<!\w)([a-z0-9])(?!\w)", norm)
        if len(set(singles)) == 1:
            return singles[0]
    return norm


def extract_answer(text: str | None, task: Task) -> str | None:
    """The answer read from the model's text, normalised for ``task``'s answer type.

    ``None`` when nothing of the right kind is found.
    """
    inner = final_answer_text(text)
    if not inner:
        return None
    kind = task.answer_type
    if kind == "choice":
        choices = task.choices or []
        return _extract_choice(inner, len(choices)) or _choice_by_text(inner, choices)
    if kind in ("integer", "number"):
        numbers = _numbers(_plain_math(inner))
        if not numbers:
            return None
        value = numbers[-1]
        if kind == "integer":
            return _format_number(value) if value == int(value) else repr(value)
        return _format_number(value)
    return _extract_text(inner, task.answer)


def score_answer(text: str | None, task: Task) -> Score:
    """Extract the answer from ``text`` and compare it with ``task.answer``."""
    extracted = extract_answer(text, task)
    if extracted is None:
        return Score(False, None)
    kind = task.answer_type
    if kind == "choice":
        return Score(extracted == task.answer, extracted)
    if kind == "integer":
        return Score(float(extracted) == float(task.answer), extracted)
    if kind == "number":
        tolerance = task.tolerance if task.tolerance is not None else default_tolerance(task.answer)
        return Score(abs(float(extracted) - float(task.answer)) <= tolerance, extracted)
    return Score(extracted == _normalize(task.answer), extracted)
