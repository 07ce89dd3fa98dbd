"""A model that plays back the model turns of a saved transcript (no network)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from ._errors import ModelError
from ._hooks import run_hook
from ._model import DeltaCallback, Model, ModelReply
from ._transcript import Transcript

__all__ = ["ReplayModel", "recorded_model"]

_REPLAY_PREFIX = "replay of "


def recorded_model(transcript: Transcript) -> str:
    """Who wrote the model turns of ``transcript``: its model, less any "replay of ".

    A saved replay records the model as ``replay of <model>``; replaying it again
    still replays that model's turns, so the label must not nest.
    """
    label = transcript.model
    while label.startswith(_REPLAY_PREFIX):
        label = label[len(_REPLAY_PREFIX):]
    return label


class ReplayModel(Model):
    """Answers each request with the next recorded model turn.

    The tools are still run for real by the session's executor, so a replay shows
    what the recorded code does on this machine. The recorded replies are
    streamed in small pieces, with ``delay`` seconds between pieces, so views
    behave as they do with a live model.
    """

    def __init__(self, transcript: Transcript, *, delay: float = 0.0, position: int = 0) -> None:
        self.transcript = transcript
        self.delay = delay
        #: Index of the recorded turn the next request gets.
        self.position = position

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"replay of {recorded_model(self.transcript) or 'a saved session'}"

    async def complete(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        stop: Sequence[str] | None = None,
        on_delta: DeltaCallback | None = None,
        cache_key: str | None = None,  # nothing to cache in a replay
    ) -> ModelReply:
        turns = self.transcript.turns
        if self.position >= len(turns):
            raise ModelError(
                f"The saved session has only {len(turns)} model turns and the replay asked "
                "for more; run it with a live model to continue."
            )
        turn = turns[self.position]
        self.position += 1
        if on_delta is not None:
            for piece in re.findall(r"\S*\s*", turn.text):
                if piece:
                    await run_hook(on_delta, piece)
                    if self.delay:
                        await asyncio.sleep(self.delay)
        return ModelReply(turn.text, turn.usage, "stop")
