"""The executor that runs the model's tools on a Jupyter Kernel Gateway.

A Jupyter Kernel Gateway or Enterprise Gateway starts kernels elsewhere (another
machine, a Kubernetes pod) and speaks the standard REST + WebSocket kernel API.
:class:`GatewayKernel` has the contract of :class:`~._child.ChildKernel`: the
same bootstrap runs in the remote kernel (sent as code), images are bound as
``image_clue_N`` from bytes sent over the WebSocket, outputs are captured and
capped the same way, and an execution ends ``ok``, ``error``, ``timeout`` (after
the gateway's interrupt endpoint) or ``died`` (the kernel is replaced and the
images bound again). How isolated the tools are is the gateway's business: see
docs/remote_kernels.md.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import Sequence
from typing import Any

from traitlets import Bool, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from .._errors import ImageInputError, KernelError, KernelStartError
from .._executor import Executor
from .._records import ExecutionResult, ImageInput
from ._gateway_api import GatewayAPI
from ._interpreter import NOTABLE_LIBRARIES
from ._output import OutputCollector, PathShortener, execution_result
from ._remote import RemoteKernel

__all__ = ["GatewayKernel", "TOKEN_VARIABLES", "gateway_token"]

#: Where the gateway's token is looked for, in order.
TOKEN_VARIABLES = ("PYVISION_GATEWAY_TOKEN", "JUPYTER_GATEWAY_AUTH_TOKEN")


def gateway_token() -> str | None:
    """The gateway token from the environment (see :data:`TOKEN_VARIABLES`), or None."""
    return next((os.environ[name] for name in TOKEN_VARIABLES if os.environ.get(name)), None)


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    CLOSED = "closed"


class GatewayKernel(Executor, LoggingConfigurable):
    """Runs tools in a kernel on a Jupyter Kernel Gateway, one execution at a time.

    Nothing of this process's environment is sent: the kernel gets the
    gateway's environment, and the token only goes in the HTTP header.
    Use it as ``async with GatewayKernel(url=...) as kernel: ...``.
    """

    url = Unicode(
        "", help="Base URL of the gateway, e.g. https://gateway.example.org:8888."
    ).tag(config=True)
    token = Unicode(
        None, allow_none=True,
        help="The gateway's auth token. None reads $PYVISION_GATEWAY_TOKEN, else "
        "$JUPYTER_GATEWAY_AUTH_TOKEN; prefer those to putting it in a config file.",
    ).tag(config=True)
    kernel_name = Unicode(
        None, allow_none=True,
        help="Kernelspec on the gateway to run tools in. None uses the gateway's default.",
    ).tag(config=True)
    validate_cert = Bool(
        True, help="Verify the gateway's TLS certificate (https URLs). Keep it on."
    ).tag(config=True)
    ca_certs = Unicode(
        None, allow_none=True,
        help="Path of a CA bundle for the gateway's certificate; None uses the system's.",
    ).tag(config=True)
    request_timeout = Float(
        60.0, help="Seconds one REST request to the gateway may take (starting a kernel included)."
    ).tag(config=True)
    timeout = Float(
        60.0, allow_none=True,
        help="Time limit of one execution, in seconds; None means no limit.",
    ).tag(config=True)
    interrupt_grace = Float(
        2.0,
        help="Seconds to wait after interrupting a timed-out execution before the kernel "
        "is replaced by a new one.",
    ).tag(config=True)
    startup_timeout = Float(
        60.0, help="Seconds a gateway kernel may take to start and set itself up."
    ).tag(config=True)
    max_output_chars = Int(
        20000, allow_none=True,
        help="Characters of text returned per execution (head and tail kept). None: no cap.",
    ).tag(config=True)
    max_images = Int(8, allow_none=True, help="Images returned per execution. None: no cap.").tag(
        config=True)
    max_image_pixels = Int(
        1024 * 1024, allow_none=True,
        help="Pixels of a returned image; larger ones are scaled down in the kernel. None: no cap.",
    ).tag(config=True)
    memory_limit = Int(
        8 * 2**30, allow_none=True,
        help="RLIMIT_AS the kernel sets on itself, in bytes. None: no limit.",
    ).tag(config=True)
    file_size_limit = Int(
        2 * 2**30, allow_none=True,
        help="RLIMIT_FSIZE the kernel sets on itself, in bytes. None: no limit.",
    ).tag(config=True)

    #: Gateway kernels are never forked from a local template (the eval runner asks).
    forked = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state = _State.NEW
        self._start_task: asyncio.Future[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._api: GatewayAPI | None = None
        self._remote: RemoteKernel | None = None
        self._images: list[ImageInput] = []
        self._bound_names: list[str] = []
        self._libraries: list[str] | None = None
        self._interpreter: dict[str, str] = {}

    async def __aenter__(self) -> "GatewayKernel":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    @property
    def kernel_id(self) -> str | None:
        """The gateway's id of the running kernel, or None."""
        return self._remote.kernel_id if self._remote is not None else None

    @property
    def scratch_path(self) -> None:
        """None: the kernel's working directory is on the gateway, set by the gateway."""
        return None

    @property
    def is_ready(self) -> bool:
        return self._state is _State.READY

    @property
    def python_version(self) -> str | None:
        """Version of the gateway kernel's Python, once started."""
        return self._interpreter.get("version")

    @property
    def isolation(self) -> None:
        """Not known from here: the gateway decides (see docs/remote_kernels.md)."""
        return None

    async def choose_isolation(self) -> None:
        """None: the gateway decides how its kernels are confined."""
        return None

    async def network_access(self) -> bool:
        """Assumed True: a gateway kernel usually reaches the network."""
        return True

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def start(self) -> None:
        """Start a kernel on the gateway, if not done yet; concurrent callers share it.

        Raises
        ------
        KernelStartError
            If the gateway is unreachable, refuses the token, lacks the kernelspec,
            or the kernel cannot set itself up.
        """
        if self._state is _State.READY:
            return
        if self._state is _State.CLOSED:
            raise KernelStartError("This kernel was shut down; create a new GatewayKernel.")
        if self._start_task is None:
            self._state = _State.STARTING
            self._start_task = asyncio.ensure_future(self._first_start())
        task = self._start_task
        try:
            await asyncio.shield(task)
        except KernelStartError:
            if self._start_task is task:
                self._start_task, self._state = None, _State.NEW
            raise

    async def _first_start(self) -> None:
        if not self.url:
            raise KernelStartError("No gateway URL: give --gateway URL or set GatewayKernel.url.")
        token = self.token if self.token is not None else gateway_token()
        self._api = GatewayAPI(self.url, token=token, validate_cert=self.validate_cert,
                               ca_certs=self.ca_certs, request_timeout=self.request_timeout)
        await self._launch()
        if self._state is _State.STARTING:
            self._state = _State.READY

    async def _launch(self) -> None:
        assert self._api is not None
        self._remote = await RemoteKernel.launch(
            self._api, kernel_name=self.kernel_name, startup_timeout=self.startup_timeout,
            config={"max_images": self.max_images, "max_image_pixels": self.max_image_pixels,
                    "memory_limit": self.memory_limit, "file_size_limit": self.file_size_limit,
                    "nice": None},
            stopped=lambda: self._state is _State.CLOSED, log=self.log)
        self._interpreter = self._remote.interpreter or self._interpreter

    async def _teardown(self) -> None:
        remote, self._remote = self._remote, None
        if remote is not None:
            await remote.close()

    async def _relaunch(self, *, rebind: bool = True) -> None:
        # The old kernel may take the gateway seconds to kill (it ignored the
        # interrupt): start the new one meanwhile.
        old, self._remote = self._remote, None
        await asyncio.gather(*([old.close()] if old is not None else []), self._launch())
        if rebind and self._images:
            await self._bind(self._images)

    async def shutdown(self) -> None:
        """Delete the kernel on the gateway. Idempotent."""
        if self._state is _State.CLOSED:
            return
        task, self._start_task = self._start_task, None
        self._state = _State.CLOSED
        if task is not None:
            try:
                await asyncio.shield(task)
            except BaseException as exc:  # a failed start cleaned up already
                self.log.debug("start failed before shutdown: %s", exc)
        async with self._get_lock():
            await self._teardown()
            if self._api is not None:
                self._api.close()

    async def restart(self) -> None:
        """Replace the kernel by a new one: all variables and images are gone."""
        await self.start()
        async with self._get_lock():
            self._images, self._bound_names = [], []
            await self._relaunch(rebind=False)

    async def interrupt(self) -> None:
        """Interrupt the running execution through the gateway."""
        if self._remote is not None and self._state is _State.READY:
            await self._remote.interrupt()

    async def bind_images(self, images: Sequence[ImageInput]) -> list[str]:
        """Send the images to the kernel and bind them as ``image_clue_N``.

        Raises
        ------
        ImageInputError
            If the kernel cannot decode one of the images.
        """
        await self.start()
        async with self._get_lock():
            self._images = list(images)
            return await self._bind(self._images)

    async def _bind(self, images: Sequence[ImageInput]) -> list[str]:
        assert self._remote is not None
        try:
            names = await self._remote.bind(images)
        except KernelError as exc:
            raise ImageInputError(
                f"The gateway's kernel could not open the input images ({exc}).",
                source=", ".join(image.name for image in images)) from exc
        self._bound_names = names
        return names

    async def importable_libraries(self) -> list[str]:
        """Notable libraries the gateway's kernel can import (asked once, cached)."""
        if self._libraries is None:
            await self.start()
            async with self._get_lock():
                assert self._remote is not None
                self._libraries = await self._remote.call(
                    f"probe_libraries({NOTABLE_LIBRARIES!r})")
        return list(self._libraries)

    async def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        """Run ``code`` on the gateway; errors, timeouts and deaths are statuses."""
        await self.start()
        async with self._get_lock():
            if self._remote is None and self._state is _State.READY:
                try:  # an earlier replacement failed: try once more before running
                    await self._relaunch()
                except Exception as exc:  # noqa: BLE001 - a status, as for the tool itself
                    await self._teardown()
                    return ExecutionResult("died", note=(
                        f"The gateway's kernel could not be started again ({exc}); the tool was "
                        "not run. The next tool tries again."))
            return await self._execute(code, self.timeout if timeout is None else timeout)

    async def _execute(self, code: str, limit: float | None) -> ExecutionResult:
        assert self._remote is not None
        started = time.monotonic()
        # Host paths on the gateway's machine are shortened as the local kernel's are.
        shorten = PathShortener(self._remote.interpreter.get("paths") or {})
        collected = OutputCollector(self.max_output_chars, self.max_images, self.max_image_pixels,
                                    shorten)
        ran = await self._remote.run(code, collected, limit=limit, grace=self.interrupt_grace)
        await collected.finish()
        exit_clause, replace_failed = "", None
        if ran.outcome in ("stuck", "died"):
            exit_clause = self._remote.death if ran.outcome == "died" else ""
            try:
                await self._relaunch()
            except Exception as exc:  # noqa: BLE001 - the gateway's fault is a turn status
                await self._teardown()
                replace_failed = exc
        result = execution_result(
            collected, outcome=ran.outcome, interrupted=ran.interrupted,
            reply_status=ran.reply.get("status"), limit=limit,
            duration=time.monotonic() - started, exit_clause=exit_clause,
            rebound=self._bound_names)
        if replace_failed is not None:
            result.status = "died"
            result.note = (f"The gateway's kernel had to be replaced and no new one could be "
                           f"started ({replace_failed}); the next tool tries again.")
        return result
