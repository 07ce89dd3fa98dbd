"""`ChatServer`: the scripted chat-completions server, its script, records and lifecycle."""

from __future__ import annotations

import enum
import json
import socket
import socketserver
import sys
import threading
from collections.abc import Collection
from http.server import ThreadingHTTPServer
from typing import Any

from ._handler import _ChatRequestHandler
from ._steps import RecordedRequest, Step

__all__ = ["ChatServer"]


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
    host
        The IPv4 address to bind: ``127.0.0.1`` (this machine only) or, to serve
        other machines, ``0.0.0.0`` or one of this machine's addresses.
    port
        The TCP port; 0 picks a free one (see `port` once started).
    keep_requests
        Record every request in `requests`.  A long-running server (an offline
        class) turns this off so memory does not grow with each request.

    Usage reports ``prompt_tokens_details.cached_tokens`` as OpenAI's prefix
    cache would: the tokens (body bytes // 4, the prompt estimate) of the
    messages this request shares, from the first one on, with the previous
    chat request the server answered, rounded down to a multiple of 128, and 0
    below 1024.

    The script options are plain attributes and may be changed while running.
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
        host: str = "127.0.0.1",
        port: int = 0,
        keep_requests: bool = True,
    ) -> None:
        self.models = models
        self.api_key = api_key
        self.reject_stop = reject_stop
        self.reject_params = set(reject_params)
        self.default = default
        self.chunk_chars = chunk_chars
        self.host = host
        self.keep_requests = keep_requests
        self._requested_port = port
        #: Unexpected exceptions raised while serving (server bugs); clients
        #: hanging up are not errors.  The fixtures fail a test that leaves any.
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._script: list[Step] = list(script or [])
        self._position = 0
        self._requests: list[RecordedRequest] = []
        self._completion_count = 0
        self._last_messages: list[str] = []
        self._state = _State.NEW
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> ChatServer:
        """Bind ``host:port`` (a free port if 0) and serve in a daemon thread.

        Raises
        ------
        OSError
            When the address cannot be bound (the port is in use, say).
        """
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
        """``http://HOST:PORT/v1``, ready for ``OpenAI(base_url=...)`` on this machine.

        A server bound to every address (``0.0.0.0``) gives ``127.0.0.1`` here.
        """
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/v1"

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
        if not self.keep_requests:
            return
        with self._lock:
            self._requests.append(request)

    def _cached_tokens(self, messages: list[Any]) -> int:
        """Tokens of ``messages`` a prefix cache would hold after the previous request;
        remembers ``messages`` for the next one."""
        current = [json.dumps(m, separators=(",", ":")) for m in messages]
        with self._lock:
            previous, self._last_messages = self._last_messages, current
        shared = 0
        for mine, theirs in zip(current, previous):
            if mine != theirs:
                break
            shared += 1
        if not shared:
            return 0
        # The shared messages as they sit in the body: "[m1,m2,...".
        tokens = (sum(len(m.encode()) for m in current[:shared]) + shared) // 4
        return tokens // 128 * 128 if tokens >= 1024 else 0

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
        super().__init__((chat.host, chat._requested_port), _ChatRequestHandler)

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
