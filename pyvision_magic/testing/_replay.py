"""Serving recorded sessions: a saved transcript's model replies as a script.

`replay_script` gives one conversation's script.  `Replay` serves recorded
sessions to many conversations at once (a class of students asking the same
question): it keeps no state between requests, and finds the reply a request
needs from the request alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Union

from ._steps import HTTPError, Reply, Step

if TYPE_CHECKING:
    from .._transcript import Transcript

__all__ = ["Replay", "ReplayedSession", "replay_script"]

#: What `replay_script` and `Replay` take: a transcript, or what `Transcript.load` takes.
SessionSource = Union["Transcript", str, "os.PathLike[str]"]


def _load(source: SessionSource) -> Transcript:
    from .._transcript import Transcript

    return source if isinstance(source, Transcript) else Transcript.load(source)


def replay_script(transcript: SessionSource) -> list[Reply]:
    """The model replies of a recorded session, in order, as a `ChatServer` script.

    Parameters
    ----------
    transcript
        A `pyvision_magic.Transcript`, or what `Transcript.load` takes: a saved
        transcript's path, ``"demo"`` or ``"gallery:NAME"``.

    Returns
    -------
    list of Reply
        One `Reply` per recorded turn, with the turn's text as the model sent it
        and the usage the endpoint reported.  A session recorded without usage
        (all zero, as the shipped ones) gets the server's computed usage instead,
        since no real endpoint reports zero tokens.

    Raises
    ------
    pyvision_magic.ConfigError
        When the transcript cannot be loaded (the message says why).
    """
    replies = []
    for turn in _load(transcript).turns:
        usage = turn.usage
        recorded = bool(usage.prompt_tokens or usage.completion_tokens)
        replies.append(Reply(
            turn.text,
            prompt_tokens=usage.prompt_tokens if recorded else None,
            completion_tokens=usage.completion_tokens if recorded else None,
        ))
    return replies


@dataclass(frozen=True)
class ReplayedSession:
    """One recorded session `Replay` serves: its ``name``, ``question`` and ``replies``."""

    name: str
    question: str
    replies: tuple[Step, ...]


def _words(text: str) -> str:
    return " ".join(text.casefold().split())


def _text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content
                        if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


class Replay:
    """A script step serving recorded sessions to any number of conversations at once.

    Use it as a `ChatServer`'s ``default`` (or a script step).  It keeps no
    state: a chat request whose ``messages`` already hold N assistant messages
    gets recorded reply N (counting from 0), so every new conversation starts
    at the first reply, many conversations can run at once in any order, and a
    conversation continued from an edited turn gets the reply recorded for
    that turn.  The replies are the recorded ones whatever the question.

    With several sessions, a request gets the one whose recorded question
    appears in its first user message (the longest such question wins), else
    the first session.

    Parameters
    ----------
    *sessions
        Each a `pyvision_magic.Transcript`, what `Transcript.load` takes (a
        path, ``"demo"``, ``"gallery:NAME"``), or a list of script steps.
    chunk_delay
        Seconds between streamed pieces of each reply, so students see the
        reply arrive as from a live model.

    Raises
    ------
    pyvision_magic.ConfigError
        When a transcript cannot be loaded (the message says why).
    ValueError
        When no session is given.
    """

    def __init__(self, *sessions: SessionSource | Sequence[Step], chunk_delay: float = 0.0) -> None:
        if not sessions:
            raise ValueError("Replay needs at least one recorded session.")
        self.sessions: list[ReplayedSession] = []
        for i, source in enumerate(sessions):
            if isinstance(source, (list, tuple)):
                name, question, replies = f"script {i + 1}", "", list(source)
            else:
                transcript = _load(source)
                name = str(source) if isinstance(source, (str, os.PathLike)) else _short(transcript.question)
                question, replies = transcript.question, replay_script(transcript)
            if chunk_delay:
                replies = [Reply(r) if isinstance(r, str) else r for r in replies]
                replies = [replace(r, chunk_delay=chunk_delay) if isinstance(r, Reply) else r for r in replies]
            self.sessions.append(ReplayedSession(name, question, tuple(replies)))

    def locate(self, request: dict) -> tuple[ReplayedSession, int]:
        """The session a chat request belongs to and the index of the reply it needs."""
        messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        session = self.sessions[0]
        if len(self.sessions) > 1:
            first_user = next((_words(_text_of(m)) for m in messages if m.get("role") == "user"), "")
            matches = [s for s in self.sessions if s.question and _words(s.question) in first_user]
            if matches:
                session = max(matches, key=lambda s: len(s.question))
        return session, turn

    def step_for(self, session: ReplayedSession, turn: int) -> Step:
        """Recorded reply ``turn`` of ``session``; an HTTP 400 past its last reply."""
        if turn < len(session.replies):
            return session.replies[turn]
        return HTTPError(
            400,
            f"The recorded session {session.name!r} has {len(session.replies)} model replies and this "
            f"conversation has had them all; start a new conversation to replay it again.",
            code="replay_exhausted",
        )

    def __call__(self, request: dict) -> Step:
        return self.step_for(*self.locate(request))

    def __repr__(self) -> str:
        inner = ", ".join(f"{s.name!r} ({len(s.replies)} replies)" for s in self.sessions)
        return f"Replay({inner})"


def _short(text: str, limit: int = 40) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
