"""The REST + WebSocket kernel API of a Jupyter Kernel Gateway or Enterprise Gateway.

:class:`GatewayAPI` starts, interrupts and deletes kernels over HTTP;
:class:`KernelChannels` is one kernel's WebSocket, on which the messages of all
channels travel as JSON (``"channel": "shell"`` / ``"iopub"``). Both use tornado,
which jupyter_client and ipykernel already depend on, so no new library comes in.

Every failure a user can cause -- a wrong URL, a refused token, a missing
kernelspec -- becomes a :class:`~pyvision_magic.KernelStartError` of one sentence
that says what to do.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.simple_httpclient import HTTPStreamClosedError, HTTPTimeoutError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from .._errors import KernelError, KernelStartError

__all__ = ["GatewayAPI", "KernelChannels"]

#: Largest message read from the WebSocket: shown images are capped in the kernel,
#: but a tool may display several large ones in one flush.
MAX_MESSAGE_BYTES = 256 * 2**20
#: Seconds between WebSocket pings.
PING_SECONDS = 20.0
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class GatewayAPI:
    """HTTP calls to one gateway, with its token and TLS settings.

    Parameters
    ----------
    url : str
        Base URL of the gateway, e.g. ``https://gateway.example.org:8888``.
    token : str or None
        Sent as ``Authorization: token ...``; None sends no header.
    validate_cert : bool
        Check the gateway's TLS certificate (keep it on outside tests).
    ca_certs : str or None
        A CA bundle to check the certificate against, e.g. a private CA.
    request_timeout : float
        Seconds one HTTP request may take (starting a kernel included).
    """

    def __init__(self, url: str, *, token: str | None, validate_cert: bool = True,
                 ca_certs: str | None = None, request_timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise KernelStartError(
                f"The gateway URL {url!r} is not an http:// or https:// URL; give it as "
                "--gateway http://HOST:PORT.")
        self.url = url.rstrip("/")
        self._token = token
        self._validate_cert = validate_cert
        self._ca_certs = ca_certs
        self._timeout = request_timeout
        self._client = AsyncHTTPClient(force_instance=True)

    def _request(self, url: str, method: str = "GET", body: Any = None,
                 timeout: float | None = None) -> HTTPRequest:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"token {self._token}"
        return HTTPRequest(
            url, method=method, headers=headers,
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=method == "DELETE",
            validate_cert=self._validate_cert, ca_certs=self._ca_certs,
            connect_timeout=min(self._timeout, 20.0),
            request_timeout=timeout or self._timeout,
        )

    async def call(self, method: str, path: str, body: Any = None, *,
                   timeout: float | None = None) -> Any:
        """One request; the decoded JSON answer (None if empty).

        Raises
        ------
        KernelStartError
            If the gateway cannot be reached or refuses the token.
        HTTPClientError
            For other HTTP errors, which the caller explains.
        """
        request = self._request(self.url + path, method, body, timeout)
        try:
            response = await self._client.fetch(request)
        except HTTPClientError as exc:
            if exc.code in (401, 403):
                raise KernelStartError(
                    f"The gateway at {self.url} refused the token (HTTP {exc.code}); set "
                    "PYVISION_GATEWAY_TOKEN to the gateway's auth token.") from exc
            if isinstance(exc, HTTPTimeoutError):
                raise KernelStartError(
                    f"The gateway at {self.url} did not answer within {timeout or self._timeout:g} s; "
                    "check that it runs and is not overloaded.") from exc
            if isinstance(exc, HTTPStreamClosedError):
                raise KernelStartError(
                    f"The gateway at {self.url} closed the connection without answering; check "
                    "that the URL is the gateway's (http or https as it serves).") from exc
            raise
        except ssl.SSLError as exc:
            raise KernelStartError(
                f"The TLS certificate of the gateway at {self.url} could not be verified "
                f"({exc.reason or exc}); give its CA bundle as GatewayKernel.ca_certs.") from exc
        except OSError as exc:  # refused, unreachable, unknown host
            raise KernelStartError(
                f"The gateway at {self.url} cannot be reached ({exc.strerror or exc}); check "
                "the URL and that the gateway runs.") from exc
        return json.loads(response.body) if response.body else None

    async def kernelspec_names(self) -> tuple[list[str], str | None]:
        """The kernelspecs the gateway offers, and its default."""
        specs = await self.call("GET", "/api/kernelspecs") or {}
        return sorted(specs.get("kernelspecs", {})), specs.get("default")

    async def start_kernel(self, name: str | None, timeout: float) -> str:
        """Start a kernel and return its id. No environment is sent: see the docs.

        Raises
        ------
        KernelStartError
            If the kernelspec does not exist or the gateway fails to start it.
        """
        names, default = await self.kernelspec_names()
        if (name or default) not in names:
            raise KernelStartError(
                f"The gateway at {self.url} has no kernelspec named {name or default!r}; set "
                f"GatewayKernel.kernel_name to one of {', '.join(names) or '(none)'}.")
        # Only the name: the gateway adds its own environment. Nothing of ours
        # (API keys included) goes with the request.
        body = {"name": name} if name else {}
        try:
            model = await self.call("POST", "/api/kernels", body, timeout=timeout)
        except HTTPClientError as exc:
            raise KernelStartError(
                f"The gateway at {self.url} could not start a kernel (HTTP {exc.code}: "
                f"{_reason(exc)}); see the gateway's log.") from exc
        return str(model["id"])

    async def interrupt(self, kernel_id: str) -> None:
        await self.call("POST", f"/api/kernels/{quote(kernel_id)}/interrupt", {})

    async def exists(self, kernel_id: str) -> bool:
        """Whether the gateway still has the kernel (culled or deleted ones are gone)."""
        try:
            await self.call("GET", f"/api/kernels/{quote(kernel_id)}", timeout=10.0)
        except HTTPClientError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    async def delete(self, kernel_id: str) -> None:
        """Shut the kernel down; one already gone is fine."""
        try:
            await self.call("DELETE", f"/api/kernels/{quote(kernel_id)}", timeout=20.0)
        except HTTPClientError as exc:
            if exc.code != 404:
                raise

    async def connect(self, kernel_id: str) -> "KernelChannels":
        """Open the kernel's WebSocket."""
        ws_url = "ws" + self.url[4:] + f"/api/kernels/{quote(kernel_id)}/channels"
        session = uuid.uuid4().hex
        request = self._request(f"{ws_url}?session_id={session}")
        try:
            # Pings keep the socket alive through proxies (a Kubernetes ingress closes
            # a WebSocket idle for 60 s) while a tool runs without printing.
            connection = await websocket_connect(request, max_message_size=MAX_MESSAGE_BYTES,
                                                 ping_interval=PING_SECONDS)
        except HTTPClientError as exc:
            if exc.code in (401, 403):
                raise KernelStartError(
                    f"The gateway at {self.url} refused the token (HTTP {exc.code}); set "
                    "PYVISION_GATEWAY_TOKEN to the gateway's auth token.") from exc
            raise KernelStartError(
                f"The gateway at {self.url} refused the kernel's WebSocket (HTTP {exc.code}: "
                f"{_reason(exc)}); check that it allows WebSocket connections.") from exc
        except OSError as exc:
            raise KernelStartError(
                f"The gateway at {self.url} cannot be reached ({exc.strerror or exc}); check "
                "the URL and that the gateway runs.") from exc
        return KernelChannels(connection, session)

    def close(self) -> None:
        self._client.close()


