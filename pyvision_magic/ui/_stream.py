"""A reply while it streams, turned into few, small ``delta`` messages for the browser.

The model sends a few characters at a time; redrawing on each would mean hundreds
of messages per reply. A :class:`ReplyStream` gathers them and says when a delta
is due: at most every ``INTERVAL`` seconds, and only once ``CHARS`` new
characters have come (or ``IDLE`` seconds have passed). A delta carries what was
added to the prose and to the code since the last one, or both in full when the
split changed (``reset``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ._state import split_stream

__all__ = ["ReplyStream", "INTERVAL", "CHARS", "IDLE"]

#: Seconds between two deltas of a reply, at least.
INTERVAL = 0.1
#: A delta waits for this many new characters, or for ``IDLE`` seconds.
CHARS, IDLE = 128, 1.0


class ReplyStream:
    """The reply of turn ``index`` as it arrives, and what the browser has been sent."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pieces: list[str] = []
        self.chars = 0
        self.pending = 0
        self.sent_prose, self.sent_code = "", ""
        self.last = 0.0
        #: The timer that sends what is pending if nothing else comes (set by the owner).
        self.timer: asyncio.TimerHandle | None = None

    def add(self, delta: str) -> float:
        """Take a piece; seconds until a delta is due (0: now)."""
        self.pieces.append(delta)
        self.chars += len(delta)
        self.pending += len(delta)
        since = time.monotonic() - self.last
        if since >= INTERVAL and (self.pending >= CHARS or since >= IDLE):
            return 0.0
        return max(INTERVAL - since, IDLE - since, 0.0)

    @property
    def tokens(self) -> int:
        """A rough count of the reply's tokens so far (four characters each)."""
        return max(1, round(self.chars / 4)) if self.chars else 0

    def delta(self) -> dict[str, Any] | None:
        """The ``delta`` message for what came since the last one; None if nothing did."""
        self.cancel_timer()
        if not self.pending:
            return None
        raw = "".join(self.pieces)
        self.pieces = [raw]  # joined once per delta, not once per piece
        words, code = split_stream(raw)
        code = code or ""
        message: dict[str, Any] = {"type": "delta", "turn": self.index, "tokens": self.tokens}
        if words.startswith(self.sent_prose) and code.startswith(self.sent_code):
            message.update(prose=words[len(self.sent_prose):],
                           code=code[len(self.sent_code):], reset=False)
        else:
            message.update(prose=words, code=code, reset=True)
        self.sent_prose, self.sent_code = words, code
        self.pending = 0
        self.last = time.monotonic()
        return message

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
