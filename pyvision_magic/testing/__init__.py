"""A scripted OpenAI-compatible chat-completions server, for tests, benchmarks and classes.

Standard library only, and no test framework: notebooks, benchmarks and
``python -m pyvision_magic.testing`` (an offline class served from recorded
sessions, see ``docs/offline_class.md``) use it as the tests do.

`ChatServer` speaks enough of the OpenAI HTTP protocol for the real ``openai``
client (sync and async, streamed and not) to talk to it: ``POST
/v1/chat/completions``, ``GET /v1/models`` and ``GET /v1/models/{id}``.  Each
chat request consumes the next step of a *script*; every request is recorded
(unless ``keep_requests=False``).  It binds 127.0.0.1 on a free port unless
``host``/``port`` say otherwise.

Script steps
------------
``str``
    An assistant reply with that text.
`Reply`
    A reply with explicit usage, finish reason and delays; or a refusal
    (``refusal=``) or function calls (``tool_calls=`` of `ToolCall`) in the
    shapes OpenAI sends them, streamed and not.
`HTTPError`
    An error response in OpenAI's ``{"error": {...}}`` shape.  Retryable
    statuses (408, 409, 429, 5xx) get ``retry-after-ms: 10`` unless the step
    sets its own retry headers, so the client's built-in retries stay fast.
`CutStream`
    Streamed: some SSE chunks, then the connection closes mid-body (no
    ``[DONE]``, no final chunk).  Not streamed: the connection closes before
    any response.
`Drip`
    A 200 response that never ends: one byte every ``interval`` seconds, so
    the connection stays alive and no read timeout fires.
`Endless`
    A reply whose text never ends (streamed: content deltas forever; not
    streamed: a JSON body whose ``content`` string never closes).
callable
    ``step(request_json) -> step``, evaluated per request, for dynamic replies.

When the script runs out the server answers 500 ``script_exhausted`` with
``x-should-retry: false`` (the client fails at once instead of retrying),
unless ``default`` gives a step to use instead.  Requests rejected by the
``api_key``, ``models``, ``reject_stop`` or ``reject_params`` checks do not
consume a step.  `Drip` and `Endless` run until the client hangs up or the
server stops.

What the openai client (3.x, on ``httpx2``) raises
--------------------------------------------------
- 400 → `openai.BadRequestError`; 401 → `openai.AuthenticationError`;
  403 → `openai.PermissionDeniedError`; 404 → `openai.NotFoundError`;
  429 → `openai.RateLimitError`; 5xx → `openai.InternalServerError`.
  All are `openai.APIStatusError`; ``exc.code``/``exc.type``/``exc.param``
  come from the error JSON, ``exc.status_code`` from the status.  429 and 5xx
  are retried ``max_retries`` times first (each retry consumes a step).
- A cut stream raises `openai.APIConnectionError` ("Connection error.") from
  the ``for chunk in stream`` loop, after the chunks sent before the cut were
  yielded; ``exc.__cause__`` is ``httpx2.RemoteProtocolError`` ("peer closed
  connection without sending complete message body: incomplete chunked
  read").  The client does not retry a stream that already started.
- A cut non-streamed request is a connection error, which the client retries:
  each retry consumes another step, and if all fail it raises
  `openai.APIConnectionError` (cause ``httpx2.RemoteProtocolError``, "Server
  disconnected without sending a response.").

Replaying recorded sessions
---------------------------
`replay_script` turns a saved `pyvision_magic.Transcript` (or ``"demo"``,
``"gallery:NAME"``, a path) into the script of its recorded model replies.
`Replay` is a callable step serving recorded sessions to many conversations at
once, statelessly: a request holding N assistant messages gets recorded reply N.

Example
-------
::

    from openai import OpenAI
    from pyvision_magic.testing import ChatServer, Reply, code_reply

    with ChatServer([code_reply("print(1)"), Reply("<answer>1</answer>", delay=0.1)]) as server:
        client = OpenAI(base_url=server.base_url, api_key="any")
        ...
        assert server.last_messages()[-1]["role"] == "user"

The pytest fixtures ``chat_server`` and ``make_chat_server`` live in
``tests/chat_server.py``.
"""

from __future__ import annotations

from ._handler import DEFAULT_MODEL
from ._replay import Replay, replay_script
from ._server import ChatServer
from ._steps import (
    CutStream,
    Drip,
    Endless,
    HTTPError,
    RecordedRequest,
    Reply,
    Step,
    ToolCall,
    code_reply,
)

__all__ = [
    "DEFAULT_MODEL",
    "ChatServer",
    "CutStream",
    "Drip",
    "Endless",
    "HTTPError",
    "RecordedRequest",
    "Replay",
    "Reply",
    "Step",
    "ToolCall",
    "code_reply",
    "replay_script",
]
