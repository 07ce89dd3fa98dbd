"""How the session reports an executor's faults and drops the report of the user's Stop."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from ._errors import KernelError, PyVisionError

__all__ = ["executor_faults", "one_line", "without_interrupt"]


@contextlib.contextmanager
def executor_faults() -> Iterator[None]:
    """Re-raise an unexpected exception of the executor as :class:`KernelError`.

    An executor should only raise :class:`PyVisionError`; anything else (a full
    disk at a restart, a bug) is still the executor's fault, not the session's.
    """
    try:
        yield
    except PyVisionError:
        raise
    except Exception as exc:
        raise KernelError(
            f"The child kernel failed ({one_line(exc, named=True)}); the turns so far are kept."
        ) from exc


def one_line(what: BaseException | str, *, named: bool = False, limit: int = 500) -> str:
    """An exception (or a text) as one line of at most ``limit`` characters.

    ``named`` puts the exception's type first (``ValueError: ...``).
    """
    text = " ".join(str(what).split())
    if named and isinstance(what, BaseException):
        text = f"{type(what).__name__}: {text}" if text else type(what).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# A "KeyboardInterrupt" line (or ": message") ending the text, with its traceback if any.
_INTERRUPT_REPORT = re.compile(
    r"(?:Traceback \(most recent call last\):\n(?:.*\n)*?)?^KeyboardInterrupt(?::.*)?\s*\Z",
    re.MULTILINE)


def without_interrupt(outputs: list[Any]) -> list[Any]:
    """``outputs`` without what reports a KeyboardInterrupt (the user's Stop)."""
    kept = []
    for out in outputs:
        if out.kind == "error" and out.ename == "KeyboardInterrupt":
            continue
        if out.kind == "text" and out.stream == "stderr" and "KeyboardInterrupt" in out.text:
            text = _INTERRUPT_REPORT.sub("", out.text)
            if not text.strip():
                continue
            out = dataclasses.replace(out, text=text)
        kept.append(out)
    return kept
