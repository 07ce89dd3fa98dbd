"""One kernel on a gateway, and the messages exchanged with it.

:class:`RemoteKernel` is the gateway's counterpart of
:class:`~._connection.KernelConnection`: it starts a kernel through the REST
API, runs the same bootstrap in it (sent as code, so the gateway's kernels need
ipykernel and Pillow but not this package), executes code while watching for
deadlines and death, and deletes the kernel. What to do about a timeout or a
death is decided by :class:`~._gateway.GatewayKernel`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from tornado.httpclient import HTTPClientError

from .._errors import KernelError, KernelStartError
from .._records import ImageInput
from ._connection import Ran, _boot_code, _expression_value
from ._gateway_api import GatewayAPI, KernelChannels
from ._output import OutputCollector, collect_message

__all__ = ["RemoteKernel"]

_SHUT_DOWN_WHILE_STARTING = "The kernel was shut down while it was starting."
# How often a wait checks whether the owner shut down.
_POLL = 0.2
#: Base64 characters sent per request when binding images: the gateway's WebSocket
#: takes messages up to 10 MiB by default (tornado's limit).
CHUNK_CHARS = 4 * 2**20

_SHUT_DOWN = " (the gateway shut it down: it culled or deleted the kernel, or stopped)"

# Installed after the bootstrap: the images arrive in chunks of base64 and are
# bound from memory, since the gateway shares no file system with us. The tools
# work in a folder of their own, as a local kernel's do, not in the gateway's
# folder shared by all its kernels (see enter_own_folder).
_RECEIVER = """
__import__('_pyvision_child_files').enter_own_folder()
def _pyvision_receiver():
    import base64, io, json, sys
    child = sys.modules['_pyvision_child']
    parts = {}
    def receive_chunk(name, chunk):
        parts.setdefault(name, []).append(chunk)
        return json.dumps(len(parts[name]))
    def bind_received(names):
        try:
            items = [(n, io.BytesIO(base64.b64decode(''.join(parts.get(n, []))))) for n in names]
            return child.bind_inputs(items)
        finally:
            parts.clear()
    child.receive_chunk, child.bind_received = receive_chunk, bind_received
