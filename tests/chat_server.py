"""A scripted chat-completions server on 127.0.0.1 for tests.

`ChatServer` speaks enough of the OpenAI HTTP protocol for the real ``openai``
client (sync and async, streamed and not) to talk to it: ``POST
/v1/chat/completions``, ``GET /v1/models`` and ``GET /v1/models/{id}``.  Each
chat request consumes the next step of a *script*; every request is recorded.

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

Fixtures
--------
``chat_server`` yields a started server with an empty script;
``make_chat_server(script=None, **options)`` makes started servers with
options (``models``, ``api_key``, ``reject_stop``, ``reject_params``,
``default``, ``chunk_chars``).  Both stop their servers after the test and fail it if a
server recorded an unexpected exception in ``errors``.  Import them into
``tests/conftest.py`` with ``from chat_server import chat_server,
make_chat_server`` (pytest puts ``tests/`` on ``sys.path`` while it has no
``__init__.py``)::

    def test_x(chat_server):
        chat_server.script = ["first reply", Reply("second", delay=0.1)]
        with OpenAI(base_url=chat_server.base_url, api_key="k") as client:
            ...
        assert chat_server.last_messages()[-1]["role"] == "user"
"""

from __future__ import annotations

import enum
import json
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Collection, Iterator, Union

import pytest

__all__ = [
    "ChatServer",
    "CutStream",
    "Drip",
    "Endless",
    "HTTPError",
    "RecordedRequest",
    "Reply",
    "Step",
    "ToolCall",
    "chat_server",
    "make_chat_server",
]

