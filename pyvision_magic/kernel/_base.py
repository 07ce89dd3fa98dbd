"""What every kernel executor shares, whatever carries its messages.

:class:`KernelExecutor` is the :class:`~.._executor.Executor` contract for a
Jupyter kernel that runs the bootstrap: a start shared by concurrent callers,
one execution at a time under a lock, input images bound again after every
replacement, outputs captured and capped the same way, and an execution that
ends ``ok``, ``error``, ``timeout`` or ``died`` (the kernel is replaced). The
subclass says how a kernel is started and reached: :class:`~._child.ChildKernel`
(a local process, :class:`~._connection.KernelConnection`) or
:class:`~._gateway.GatewayKernel` (a gateway's, :class:`~._remote.RemoteKernel`).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Sequence
from typing import Any, Protocol

from traitlets import Float, Int
from traitlets.config import LoggingConfigurable

from .._errors import KernelStartError
from .._executor import Executor
from .._records import ExecutionResult, ImageInput
from ._connection import Ran
from ._output import OutputCollector, PathShortener, execution_result

__all__ = ["KernelExecutor", "RunningKernel"]


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    CLOSED = "closed"


class RunningKernel(Protocol):
    """One kernel as the executor drives it (a local process or a gateway's)."""

    async def run(self, code: str, collected: OutputCollector, *, limit: float | None,
                  grace: float) -> Ran: ...

    async def call(self, expression: str, *, timeout: float = 30.0) -> Any: ...

    async def interrupt(self) -> None: ...

    async def close(self) -> None: ...

    def exit_description(self) -> str: ...


class KernelExecutor(Executor, LoggingConfigurable):
    """A kernel that runs tools one execution at a time (see the module docstring).

    Subclasses implement :meth:`_first_start` (set up, then :meth:`_launch`),
    :meth:`_launch` (start one kernel into ``self._running``) and :meth:`_bind`,
    and may extend :meth:`_teardown`, :meth:`_after_shutdown` and :meth:`_relaunch`.
    """

    timeout = Float(
        60.0,
        allow_none=True,
        help="Time limit of one execution, in seconds; None means no limit. "
        "execute(timeout=...) overrides it per call.",
    ).tag(config=True)
    interrupt_grace = Float(
        2.0,
        help="Seconds to wait after interrupting a timed-out execution before the "
        "kernel is replaced (code that swallows KeyboardInterrupt never stops).",
    ).tag(config=True)
    startup_timeout = Float(
        60.0, help="Seconds a kernel may take to start and set itself up."
    ).tag(config=True)
    max_output_chars = Int(
        20000,
        allow_none=True,
        help="Characters of text (prints, results, tracebacks) returned per execution; "
        "the head and tail are kept and the middle is dropped. None means no cap.",
    ).tag(config=True)
    max_images = Int(
        8,
        allow_none=True,
        help="Images returned per execution; later ones are dropped and counted in "
        "the result's note. None means no cap.",
    ).tag(config=True)
    max_image_pixels = Int(
        1024 * 1024,
        allow_none=True,
        help="Pixels (width x height) of a returned image; larger images are scaled "
        "down inside the kernel before encoding. None means no cap.",
    ).tag(config=True)
    memory_limit = Int(
        8 * 2**30,
        allow_none=True,
        help="Address-space limit of the kernel process in bytes (RLIMIT_AS), so a "
        "runaway allocation raises MemoryError. None means no limit.",
    ).tag(config=True)
    file_size_limit = Int(
        2 * 2**30,
        allow_none=True,
        help="Largest file the kernel may write, in bytes (RLIMIT_FSIZE); writing "
        "more raises OSError. None means no limit.",
    ).tag(config=True)

    #: How notes name the kernel: "The kernel", "The gateway's kernel".
    _called = "The kernel"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state = _State.NEW
        self._start_task: asyncio.Future[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._running: RunningKernel | None = None
        self._interpreter: dict[str, Any] = {}
        self._images: list[ImageInput] = []
        self._bound_names: list[str] = []
        self._libraries: list[str] | None = None

    # -- what a subclass provides ---------------------------------------------------

    async def _first_start(self) -> None:
        raise NotImplementedError

    async def _launch(self) -> None:
        raise NotImplementedError

    async def _bind(self, images: Sequence[ImageInput]) -> list[str]:
        raise NotImplementedError

    def _path_shortener(self) -> PathShortener | None:
        """What shortens host paths in this kernel's outputs."""
        return None

    def _starting(self) -> None:
        """Called once when a start begins (work to overlap with it)."""

    async def _after_shutdown(self) -> None:
        """Release what outlives a kernel (folders, HTTP clients), after the last one."""

    def _bootstrap_config(self) -> dict[str, Any]:
        """The limits the bootstrap applies in each kernel."""
        return {"max_images": self.max_images, "max_image_pixels": self.max_image_pixels,
                "memory_limit": self.memory_limit, "file_size_limit": self.file_size_limit}

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> "KernelExecutor":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    @property
    def is_ready(self) -> bool:
        """True once :meth:`start` finished and until :meth:`shutdown`."""
        return self._state is _State.READY

    def _closed(self) -> bool:
        return self._state is _State.CLOSED

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def start(self) -> None:
        """Start the kernel, if not done yet.

        Safe to call concurrently and repeatedly; every caller waits for the same
        start.

        Raises
        ------
        KernelStartError
            If the kernel cannot start, or this executor was already shut down.
        """
        if self._state is _State.READY:
            return
        if self._state is _State.CLOSED:
            raise KernelStartError(
                f"This kernel was shut down; create a new {type(self).__name__}.")
        if self._start_task is None:
            self._state = _State.STARTING
            self._start_task = asyncio.ensure_future(self._started())
            self._starting()
        task = self._start_task
        try:
            # shield: one cancelled waiter must not cancel the start others wait for.
            await asyncio.shield(task)
        except KernelStartError:
            if self._start_task is task:
                self._start_task, self._state = None, _State.NEW
            raise

    async def _started(self) -> None:
        await self._first_start()
        if self._state is _State.STARTING:  # not if shut down meanwhile
            self._state = _State.READY

    async def _teardown(self) -> None:
        """End the running kernel and every process it started."""
        running, self._running = self._running, None
        if running is not None:
            await running.close()

    async def _relaunch(self, *, rebind: bool = True) -> None:
        await self._teardown()
        await self._launch()
        if rebind and self._images:
            await self._bind(self._images)

    async def shutdown(self) -> None:
        """End the kernel and all its processes, and release what was made for it.

        Idempotent; a start still in progress is waited for first.
        """
        if self._state is _State.CLOSED:
            return
        task, self._start_task = self._start_task, None
        self._state = _State.CLOSED
        if task is not None:
            try:
                await asyncio.shield(task)
            except BaseException as exc:  # a failed start already cleaned up
                self.log.debug("start failed before shutdown: %s", exc)
        # A running execution sees the closed state within one poll and lets go of the
        # lock; closing its channels under it instead would cancel its await.
        async with self._get_lock():
            await self._teardown()
            await self._after_shutdown()

    async def restart(self) -> None:
        """Replace the kernel by a fresh one: all variables and images are gone."""
        await self.start()
        async with self._get_lock():
            self._images, self._bound_names = [], []
            await self._relaunch(rebind=False)

    async def interrupt(self) -> None:
        """Interrupt the running execution, if any (like Ctrl-C)."""
        if self._running is not None and self._state is _State.READY:
            await self._running.interrupt()

    # -- the Executor interface -----------------------------------------------------

    async def bind_images(self, images: Sequence[ImageInput]) -> list[str]:
        """Give the images to the kernel and bind them as ``image_clue_N``.

        Raises
        ------
        ImageInputError
            If the kernel cannot decode one of the images.
        """
        await self.start()
        async with self._get_lock():
            self._images = list(images)
            return await self._bind(self._images)

    async def _probe_libraries(self, candidates: Sequence[tuple[str, str]]) -> list[str]:
        """Ask the running kernel which of ``candidates`` it can import."""
        await self.start()
        async with self._get_lock():
            assert self._running is not None
            return list(await self._running.call(f"probe_libraries({list(candidates)!r})"))

    async def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        """Run ``code`` and collect what it printed, showed and raised.

        Never raises for what the code did: errors, timeouts and kernel deaths are
        reported in :attr:`ExecutionResult.status` and ``note``.
        """
        await self.start()
        async with self._get_lock():
            if self._running is None and self._state is _State.READY:
                # An earlier replacement failed half way; try once more before running.
                try:
                    await self._relaunch()
                except Exception as exc:  # noqa: BLE001 - a status, as for the tool itself
                    await self._teardown()
                    return ExecutionResult("died", note=(
                        f"{self._called} could not be started again ({type(exc).__name__}: "
                        f"{exc}); the tool was not run. The next tool tries again."))
            return await self._execute(code, self.timeout if timeout is None else timeout)

    async def _execute(self, code: str, limit: float | None) -> ExecutionResult:
        running = self._running
        assert running is not None
        started = time.monotonic()
        collected = OutputCollector(self.max_output_chars, self.max_images, self.max_image_pixels,
                                    self._path_shortener())
        ran = await running.run(code, collected, limit=limit, grace=self.interrupt_grace)
        await collected.finish()  # check and decode the images off the event loop
        exit_clause, replace_failed = "", None
        if ran.outcome in ("stuck", "died"):
            # Variables are lost either way; a fresh kernel gets the input images back.
            exit_clause = running.exit_description() if ran.outcome == "died" else ""
            try:
                await self._relaunch()
            except Exception as exc:  # noqa: BLE001 - a tool's fault is a turn status
                # A full disk, inputs/ replaced by the tool, a gateway gone: the next
                # execute retries.
                await self._teardown()
                replace_failed = exc
        result = execution_result(
            collected,
            outcome=ran.outcome,
            interrupted=ran.interrupted,
            reply_status=ran.reply.get("status"),
            limit=limit,
            duration=time.monotonic() - started,
            exit_clause=exit_clause,
            rebound=self._bound_names,
        )
        if replace_failed is not None:
            what = " died" + exit_clause if ran.outcome == "died" else " had to be replaced"
            result.status = "died"
            result.note = (
                f"{self._called}{what} and no new one could be started "
                f"({type(replace_failed).__name__}: {replace_failed}); the next tool starts "
                "a fresh kernel, without variables.")
        return result