def _reason(exc: HTTPClientError) -> str:
    try:
        body = json.loads(exc.response.body) if exc.response is not None else {}
        return str(body.get("message") or body.get("reason") or exc.message)
    except (ValueError, AttributeError):
        return str(exc.message)


class KernelChannels:
    """One kernel's WebSocket: sends requests, sorts incoming messages by channel.

    A reader task puts shell and iopub messages on two queues; when the socket
    closes (the kernel was culled or deleted, or the gateway went away),
    :attr:`closed` becomes True and waiting readers are woken with None.
    """

    def __init__(self, connection: WebSocketClientConnection, session: str) -> None:
        self._connection = connection
        self._session = session
        self.closed = False
        self.shell: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.iopub: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    def _ack_now(self) -> None:
        """Acknowledge what arrived at once (Linux ``TCP_QUICKACK``).

        The gateway's WebSocket leaves Nagle's algorithm on, so after its first small
        message (``busy``) the next ones wait for our ACK, which Linux delays up to
        40 ms: that tripled the time of a short execution. The flag does not stick,
        so it is set again after each read.
        """
        stream = getattr(self._connection, "stream", None)
        sock = getattr(stream, "socket", None)
        if sock is not None and _QUICKACK is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass

    async def _read(self) -> None:
        try:
            while True:
                raw = await self._connection.read_message()
                self._ack_now()
                if raw is None:
                    break
                if isinstance(raw, bytes):  # the binary framing is only used with buffers
                    continue
                msg = json.loads(raw)
                queue = self.shell if msg.get("channel") == "shell" else (
                    self.iopub if msg.get("channel") == "iopub" else None)
                if queue is not None:
                    queue.put_nowait(msg)
        finally:
            self._mark_closed()

    def _mark_closed(self) -> None:
        """Closed, with an end marker on each queue for its readers."""
        self.closed = True
        self.shell.put_nowait(None)
        self.iopub.put_nowait(None)

    def why_closed(self) -> str:
        """The WebSocket's close code and reason, as a clause, or "" if none was given."""
        code = getattr(self._connection, "close_code", None)
        reason = getattr(self._connection, "close_reason", None)
        if code is None:
            return ""
        return f" (WebSocket closed with code {code}{': ' + reason if reason else ''})"

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        """Send a request; returns its msg_id, which the replies carry as parent."""
        if self.closed:
            raise KernelError("The kernel's connection to the gateway is closed.")
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id, "msg_type": msg_type, "session": self._session,
            "username": "pyvision", "version": "5.3",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        message = {"header": header, "parent_header": {}, "metadata": {},
                   "content": content, "channel": channel, "buffers": []}
        try:
            written = self._connection.write_message(json.dumps(message))
        except WebSocketClosedError as exc:
            self.closed = True
            raise KernelError("The kernel's connection to the gateway is closed.") from exc
        # A write that fails later means a closed socket, which the reader reports.
        written.add_done_callback(lambda future: future.cancelled() or future.exception())
        return msg_id

    async def get(self, queue: asyncio.Queue[dict[str, Any] | None],
                  timeout: float) -> dict[str, Any] | None:
        """The next message of ``queue``; None on time-out or once closed."""
        if self.closed and queue.empty():
            return None
        try:
            msg = await asyncio.wait_for(queue.get(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            return None
        if msg is None:  # keep the end marker for the next reader
            queue.put_nowait(None)
        return msg

    async def close(self) -> None:
        self._connection.close()
        self._reader.cancel()
        try:
            await self._reader
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing anyway
            pass
        if not self.closed:  # cancelled before it ran: its clean-up never did
            self._mark_closed()