#: The model name listed by ``GET /v1/models`` when ``models`` is not set.
DEFAULT_MODEL = "test-model"


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
    ``delay`` (seconds) passes before the response starts; ``chunk_delay``
    between streamed chunks.  Neither blocks other requests.

    ``refusal`` sends OpenAI's refusal message (``message.refusal``, streamed
    as ``delta.refusal`` pieces) and ``tool_calls`` function calls
    (``message.tool_calls``, streamed as ``delta.tool_calls``); with either,
    an empty ``text`` is sent as ``content: null``, as OpenAI does.
    ``finish_reason`` defaults to ``"tool_calls"`` with tool calls, else ``"stop"``.
    """

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    refusal: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()

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


_DEFAULT_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
}
_RETRY_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")


def _error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _truncate_at_stop(text: str, stop: Any) -> tuple[str, bool]:
    """Cut ``text`` before the first occurrence of any stop string."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class ChatServer:
    """A scripted OpenAI-compatible chat server in a background thread.

    Parameters
    ----------
    script
        Initial steps; replace later with ``server.script = [...]``.
    models
        Accepted model names; others get 404 ``model_not_found``.  ``None``
        accepts any model and lists ``[DEFAULT_MODEL]``.
    api_key
        If set, requests must carry ``Authorization: Bearer <api_key>`` or get
        401 ``invalid_api_key``.
    reject_stop
        Answer 400 ``unsupported_parameter`` to any request with ``stop``,
        like some reasoning models.
    reject_params
        Request fields (e.g. ``{"max_tokens"}``) answered the same way, with
        OpenAI's message and ``param`` naming the field, when present and not
        null.
    default
        Step used for every request after the script runs out; ``None``
        answers 500 ``script_exhausted``.
    chunk_chars
        Characters per streamed content delta.

    The options are plain attributes and may be changed while running.
    """

    def __init__(
        self,
        script: list[Step] | None = None,
        *,
        models: list[str] | None = None,
        api_key: str | None = None,
        reject_stop: bool = False,
        reject_params: Collection[str] = (),
        default: Step | None = None,
        chunk_chars: int = 8,
    ) -> None:
        self.models = models
        self.api_key = api_key
        self.reject_stop = reject_stop
        self.reject_params = set(reject_params)
        self.default = default
        self.chunk_chars = chunk_chars
        #: Unexpected exceptions raised while serving (server bugs); clients
        #: hanging up are not errors.  The fixtures fail a test that leaves any.
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._script: list[Step] = list(script or [])
        self._position = 0
        self._requests: list[RecordedRequest] = []
        self._completion_count = 0
        self._state = _State.NEW
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> ChatServer:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"ChatServer is {self._state.value}; create a new one.")
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="chat-server", daemon=True
        )
        self._thread.start()
        self._state = _State.RUNNING
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and join every thread."""
        if self._state is not _State.RUNNING:
            self._state = _State.STOPPED
            return
        assert self._httpd is not None and self._thread is not None
        self._stopping.set()  # wakes handlers sleeping in a step delay
        self._httpd.shutdown()
        # Keep-alive connections would keep their handler threads reading forever;
        # shutting the sockets down makes those reads return so server_close can join.
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        self._httpd.server_close()
        self._thread.join()
        self._state = _State.STOPPED

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._httpd is None:
            raise RuntimeError("ChatServer is not started.")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, ready for ``OpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- script ------------------------------------------------------------
    @property
    def script(self) -> list[Step]:
        """A copy of the whole script; setting it also rewinds to its start."""
        with self._lock:
            return list(self._script)

    @script.setter
    def script(self, steps: list[Step]) -> None:
        self.set_script(steps)

    def set_script(self, steps: list[Step]) -> None:
        """Replace the script and rewind to its first step."""
        with self._lock:
            self._script = list(steps)
            self._position = 0

    def add_steps(self, *steps: Step) -> None:
        """Append steps to the script without rewinding."""
        with self._lock:
            self._script.extend(steps)

    @property
    def steps_consumed(self) -> int:
        """How many script steps requests have consumed."""
        with self._lock:
            return self._position

    @property
    def remaining_steps(self) -> int:
        """How many script steps are still unused."""
        with self._lock:
            return len(self._script) - self._position

    def _next_step(self) -> tuple[Step | None, int | None]:
        with self._lock:
            if self._position < len(self._script):
                self._position += 1
                return self._script[self._position - 1], self._position - 1
            return self.default, None

    # -- recording ---------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every recorded request, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded ``POST /v1/chat/completions`` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/chat/completions")]

    def last_request(self) -> RecordedRequest:
        """The most recent chat request; AssertionError if there is none."""
        chats = self.chat_requests
        assert chats, "the chat server has received no chat requests"
        return chats[-1]

    def last_messages(self) -> list[dict]:
        """The ``messages`` of the most recent chat request."""
        return self.last_request().messages

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _new_completion_id(self) -> str:
        # Counter-based ids keep transcripts deterministic across runs.
        with self._lock:
            self._completion_count += 1
            return f"chatcmpl-{self._completion_count:06d}"


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks live connections for a clean stop."""

    request_queue_size = 128  # 16 sessions connecting at once must not overflow the backlog

    def __init__(self, chat: ChatServer) -> None:
        self.chat = chat
        super().__init__(("127.0.0.1", 0), _ChatRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, a DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        # Registered here, in the serving thread, so stop() cannot miss a connection.
        with self.chat._lock:
            self.chat._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.chat._lock:
            self.chat._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (closing a stream early, a cut it provoked) is routine;
        # anything else is a server bug, recorded instead of printed so tests can see it.
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, ConnectionError):
            self.chat.errors.append(exc)


