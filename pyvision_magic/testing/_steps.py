"""Script steps (what the server answers) and recorded requests (what it saw).

Pure data: the HTTP handler in ``_handler.py`` turns each step into a response.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "CutStream",
    "Drip",
    "Endless",
    "HTTPError",
    "RecordedRequest",
    "Reply",
    "Step",
    "ToolCall",
    "code_reply",
]

FENCE = "```"


def code_reply(code: str, before: str = "Let me look.") -> str:
    """A model reply that runs ``code``, in the format pyvision's prompt asks for.

    Parameters
    ----------
    code
        The Python tool, without a fence.
    before
        The text the model writes before the tool.

    Returns
    -------
    str
        ``before``, then ``<code>`` and a ```` ```python ```` fence around ``code``,
        then ``</code>``.
    """
    return f"{before}\n<code>\n{FENCE}python\n{code}\n{FENCE}\n</code>"


@dataclass(frozen=True)
class ToolCall:
    """A function call in a reply: ``arguments`` is the JSON text, streamed in pieces."""

    name: str
    arguments: str = "{}"


@dataclass(frozen=True)
class Reply:
    """An assistant reply.

    ``None`` usage numbers are computed deterministically: prompt tokens are
    the request body length // 4, completion tokens the words in the content.
    ``reasoning_tokens`` is reported in ``completion_tokens_details``; the
    cached tokens in ``prompt_tokens_details`` are computed by the server (see
    `ChatServer`).
    ``delay`` (seconds) passes before the response starts; ``chunk_delay``
    between streamed chunks.  Neither blocks other requests.
    ``hold``, a `threading.Event`, stops a streamed reply half way through its
    content until the event is set (or the server stops): a test sees the reply
    while it is written, however slow its machine, then lets it end.

    ``refusal`` sends OpenAI's refusal message (``message.refusal``, streamed
    as ``delta.refusal`` pieces) and ``tool_calls`` function calls
    (``message.tool_calls``, streamed as ``delta.tool_calls``); with either,
    an empty ``text`` is sent as ``content: null``, as OpenAI does.
    ``finish_reason`` defaults to ``"tool_calls"`` with tool calls, else ``"stop"``.
    """

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int = 0
    finish_reason: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    refusal: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    hold: threading.Event | None = field(default=None, compare=False)

    @property
    def finish(self) -> str:
        """The finish reason sent."""
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")

    @property
    def content(self) -> str | None:
        """The ``content`` sent: ``None`` in place of "" beside a refusal or tool calls."""
        return None if not self.text and (self.refusal is not None or self.tool_calls) else self.text


@dataclass(frozen=True)
class HTTPError:
    """An error response: ``{"error": {"message", "type", "param", "code"}}``.

    ``type`` defaults to what OpenAI uses for the status.
    """

    status: int
    message: str = "Error from the scripted chat server."
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    type: str | None = None
    param: str | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class CutStream:
    """Close the connection abruptly.

    Streamed: send the role chunk and the content chunks of ``text_before``
    (only the first ``after_chunks`` of them if given), then close without
    the final chunk or ``[DONE]``.  Not streamed: close without a response.
    """

    text_before: str = ""
    after_chunks: int | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Drip:
    """A response that keeps the connection alive and never finishes.

    The status line and headers go out at once; then one byte every
    ``interval`` seconds: streamed, after the role chunk, a newline (a blank
    SSE line, which clients skip); not streamed, a space (JSON allows leading
    whitespace) in a chunked body.  Each byte resets the client's read timeout.
    """

    interval: float = 0.2
    delay: float = 0.0


@dataclass(frozen=True)
class Endless:
    """A reply that never ends: ``prefix``, then ``text`` again and again.

    Streamed: one content delta of ``text`` per chunk, ``chunk_delay`` seconds
    apart, and never a finish reason.  Not streamed: a chunked JSON body whose
    message ``content`` string never closes.  Stop sequences are ignored, as
    by a server that does not honour them.
    """

    text: str = "and so on "
    prefix: str = ""
    chunk_delay: float = 0.0
    delay: float = 0.0


Step = Union[str, Reply, HTTPError, CutStream, Drip, Endless, Callable[[dict], Any]]


@dataclass
class RecordedRequest:
    """One request as the server saw it.  Times are `time.monotonic()`."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None when there was no JSON body
    received_at: float
    raw: bytes = field(default=b"", repr=False)  # the body as sent, for exact size checks
    finished_at: float | None = None
    status: int | None = None  # None: connection cut without a response
    step_index: int | None = None  # index of the script step consumed, if any

    @property
    def messages(self) -> list[dict]:
        """The ``messages`` of a chat request (empty for other requests)."""
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []
