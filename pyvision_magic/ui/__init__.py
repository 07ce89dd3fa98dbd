"""Widgets of the ``%%pyvision`` magic: a header, one card per turn, the answer.

They only show what a session's events say and report clicks to callbacks;
they never run anything themselves, so they can be built and clicked in tests
without a kernel (``button.click()``).
"""

from ._answer import AnswerBox
from ._header import SessionHeader
from ._turn import TurnCard
from ._view import SessionView

__all__ = ["AnswerBox", "SessionHeader", "SessionView", "TurnCard"]
