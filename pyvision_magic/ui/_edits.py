"""Which turns the user edited, and what each edit makes stale (pure bookkeeping).

A turn's code can change three ways after the model wrote it: typed in the
editor and not run yet (a *draft*), rerun with other code (an *edit*), or rerun
as it was. An edited turn keeps what the model's own code gave (its *original*),
and every later turn, and the answer, were produced from that original: they are
*stale* until the model is asked again (a fork).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

__all__ = ["EditLog"]


class EditLog:
    """Drafts, reruns and originals of a session's turns, by turn index.

    ``code_of(index)`` gives the code a turn has now (the transcript's).
    """

    def __init__(self, code_of: Callable[[int], str | None]) -> None:
        self._code_of = code_of
        self._drafts: dict[int, str] = {}
        self._shown: dict[int, dict[str, Any]] = {}
        self._original: dict[int, dict[str, Any]] = {}

    def draft(self, index: int, code: str) -> None:
        """The editor of turn ``index`` holds ``code`` (a draft unless it is the saved code)."""
        if code == (self._code_of(index) or ""):
            self._drafts.pop(index, None)
        else:
            self._drafts[index] = code

    def outputs_shown(self, index: int, code: str | None, exec_status: str | None,
                      outputs: list[dict[str, Any]], rerun: bool) -> bool:
        """Record what turn ``index`` shows now; True if the turn has an original.

        ``rerun`` is True when the session was not running (the user's Run): the
        first time, what the turn showed before becomes its original. A turn with
        an original can make later turns stale, or fresh again.
        """
        before = self._shown.get(index)
        if rerun and before is not None and index not in self._original:
            self._original[index] = before
        self._shown[index] = {"code": code, "outputs": outputs, "exec_status": exec_status}
        if index in self._drafts and self._drafts[index] == code:
            del self._drafts[index]  # the draft was run
        return index in self._original

    def first_edited(self) -> int | None:
        """The earliest turn rerun with code other than the model's, or None."""
        edited = [i for i, original in self._original.items()
                  if self._code_of(i) != original.get("code")]
        return min(edited) if edited else None

    def fields(self, index: int) -> dict[str, Any]:
        """The edit fields of turn ``index``'s dict: edited, draft, original, stale."""
        original = self._original.get(index)
        edited = original is not None and original.get("code") != self._code_of(index)
        first = self.first_edited()
        return {
            "edited": edited,
            "draft": self._drafts.get(index),
            "original": copy.copy(original) if edited else None,
            "stale": first + 1 if first is not None and index > first else None,
        }