class _ChatRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as the client expects
    disable_nagle_algorithm = True  # small SSE writes must not wait on delayed ACKs
    timeout = 60  # an idle keep-alive connection eventually frees its thread
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet test output

    @property
    def chat(self) -> ChatServer:
        return self.server.chat

    # -- dispatch ----------------------------------------------------------
    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0].rstrip("/")
        rec = RecordedRequest(
            method=self.command,
            path=path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
            received_at=time.monotonic(),
        )
        self.chat._record(rec)
        try:
            self._route(rec, raw)
        except ConnectionError:
            self.close_connection = True  # the client hung up mid-response
        finally:
            if rec.finished_at is None:  # cut connections and early exits
                rec.finished_at = time.monotonic()

    def _route(self, rec: RecordedRequest, raw: bytes) -> None:
        chat = self.chat
        if not rec.path.startswith("/v1/"):
            return self._send_error(rec, 404, f"Unknown path {rec.path!r}.", "invalid_request_error", "not_found")
        if chat.api_key is not None and rec.headers.get("authorization") != f"Bearer {chat.api_key}":
            return self._send_error(
                rec, 401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        if rec.method == "GET" and rec.path == "/v1/models":
            names = chat.models if chat.models is not None else [DEFAULT_MODEL]
            return self._send_json(rec, 200, {"object": "list", "data": [self._model(n) for n in names]})
        if rec.method == "GET" and rec.path.startswith("/v1/models/"):
            name = rec.path[len("/v1/models/") :]
            if chat.models is None or name in chat.models:
                return self._send_json(rec, 200, self._model(name))
            return self._model_not_found(rec, name)
        if rec.method == "POST" and rec.path == "/v1/chat/completions":
            return self._chat_completion(rec, raw)
        return self._send_error(
            rec, 404, f"Unknown request URL: {rec.method} {rec.path}.", "invalid_request_error", "unknown_url"
        )

    @staticmethod
    def _model(name: str) -> dict:
        return {"id": name, "object": "model", "created": 1700000000, "owned_by": "chat-server"}

    def _model_not_found(self, rec: RecordedRequest, name: Any) -> None:
        self._send_error(
            rec, 404, f"The model `{name}` does not exist or you do not have access to it.",
            "invalid_request_error", "model_not_found",
        )

    # -- chat completions --------------------------------------------------
    def _chat_completion(self, rec: RecordedRequest, raw: bytes) -> None:
        chat, body = self.chat, rec.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or "model" not in body:
            return self._send_error(
                rec, 400, "The request body must be JSON with 'model' and 'messages'.",
                "invalid_request_error", "invalid_request_body",
            )
        if chat.models is not None and body["model"] not in chat.models:
            return self._model_not_found(rec, body["model"])
        if chat.reject_stop and body.get("stop") is not None:
            return self._send_error(
                rec, 400, "Unsupported parameter: 'stop' is not supported with this model.",
                "invalid_request_error", "unsupported_parameter", param="stop",
            )
        for name in sorted(chat.reject_params):
            if body.get(name) is not None:
                better = " Use 'max_completion_tokens' instead." if name == "max_tokens" else ""
                return self._send_error(
                    rec, 400, f"Unsupported parameter: '{name}' is not supported with this model.{better}",
                    "invalid_request_error", "unsupported_parameter", param=name,
                )
        step, rec.step_index = chat._next_step()
        try:
            for _ in range(10):  # a callable may return another callable
                if not callable(step):
                    break
                step = step(body)
        except Exception as exc:  # a broken dynamic step must fail the test loudly, not hang it
            return self._send_error(
                rec, 500, f"Script step raised {exc!r}.", "server_error", "script_step_failed", retry=False
            )
        if step is None:
            return self._send_error(
                rec, 500,
                f"The chat server script ran out: it has {len(chat.script)} steps and all were used.",
                "server_error", "script_exhausted", retry=False,
            )
        if isinstance(step, str):
            step = Reply(step)
        if not isinstance(step, (Reply, HTTPError, CutStream, Drip, Endless)):
            return self._send_error(
                rec, 500, f"Unknown script step {step!r}.", "server_error", "bad_script_step", retry=False
            )
        if step.delay and chat._stopping.wait(step.delay):
            self.close_connection = True
            return None  # the server is stopping; don't keep the test waiting
        if isinstance(step, HTTPError):
            return self._send_step_error(rec, step)
        stream = bool(body.get("stream"))
        if isinstance(step, Drip):
            return self._drip(rec, body, step, stream)
        if isinstance(step, Endless):
            return self._endless(rec, body, step, stream)
        if isinstance(step, CutStream):
            if stream:
                return self._stream(rec, body, step.text_before, "stop", None, cut=True, cut_after=step.after_chunks)
            self.close_connection = True
            return None
        text, stopped = _truncate_at_stop(step.text, body.get("stop"))
        finish_reason = "stop" if stopped else step.finish
        usage = self._usage(raw, text, step)
        content = step.content if text == step.text else text
        if stream:
            return self._stream(
                rec, body, text, finish_reason, usage, chunk_delay=step.chunk_delay,
                refusal=step.refusal, tool_calls=step.tool_calls,
            )
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": step.refusal,
                                   "annotations": []}
        if step.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{i:04d}", "type": "function",
                 "function": {"name": call.name, "arguments": call.arguments}}
                for i, call in enumerate(step.tool_calls)
            ]
        completion = {
            "id": chat._new_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_chatserver",
        }
        return self._send_json(rec, 200, completion)

    @staticmethod
    def _usage(raw: bytes, text: str, step: Reply) -> dict:
        prompt = step.prompt_tokens if step.prompt_tokens is not None else len(raw) // 4
        words = len(text.split()) + len((step.refusal or "").split())
        completion = step.completion_tokens if step.completion_tokens is not None else words
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _pieces(self, text: str) -> Iterator[str]:
        size = max(1, self.chat.chunk_chars)
        for i in range(0, len(text), size):
            yield text[i : i + size]

    def _stream(
        self,
        rec: RecordedRequest,
        body: dict,
        text: str,
        finish_reason: str,
        usage: dict | None,
        *,
        chunk_delay: float = 0.0,
        cut: bool = False,
        cut_after: int | None = None,
        refusal: str | None = None,
        tool_calls: tuple[ToolCall, ...] = (),
    ) -> None:
        """Send the SSE stream; with ``cut``, stop after ``cut_after`` content chunks (all if None).

        A refusal streams as ``delta.refusal`` pieces after the content, tool
        calls as ``delta.tool_calls`` (the name first, then argument pieces).
        """
        chunk, base = self._chunk_maker(body)
        self._start_stream(rec)
        if refusal is not None or tool_calls:
            # OpenAI's first chunk of a refusal or of function calls has null content.
            self._send_event(chunk({"role": "assistant", "content": None if not text else "", "refusal": None}))
        else:
            self._send_event(chunk({"role": "assistant", "content": "", "refusal": None}))
        deltas: list[dict] = [{"content": piece} for piece in self._pieces(text)]
        deltas += [{"refusal": piece} for piece in self._pieces(refusal or "")]
        for i, call in enumerate(tool_calls):
            deltas.append({"tool_calls": [{"index": i, "id": f"call_{i:04d}", "type": "function",
                                           "function": {"name": call.name, "arguments": ""}}]})
            deltas += [{"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                       for piece in self._pieces(call.arguments)]
        for n, delta in enumerate(deltas):
            if cut and cut_after is not None and n >= cut_after:
                break
            if chunk_delay and self.chat._stopping.wait(chunk_delay):
                break
            self._send_event(chunk(delta))
        if cut or self.chat._stopping.is_set():
            # No terminating zero-length chunk: the client sees an incomplete body.
            self.close_connection = True
            return
        self._send_event(chunk({}, finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            self._send_event({**base, "choices": [], "usage": usage})
        self._write_chunk(b"data: [DONE]\n\n")
        # Recorded before the last write, so a client that has its answer sees it set.
        rec.finished_at = time.monotonic()
        self._write_chunk(b"")  # end of the chunked body

    def _chunk_maker(self, body: dict) -> tuple[Callable[..., dict], dict]:
        """``(chunk, base)``: ``chunk(delta, finish=None)`` makes one chunk of a new
        response's stream; ``base`` holds the fields every chunk shares."""
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": self.chat._new_completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": "fp_chatserver",
        }

        def chunk(delta: dict, finish: str | None = None) -> dict:
            data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                data["usage"] = None  # OpenAI sends null usage on every chunk but the last
            return data

        return chunk, base

    def _start_stream(self, rec: RecordedRequest, content_type: str = "text/event-stream; charset=utf-8") -> None:
        """Send 200 with a chunked body of ``content_type``."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-request-id", f"req_{id(rec):x}")
        rec.status = 200  # recorded before the client can see the response
        self.end_headers()
        self.wfile.flush()

    def _drip(self, rec: RecordedRequest, body: dict, step: Drip, stream: bool) -> None:
        """One byte every ``step.interval`` seconds until the client or the server gives up."""
        self.close_connection = True  # the body never ends, so the connection cannot be reused
        if stream:
            self._start_stream(rec)
            self._send_event(self._chunk_maker(body)[0]({"role": "assistant", "content": "", "refusal": None}))
        else:
            self._start_stream(rec, "application/json")
        byte = b"\n" if stream else b" "
        while not self.chat._stopping.wait(step.interval):
            self._write_chunk(byte)

    def _endless(self, rec: RecordedRequest, body: dict, step: Endless, stream: bool) -> None:
        """``step.prefix`` then ``step.text`` forever, until the client or the server gives up."""
        self.close_connection = True
        if stream:
            chunk, _ = self._chunk_maker(body)
            self._start_stream(rec)
            self._send_event(chunk({"role": "assistant", "content": "", "refusal": None}))
            for piece in self._pieces(step.prefix):
                self._send_event(chunk({"content": piece}))
            while not (step.chunk_delay and self.chat._stopping.wait(step.chunk_delay)):
                if self.chat._stopping.is_set():
                    return
                self._send_event(chunk({"content": step.text}))
            return
        self._start_stream(rec, "application/json")
        head = json.dumps({
            "id": self.chat._new_completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "\x00"}}],
        })
        # Everything up to the content string's opening quote, then its text forever.
        self._write_chunk(head[: head.index('"\\u0000"') + 1].encode() + json.dumps(step.prefix)[1:-1].encode())
        piece = json.dumps(step.text)[1:-1].encode()
        while not (step.chunk_delay and self.chat._stopping.wait(step.chunk_delay)):
            if self.chat._stopping.is_set():
                return
            self._write_chunk(piece)

    def _send_event(self, data: dict) -> None:
        self._write_chunk(b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    # -- plain responses ---------------------------------------------------
    def _send_step_error(self, rec: RecordedRequest, step: HTTPError) -> None:
        type_ = step.type or _DEFAULT_ERROR_TYPES.get(step.status, "server_error")
        self._send_json(
            rec, step.status, _error_body(step.message, type_, step.code, step.param), headers=step.headers
        )

    def _send_error(
        self,
        rec: RecordedRequest,
        status: int,
        message: str,
        type_: str,
        code: str | None,
        *,
        param: str | None = None,
        retry: bool | None = None,
    ) -> None:
        headers = {} if retry is None else {"x-should-retry": "true" if retry else "false"}
        self._send_json(rec, status, _error_body(message, type_, code, param), headers=headers)

    def _send_json(self, rec: RecordedRequest, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        headers = dict(headers or {})
        retryable = status in (408, 409, 429) or status >= 500
        if retryable and not any(h.lower() in _RETRY_HEADERS for h in headers):
            headers["retry-after-ms"] = "10"  # keep the client's built-in retries fast
        rec.status = status  # recorded before the client can see the response
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-request-id", f"req_{id(rec):x}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        rec.finished_at = time.monotonic()
        self.wfile.write(payload)


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    """A started `ChatServer` with an empty script; set ``chat_server.script``."""
    with ChatServer() as server:
        yield server
    assert not server.errors, f"the chat server failed while serving: {server.errors!r}"


@pytest.fixture
def make_chat_server() -> Iterator[Callable[..., ChatServer]]:
    """A factory: ``make_chat_server(script, **options)`` returns a started server.

    Every server it made is stopped after the test.
    """
    servers: list[ChatServer] = []

    def make(script: list[Step] | None = None, **options: Any) -> ChatServer:
        server = ChatServer(script, **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
    errors = [exc for server in servers for exc in server.errors]
    assert not errors, f"a chat server failed while serving: {errors!r}"
