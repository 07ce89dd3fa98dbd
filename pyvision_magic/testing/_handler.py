"""The HTTP side of `ChatServer`: one handler per connection, turning steps into responses.

Every response shape here mirrors what OpenAI sends (see the package docstring for
what the ``openai`` client makes of each).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from ._steps import (
    CutStream,
    Drip,
    Endless,
    HTTPError,
    RecordedRequest,
    Reply,
    ToolCall,
)

if TYPE_CHECKING:
    from ._server import ChatServer, _HTTPServer

#: The model name listed by ``GET /v1/models`` when ``models`` is not set.
DEFAULT_MODEL = "test-model"

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


class _ChatRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as the client expects
    disable_nagle_algorithm = True  # small SSE writes must not wait on delayed ACKs
    timeout = 60  # an idle keep-alive connection eventually frees its thread
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
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
        usage = self._usage(raw, text, step, chat._cached_tokens(body["messages"]))
        content = step.content if text == step.text else text
        if stream:
            return self._stream(
                rec, body, text, finish_reason, usage, chunk_delay=step.chunk_delay,
                refusal=step.refusal, tool_calls=step.tool_calls, hold=step.hold,
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
    def _usage(raw: bytes, text: str, step: Reply, cached: int = 0) -> dict:
        prompt = step.prompt_tokens if step.prompt_tokens is not None else len(raw) // 4
        words = len(text.split()) + len((step.refusal or "").split())
        completion = step.completion_tokens if step.completion_tokens is not None else words
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion + step.reasoning_tokens,
            "total_tokens": prompt + completion + step.reasoning_tokens,
            "prompt_tokens_details": {"cached_tokens": min(cached, prompt // 128 * 128), "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": step.reasoning_tokens,
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
        hold: threading.Event | None = None,
    ) -> None:
        """Send the SSE stream; with ``cut``, stop after ``cut_after`` content chunks (all if None).

        With ``hold``, the stream waits after half of the content's chunks until
        ``hold`` is set or the server stops.

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
        held_at = len(list(self._pieces(text))) // 2 if hold is not None else -1
        for n, delta in enumerate(deltas):
            if cut and cut_after is not None and n >= cut_after:
                break
            if n == held_at:
                while not (hold.wait(0.1) or self.chat._stopping.is_set()):
                    pass
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
