"""The task file: one JSON object per line (JSONL), images beside it.

Each line is a task::

    {"id": "lines-0003", "question": "How many times do the lines cross?",
     "images": ["images/lines-0003.png"], "answer": "2", "answer_type": "integer",
     "benchmark": "blind", "subtask": "line_intersections"}

Fields
------
``id`` (required)
    Unique within the file; results are keyed by it.
``question`` (required)
    The question as the model reads it. Options and a format hint are added by
    :func:`prompt_text`, so converters keep the question as the benchmark has it.
``images`` (required)
    Paths relative to the task file (absolute paths are kept as they are).
``answer`` (required)
    The ground truth: the option's letter for multiple choice, else the value.
``choices`` (optional)
    Option texts, lettered A, B, C... in order.
``answer_type`` (optional)
    ``choice``, ``integer``, ``number`` or ``text``. When absent: ``choice`` if
    there are choices, ``integer`` or ``number`` if the answer parses as one,
    else ``text``.
``tolerance`` (optional, ``number`` only)
    Largest accepted absolute error. Default: half a unit of the answer's last
    written digit (``"3.25"`` accepts 3.245 to 3.255).
``benchmark``, ``subtask`` (optional)
    Report grouping. ``benchmark`` defaults to the file's name without suffix.
``meta`` (optional)
    Anything else (generator parameters, source ids); kept, not used.
"""

from __future__ import annotations

import json
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ConfigError

__all__ = ["Task", "ANSWER_TYPES", "load_tasks", "write_tasks", "task_from_dict", "prompt_text"]

ANSWER_TYPES = ("choice", "integer", "number", "text")
LETTERS = string.ascii_uppercase
_KNOWN = {"id", "question", "images", "answer", "choices", "answer_type", "tolerance",
          "benchmark", "subtask", "meta"}
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")

_HINTS = {
    "choice": "Answer with the letter of the correct option.",
    "integer": "Answer with a whole number.",
    "number": "Answer with a number.",
    "text": "",
}


@dataclass
class Task:
    """One question with its images and ground truth (see the module docstring)."""

    id: str
    question: str
    images: list[Path]
    answer: str
    answer_type: str = "text"
    choices: list[str] | None = None
    tolerance: float | None = None
    benchmark: str = ""
    subtask: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The JSONL form; image paths relative to ``relative_to`` when given."""
        images = []
        for path in self.images:
            if relative_to is not None:
                try:
                    path = Path(os.path.relpath(path, relative_to))
                except ValueError:  # another drive on Windows
                    pass
            images.append(path.as_posix())
        data: dict[str, Any] = {"id": self.id, "question": self.question, "images": images,
                                "answer": self.answer, "answer_type": self.answer_type}
        if self.choices is not None:
            data["choices"] = list(self.choices)
        if self.tolerance is not None:
            data["tolerance"] = self.tolerance
        for key in ("benchmark", "subtask"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.meta:
            data["meta"] = self.meta
        return data


def _infer_type(answer: str, choices: list[str] | None) -> str:
    if choices:
        return "choice"
    if _INT.match(answer.strip()):
        return "integer"
    if _FLOAT.match(answer.strip()):
        return "number"
    return "text"


def task_from_dict(data: Any, base: Path, *, where: str = "the task", benchmark: str = "") -> Task:
    """Validate one task object; raise :class:`ConfigError` saying what to fix."""

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{where}: {problem}.")

    if not isinstance(data, dict):
        raise bad("expected a JSON object with id, question, images and answer")
    missing = [k for k in ("id", "question", "images", "answer") if k not in data]
    if missing:
        raise bad(f"missing field {', '.join(repr(k) for k in missing)}")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise bad(f"unknown field {unknown[0]!r} (put extra data under 'meta')")
    task_id = data["id"]
    if not isinstance(task_id, (str, int)) or not str(task_id).strip():
        raise bad("'id' must be a non-empty string")
    question = data["question"]
    if not isinstance(question, str) or not question.strip():
        raise bad("'question' must be a non-empty string")
    images = data["images"]
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise bad("'images' must be a list of image paths relative to the task file")
    paths = [(base / p).resolve() if not os.path.isabs(p) else Path(p) for p in images]
    for original, path in zip(images, paths):
        if not path.is_file():
            raise bad(f"image {original!r} not found at {path}")
    answer = data["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise bad("'answer' must be a string or a number")
    answer = str(answer).strip()
    if not answer:
        raise bad("'answer' is empty")
    choices = data.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS) or not all(
            isinstance(c, (str, int, float)) for c in choices
        ):
            raise bad("'choices' must be a list of 2 to 26 option texts")
        choices = [str(c) for c in choices]
    answer_type = data.get("answer_type") or _infer_type(answer, choices)
    if answer_type not in ANSWER_TYPES:
        raise bad(f"'answer_type' must be one of {', '.join(ANSWER_TYPES)}, not {answer_type!r}")
    if answer_type == "choice":
        if not choices:
            raise bad("a 'choice' task needs 'choices'")
        if answer not in LETTERS[: len(choices)]:
            if answer in choices:  # the option's text: store its letter
                answer = LETTERS[choices.index(answer)]
            else:
                raise bad(f"answer {answer!r} is neither a letter A-{LETTERS[len(choices) - 1]} "
                          "nor one of the choices")
    elif answer_type == "integer" and not _INT.match(answer):
        raise bad(f"answer {answer!r} is not a whole number (use answer_type 'number' or 'text')")
    elif answer_type == "number" and not _FLOAT.match(answer):
        raise bad(f"answer {answer!r} is not a number")
    tolerance = data.get("tolerance")
    if tolerance is not None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
            raise bad("'tolerance' must be a number of at least 0")
        tolerance = float(tolerance)
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise bad("'meta' must be a JSON object")
    return Task(
        id=str(task_id),
        question=question,
        images=paths,
        answer=answer,
        answer_type=answer_type,
        choices=choices,
        tolerance=tolerance,
        benchmark=str(data.get("benchmark") or benchmark),
        subtask=str(data.get("subtask") or ""),
        meta=meta,
    )


def load_tasks(path: str | os.PathLike[str]) -> list[Task]:
    """Read and validate a task file.

    Raises
    ------
    ConfigError
        If the file cannot be read, or a line is not a valid task (the message
        names the line and what to fix).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"Task file not found: {path}. Check the path.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the task file {path}: {exc}.") from exc
    base = path.resolve().parent
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg}).") from exc
        task = task_from_dict(data, base, where=where, benchmark=path.stem)
        if task.id in seen:
            raise ConfigError(f"{where}: id {task.id!r} is already used on line {seen[task.id]}; "
                              "ids must be unique.")
        seen[task.id] = number
        tasks.append(task)
    if not tasks:
        raise ConfigError(f"The task file {path} has no tasks.")
    return tasks


def write_tasks(tasks: list[Task], path: str | os.PathLike[str]) -> Path:
    """Write tasks as JSONL, image paths relative to the file's folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    with open(path, "w", encoding="utf-8") as f:
        for task in tasks:
            f.write(json.dumps(task.to_dict(base), ensure_ascii=False) + "\n")
    return path


def prompt_text(task: Task) -> str:
    """The question as sent to the model: the question, its options, a format hint."""
    parts = [task.question.strip()]
    if task.choices:
        parts.append("Options:\n" + "\n".join(
            f"({LETTERS[i]}) {choice}" for i, choice in enumerate(task.choices)))
    hint = _HINTS[task.answer_type]
    if hint and hint.lower() not in task.question.lower():
        parts.append(hint)
    return "\n\n".join(parts)
