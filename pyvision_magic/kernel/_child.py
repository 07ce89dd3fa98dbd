"""The child Jupyter kernel that runs the model's tools.

How the tools are confined, and what each mode protects, is set out in
:mod:`._isolation` (and the README's Security model).
"""

from __future__ import annotations

import asyncio
import enum
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, Unicode, Union, validate
from traitlets.config import LoggingConfigurable

from .._errors import ImageInputError, KernelError, KernelStartError
from .._executor import Executor
from ._connection import KernelConnection
from ._forkserver import fork_supported
from ._interpreter import (
    NOTABLE_LIBRARIES,
    describe_interpreter,
    libraries_of_this_interpreter,
    libraries_of_this_interpreter_if_known,
)
from ._output import OutputCollector, PathShortener, execution_result
from ._isolation import Isolation, choose_isolation, make_undumpable
from ._workspace import Workspace
from .._records import ExecutionResult, ImageInput

__all__ = ["ChildKernel"]

class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    CLOSED = "closed"


class ChildKernel(Executor, LoggingConfigurable):
    """Runs tools in a child Jupyter kernel, one execution at a time.

    The kernel starts with ``np``, ``cv2``, ``Image`` and ``plt`` defined (``np``,
    ``cv2`` and ``plt`` import on first use, which halves the start-up CPU), in a
    scratch directory, with an environment free of secrets. Input images are bound
    as RGB PIL images ``image_clue_N`` (the file as decoded is ``image_clue_N_original``)
    and their files are in the scratch directory by that name and under ``inputs/``.
    Every image a tool shows, and every image file it writes in the scratch
    directory, is returned and also bound in the kernel as the next ``image_clue_N``;
    host paths in what it prints and raises are shortened.
    Timeouts interrupt the kernel and restart it if it does not stop; a kernel
    that dies is restarted; in both cases the input images are bound again.
    It runs in the bubblewrap sandbox where that works (``sandbox``, see
    :mod:`._isolation`), confined by Landlock either way. On Linux the kernel
    process is forked from a template that has ipykernel, numpy and PIL imported,
    inside the sandbox (see :mod:`._forkserver`; ``fork=False`` launches it
    instead). Tools run at niceness ``nice`` (10), so they cannot starve the
    notebook.

    Use it as ``async with ChildKernel() as kernel: ...`` or call :meth:`start`
    and :meth:`shutdown` yourself.
    """

    kernel_name = Unicode(
        None,
        allow_none=True,
        help="Name of the Jupyter kernelspec to run tools in. None runs ipykernel in "
        "the current interpreter, so tools see the same installed packages.",
    ).tag(config=True)
    timeout = Float(
        60.0,
        allow_none=True,
        help="Time limit of one execution, in seconds; None means no limit. "
        "execute(timeout=...) overrides it per call.",
    ).tag(config=True)
    interrupt_grace = Float(
        2.0,
        help="Seconds to wait after interrupting a timed-out execution before the "
        "kernel is restarted (code that swallows KeyboardInterrupt never stops).",
    ).tag(config=True)
    startup_timeout = Float(
        60.0, help="Seconds the kernel may take to start and import its libraries."
    ).tag(config=True)
    scratch_dir = Unicode(
        None,
        allow_none=True,
        help="Working directory of the kernel, where input images are written. "
        "None creates a new temporary directory, removed at shutdown.",
    ).tag(config=True)
    extra_env = Dict(
        {},
        help="Environment variables added to the kernel's allowlisted environment, "
        "passed as given (they are not filtered for secrets).",
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

    nice = Int(
        10,
        allow_none=True,
        help="CPU priority of the tools as a Unix niceness (0-19; higher yields more): "
        "when tools and the notebook compete for the CPU, the notebook and the session "
        "stay responsive (on Linux the kernel's scheduling group gets it too). A tool "
        "alone on the machine runs at full speed. None leaves the priority as is.",
    ).tag(config=True)
    fork = Bool(
        True,
        help="Fork kernels from a template process that has ipykernel, numpy and PIL "
        "imported (about 0.13 s of CPU per kernel, set-up included, instead of 0.8 s). "
        "Used on Linux for kernels of this interpreter (in the sandbox, with Linux 6.12+ "
        "and no scratch_dir); elsewhere, or if the template fails, kernels are launched "
        "the usual way.",
    ).tag(config=True)
    sandbox = Union(
        [Bool(), CaselessStrEnum(["auto", "true", "false"])],
        default_value="auto",
        help="Run the kernel inside a bubblewrap sandbox (Linux): no network, a read-only "
        "filesystem except the scratch directory, private bounded /tmp, its own process "
        "namespace, no view of your processes, kernels or Jupyter's secrets. \"auto\" "
        "(the default) uses it where bwrap works and otherwise runs the tools without it, "
        "saying so once (see `isolation`); True refuses to start without it; False turns "
        "it off. Without the sandbox, kernels are still confined by Landlock where the "
        "Linux kernel has it (see the README, Security model).",
    ).tag(config=True)
    bwrap_path = Unicode(
        "bwrap",
        help="The bubblewrap executable used by the sandbox: a path, or a name looked up "
        "on PATH.",
    ).tag(config=True)

    @validate("sandbox")
    def _check_sandbox(self, proposal: Any) -> bool | str:
        value = proposal["value"]  # "true"/"false" come from the command line or config
        return {"auto": "auto", "true": True, "false": False}.get(str(value).lower(), value)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state = _State.NEW
        self._start_task: asyncio.Future[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._conn: KernelConnection | None = None
        self._workspace: Workspace | None = None
        self._interpreter: dict[str, Any] = {}
        self._shorten_paths: PathShortener | None = None
        self._libraries_probe: asyncio.Future[list[str]] | None = None
        self._images: list[ImageInput] = []
        self._bound_names: list[str] = []
        self._libraries: list[str] | None = None
        self._isolation: Isolation | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> "ChildKernel":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    @property
    def pid(self) -> int | None:
        """Process id of the running kernel, or None.

        In the sandbox this is the kernel's pid as seen from here, not inside the
        sandbox's own process namespace, and not bwrap's.
        """
        return self._conn.pid if self._conn is not None else None

    @property
    def scratch_path(self) -> Path | None:
        """The kernel's working directory, once started."""
        return Path(self._workspace.scratch) if self._workspace else None

    @property
    def _can_fork(self) -> bool:
        return bool(self.fork and self.kernel_name is None and fork_supported())

    @property
    def forked(self) -> bool:
        """Whether kernel processes are forked from a template (see :attr:`fork`).

        In the sandbox that needs Landlock's signal scoping (Linux 6.12) and no
        ``scratch_dir``; known for sure once started.
        """
        if self._conn is not None:  # the running kernel: a failed fork launches instead
            return self._conn.forked
        if self._isolation is None:
            return self._can_fork and self.sandbox is not True
        return self._can_fork and (not self._isolation.sandboxed or self._isolation.shared)

    @property
    def isolation(self) -> Isolation | None:
        """How the tools are confined (see :class:`~._isolation.Isolation`), once
        started; ``isolation.describe()`` is the one line to show the user."""
        return self._isolation

    @property
    def sandboxed(self) -> bool:
        """Whether the tools run in the sandbox (known once started)."""
        return bool(self._isolation and self._isolation.sandboxed)

    @property
    def is_ready(self) -> bool:
        """True once :meth:`start` finished and until :meth:`shutdown`."""
        return self._state is _State.READY

    @property
    def python_version(self) -> str | None:
        """Version of the Python that runs the tools, e.g. ``"3.11.7"``.

        Known before :meth:`start` when the kernel runs this interpreter
        (``kernel_name`` None); for a named kernelspec, None until it started.
        """
        if self._interpreter.get("version"):
            return self._interpreter["version"]
        return platform.python_version() if self.kernel_name is None else None

    @property
    def python_executable(self) -> str | None:
        """Path of the Python that runs the tools; like :attr:`python_version`."""
        if self._interpreter.get("executable"):
            return self._interpreter["executable"]
        return sys.executable if self.kernel_name is None else None

    async def start(self) -> None:
        """Start the kernel and import the preloaded libraries, if not done yet.

        Safe to call concurrently and repeatedly; every caller waits for the same
        start.

        Raises
        ------
        KernelStartError
            If the kernel cannot start, the sandbox is asked for but bubblewrap is
            missing or unusable, or this kernel was already shut down.
        """
        if self._state is _State.READY:
            return
        if self._state is _State.CLOSED:
            raise KernelStartError("This kernel was shut down; create a new ChildKernel.")
        if self._start_task is None:
            self._state = _State.STARTING
            self._start_task = asyncio.ensure_future(self._first_start())
            if self.kernel_name is None and libraries_of_this_interpreter_if_known() is None:
                # Probed meanwhile (~20-100 ms of package metadata), so that a session
                # given this kernel does not wait for it before its first request.
                self._libraries_probe = asyncio.ensure_future(
                    asyncio.to_thread(libraries_of_this_interpreter))
        task = self._start_task
        try:
            # shield: one cancelled waiter must not cancel the start others wait for.
            await asyncio.shield(task)
        except KernelStartError:
            if self._start_task is task:
                self._start_task = None
                self._state = _State.NEW
            raise

    async def choose_isolation(self) -> Isolation:
        """How the tools will be confined (see :attr:`isolation`), decided without
        starting the kernel (the sandbox check runs ``bwrap`` once per process).

        Raises
        ------
        KernelStartError
            If ``sandbox`` is True and the sandbox cannot be built here.
        """
        if self._isolation is None:
            self._isolation = await choose_isolation(
                self.sandbox, self.bwrap_path, can_share=self._can_fork and not self.scratch_dir)
        return self._isolation

    async def network_access(self) -> bool:
        """Whether tools can reach the network (False in the sandbox)."""
        return not (await self.choose_isolation()).sandboxed

    async def _first_start(self) -> None:
        # Checked before anything is made, so a missing bwrap fails at once and cleanly.
        isolation = await self.choose_isolation()
        if isolation.kind == "landlock":
            make_undumpable()
        self._workspace = Workspace.create(self.scratch_dir, isolation, fork=self._can_fork,
                                           memory_limit=self.memory_limit)
        try:
            await self._launch()
        except BaseException:
            await self._teardown()
            self._remove_dirs()
            raise
        if self._interpreter:
            self.log.info(describe_interpreter(
                self._interpreter, kernel_name=self.kernel_name, sandboxed=isolation.sandboxed
            ))
        if self._state is _State.STARTING:  # not if shut down meanwhile
            self._state = _State.READY

    async def _launch(self) -> None:
        """Start one kernel process, connect to it and run the bootstrap."""
        workspace = self._workspace
        assert workspace is not None
        self._conn = await KernelConnection.launch(
            kernel_name=self.kernel_name,
            launch=workspace.new_launch(os.environ, self.extra_env),
            cwd=workspace.scratch,
            startup_timeout=self.startup_timeout,
            config={
                "max_images": self.max_images,
                "max_image_pixels": self.max_image_pixels,
                "memory_limit": self.memory_limit,
                "file_size_limit": self.file_size_limit,
                "nice": self.nice,
            },
            stopped=lambda: self._state is _State.CLOSED,
            log=self.log,
        )
        self._interpreter = self._conn.interpreter or self._interpreter
        scratch = workspace.scratch
        self._shorten_paths = PathShortener(
            self._interpreter.get("paths") or {},
            [scratch, os.path.realpath(scratch), workspace.kernel_path(scratch, forked=True)])

    async def _teardown(self) -> None:
        """Kill the kernel and every process it started; keep the directories."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _remove_dirs(self) -> None:
        if self._workspace is not None:  # kept, so scratch_path still answers
            self._workspace.remove()

    async def shutdown(self) -> None:
        """Kill the kernel and all its processes and remove the directories we made.

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
            self._remove_dirs()

    async def restart(self) -> None:
        """Replace the kernel by a fresh one: all variables and images are gone."""
        await self.start()
        async with self._get_lock():
            self._images, self._bound_names = [], []
            await self._relaunch(rebind=False)

    async def _relaunch(self, *, rebind: bool = True) -> None:
        await self._teardown()
        await self._launch()
        if rebind and self._images:
            await self._bind(self._images)

    async def interrupt(self) -> None:
        """Send Ctrl-C to the running execution, if any."""
        if self._conn is not None and self._state is _State.READY:
            await self._conn.interrupt()

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # -- the Executor interface -----------------------------------------------------

    async def bind_images(self, images: Sequence[ImageInput]) -> list[str]:
        """Write the images to the scratch directory and bind them as ``image_clue_N``.

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
        assert self._workspace is not None and self._conn is not None
        items = self._workspace.write_inputs(images, forked=self._conn.forked)
        try:
            names = await self._conn.call(f"bind_inputs({items!r})")
        except KernelError as exc:
            raise ImageInputError(
                f"The kernel could not open the input images ({exc}).",
                source=", ".join(image.name for image in images),
            ) from exc
        self._bound_names = names
        return names

    async def importable_libraries(self) -> list[str]:
        """Notable libraries the tools can import, as ``"name version"`` (cached).

        When the kernel runs this interpreter (``kernel_name`` None) the answer
        comes from this process at once, without waiting for the kernel to start;
        a named kernelspec is asked once it has started.
        """
        if self._libraries is None:
            if self.kernel_name is None:
                # A thread: the first probe reads package metadata for ~0.1 s.
                self._libraries = (libraries_of_this_interpreter_if_known()
                                   or await (self._libraries_probe
                                             or asyncio.to_thread(libraries_of_this_interpreter)))
            else:
                await self.start()
                async with self._get_lock():
                    assert self._conn is not None
                    self._libraries = await self._conn.call(
                        f"probe_libraries({NOTABLE_LIBRARIES!r})"
                    )
        return list(self._libraries)

    async def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        """Run ``code`` and collect what it printed, showed and raised.

        Never raises for what the code did: errors, timeouts and kernel deaths are
        reported in :attr:`ExecutionResult.status` and ``note``.
        """
        await self.start()
        async with self._get_lock():
            if self._conn is None and self._state is _State.READY:
                # An earlier restart failed half way; try once more before running.
                try:
                    await self._relaunch()
                except Exception as exc:  # noqa: BLE001 - a status, as for the tool itself
                    await self._teardown()
                    return ExecutionResult("died", note=(
                        f"The kernel could not be started again ({type(exc).__name__}: {exc}); "
                        "the tool was not run. The next tool tries again."))
            return await self._execute(code, self.timeout if timeout is None else timeout)

    async def _execute(self, code: str, limit: float | None) -> ExecutionResult:
        assert self._conn is not None
        started = time.monotonic()
        collected = OutputCollector(self.max_output_chars, self.max_images, self.max_image_pixels,
                                    self._shorten_paths)
        ran = await self._conn.run(code, collected, limit=limit, grace=self.interrupt_grace)
        await collected.finish()  # check and decode the images off the event loop
        exit_clause, restart_failed = "", None
        if ran.outcome in ("stuck", "died"):
            # Variables are lost either way; a fresh kernel gets the input images back.
            exit_clause = self._conn.exit_description() if ran.outcome == "died" else ""
            try:
                await self._relaunch()
            except Exception as exc:  # noqa: BLE001 - a tool's fault is a turn status
                # A full disk, or inputs/ replaced by the tool: the next execute retries.
                await self._teardown()
                restart_failed = exc
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
        if restart_failed is not None:
            result.status = "died"
            result.note = (
                f"The kernel{' process died' + exit_clause if ran.outcome == 'died' else ' had to be restarted'}"
                f" and could not be started again ({type(restart_failed).__name__}: "
                f"{restart_failed}); the next tool starts a fresh kernel, without variables.")
        return result