_pyvision_receiver()
del _pyvision_receiver
"""


def _not_ready(startup_timeout: float) -> str:
    return (f"The gateway's kernel did not become ready within {startup_timeout:g} s; "
            "see the gateway's log.")


class RemoteKernel:
    """A kernel on the gateway: its id and its WebSocket.

    Create it with :meth:`launch`; end it with :meth:`close`.
    """

    def __init__(self, api: GatewayAPI, kernel_id: str, stopped: Callable[[], bool],
                 log: logging.Logger) -> None:
        self.api = api
        self.kernel_id = kernel_id
        self.channels: KernelChannels | None = None
        #: ``{"executable": ..., "version": ...}`` of the kernel's Python, once booted.
        self.interpreter: dict[str, str] = {}
        self._stopped = stopped
        self._log = log
        #: How the kernel ended, as a clause for the note, once it died.
        self.death = ""
        self._interrupt_sent = False

    @classmethod
    async def launch(cls, api: GatewayAPI, *, kernel_name: str | None, startup_timeout: float,
                     config: dict[str, Any], stopped: Callable[[], bool],
                     log: logging.Logger) -> "RemoteKernel":
        """Start a kernel on the gateway, connect and run the bootstrap.

        Raises
        ------
        KernelStartError
            If the gateway cannot be used or the kernel cannot set itself up;
            nothing is left running on the gateway then.
        """
        kernel_id = await api.start_kernel(kernel_name, startup_timeout)
        kernel = cls(api, kernel_id, stopped, log)
        try:
            await kernel._start(startup_timeout, config)
        except BaseException:
            await kernel.close()
            raise
        return kernel

    async def _start(self, startup_timeout: float, config: dict[str, Any]) -> None:
        deadline = time.monotonic() + startup_timeout
        self.channels = await self._connect(deadline, startup_timeout)
        reconnects = 0
        while True:  # a request sent before the kernel listens may be lost: ask again
            if self._stopped():
                raise KernelStartError(_SHUT_DOWN_WHILE_STARTING)
            if time.monotonic() >= deadline:
                raise KernelStartError(_not_ready(startup_timeout))
            if self.channels.closed:
                # The gateway may drop the socket of a kernel it is still (re)starting:
                # connect again while the kernel exists, a few times.
                why = self.channels.why_closed()
                if reconnects >= 3 or not await self.api.exists(self.kernel_id):
                    raise KernelStartError(
                        f"The gateway closed the connection to its kernel while it was "
                        f"starting{why}; see the gateway's log.")
                reconnects += 1
                self._log.debug("gateway kernel socket closed while starting%s; reconnecting",
                                why)
                self.channels = await self._connect(deadline, startup_timeout)
                continue
            try:
                msg_id = self.channels.send("kernel_info_request", {})
            except KernelError:  # closed before the reader saw it: handled above
                continue
            if await self.reply(msg_id, min(deadline, time.monotonic() + 2.0)) is not None:
                break
        try:
            reply = await self.silent(
                _boot_code(config) + _RECEIVER, timeout=startup_timeout,
                expressions={"interpreter": "__import__('_pyvision_child').interpreter()"})
        except KernelError:
            if self._stopped():  # not an unanswering kernel: the wait was given up
                raise KernelStartError(_SHUT_DOWN_WHILE_STARTING) from None
            raise
        if reply["status"] != "ok":
            raise KernelStartError(
                "The gateway's kernel started but could not set itself up "
                f"({reply.get('ename')}: {reply.get('evalue')}); it needs ipykernel and Pillow.")
        try:
            self.interpreter = _expression_value(reply, "interpreter")
        except KernelError as exc:  # only informative
            self._log.debug("kernel interpreter unknown: %s", exc)

    async def _connect(self, deadline: float, startup_timeout: float) -> KernelChannels:
        """Open the kernel's WebSocket by ``deadline``, or give up when the owner shuts down.

        The gateway holds the handshake until the kernel answers a request of its own
        (for up to its ``kernel_info_timeout``, 60 s by default), so the handshake is
        bounded by the start's deadline, not by the gateway's request timeout.
        """
        task = asyncio.ensure_future(self.api.connect(self.kernel_id))
        try:
            while not task.done():
                if self._stopped():
                    raise KernelStartError(_SHUT_DOWN_WHILE_STARTING)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise KernelStartError(_not_ready(startup_timeout))
                await asyncio.wait({task}, timeout=min(_POLL, left))
            return task.result()
        finally:
            if not task.done():  # a socket opened later is closed when the kernel is deleted
                task.cancel()

    async def close(self) -> None:
        """Close the WebSocket and delete the kernel on the gateway."""
        channels, self.channels = self.channels, None
        if channels is not None:
            await channels.close()
        try:
            await self.api.delete(self.kernel_id)
        except (KernelError, HTTPClientError) as exc:  # gone, or the gateway is: log it
            self._log.debug("gateway kernel delete: %s", exc)

    def exit_description(self) -> str:
        """How the kernel ended, as a clause for the note (see :attr:`death`)."""
        return self.death

    async def interrupt(self) -> None:
        """Interrupt through the gateway's REST endpoint; a failure is only logged."""
        self._interrupt_sent = True
        try:
            await self.api.interrupt(self.kernel_id)
        except (KernelError, HTTPClientError) as exc:
            self._log.debug("gateway interrupt failed: %s", exc)

    # -- messages -------------------------------------------------------------------

    def _send_execute(self, code: str, *, silent: bool,
                      expressions: dict[str, str] | None = None) -> str:
        if self.channels is None:
            raise KernelError("The gateway's kernel is not connected; restart it.")
        return self.channels.send("execute_request", {
            "code": code, "silent": silent, "store_history": not silent,
            "user_expressions": expressions or {}, "allow_stdin": False,
            "stop_on_error": False,
        })

    async def reply(self, msg_id: str, deadline: float) -> dict[str, Any] | None:
        """The shell reply to ``msg_id``, or None if the connection closed or time ran out."""
        channels = self.channels
        while channels is not None and time.monotonic() < deadline and not self._stopped():
            msg = await channels.get(channels.shell, min(_POLL, deadline - time.monotonic()))
            if msg is None:
                if channels.closed:
                    return None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg["content"]
        return None

    async def silent(self, code: str, *, timeout: float,
                     expressions: dict[str, str] | None = None) -> dict[str, Any]:
        """Run code that is not the user's and wait for its reply."""
        msg_id = self._send_execute(code, silent=True, expressions=expressions)
        reply = await self.reply(msg_id, time.monotonic() + timeout)
        if reply is None:
            raise KernelError("The gateway's kernel stopped answering; restart it.")
        return reply

    async def call(self, expression: str, *, timeout: float = 30.0) -> Any:
        """Evaluate a JSON-returning expression in the kernel's private module."""
        reply = await self.silent("", timeout=timeout, expressions={
            "value": f"__import__('_pyvision_child').{expression}"})
        return _expression_value(reply, "value")

    async def bind(self, images: Sequence[ImageInput]) -> list[str]:
        """Send the images as base64, in chunks, and bind them as ``image_clue_N``."""
        names = [f"image_clue_{index}" for index in range(len(images))]
        for name, image in zip(names, images):
            encoded = base64.b64encode(image.data).decode("ascii")
            for start in range(0, len(encoded), CHUNK_CHARS):
                await self.call(f"receive_chunk({name!r}, {encoded[start:start + CHUNK_CHARS]!r})")
        return list(await self.call(f"bind_received({names!r})"))

    async def _shutting_down(self, channels: KernelChannels, wait: float = 3.0) -> bool:
        """Whether the kernel is being shut down, after an interrupt nobody here sent.

        A gateway that culls or deletes a busy kernel interrupts it first, so the
        execution ends with KeyboardInterrupt; the shutdown follows within moments.
        """
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            msg = await channels.get(channels.iopub, deadline - time.monotonic())
            if msg is None:
                if channels.closed:
                    return True
                continue
            if msg.get("msg_type") == "shutdown_reply" or (
                    msg.get("msg_type") == "status"
                    and msg.get("content", {}).get("execution_state") in ("restarting", "dead")):
                return True
        return False

    async def run(self, code: str, collected: OutputCollector, *, limit: float | None,
                  grace: float) -> Ran:
        """Execute ``code``, collecting its outputs, until it ends or must be given up.

        At ``limit`` seconds the kernel is interrupted through the gateway;
        ``grace`` seconds later the execution counts as stuck. A closed WebSocket
        (the gateway culled or deleted the kernel) or a kernel the gateway reports
        restarting or dead counts as died.
        """
        started = time.monotonic()
        self._interrupt_sent = False
        try:
            msg_id = self._send_execute(code, silent=False)
        except KernelError:
            self.death = " (its connection to the gateway was closed)"
            return Ran("died")
        channels = self.channels
        assert channels is not None
        deadline = started + limit if limit else None
        interrupted_at: float | None = None
        while True:
            if self._stopped():
                return Ran("closed", interrupted_at is not None)
            now = time.monotonic()
            if deadline is not None and interrupted_at is None and now >= deadline:
                interrupted_at = now
                await self.interrupt()
                now = time.monotonic()
            if interrupted_at is not None and now >= interrupted_at + grace:
                return Ran("stuck", True)
            wait = _POLL
            if interrupted_at is not None:
                wait = min(wait, interrupted_at + grace - now)
            elif deadline is not None:
                wait = min(wait, deadline - now)
            msg = await channels.get(channels.iopub, wait)
            if msg is None:
                if channels.closed:
                    self.death = _SHUT_DOWN
                    return Ran("died", interrupted_at is not None)
                continue
            state = msg.get("content", {}).get("execution_state")
            if msg.get("msg_type") == "shutdown_reply":
                self.death = _SHUT_DOWN
                return Ran("died", interrupted_at is not None)
            if msg.get("msg_type") == "status" and state in ("restarting", "dead"):
                # The gateway saw the process end (and may be restarting it, empty).
                self.death = " (the gateway saw its process end)"
                return Ran("died", interrupted_at is not None)
            # Only this execution's messages: late output of an earlier one is discarded.
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg.get("msg_type") == "status" and state == "idle":
                reply = await self.reply(msg_id, time.monotonic() + 5.0) or {}
                if (reply.get("ename") == "KeyboardInterrupt" and not self._interrupt_sent
                        and await self._shutting_down(channels)):
                    self.death = _SHUT_DOWN
                    return Ran("died", interrupted_at is not None)
                return Ran("done", interrupted_at is not None, reply)
            collect_message(msg, collected)
