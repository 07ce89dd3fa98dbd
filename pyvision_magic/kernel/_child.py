"""The child Jupyter kernel that runs the model's tools.

How the tools are confined, and what each mode protects, is set out in
:mod:`._isolation` (and the README's Security model).
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from traitlets import Bool, CaselessStrEnum, Dict, Int, Unicode, Union, validate

from .._errors import ImageInputError, KernelError
from ._base import KernelExecutor
from ._connection import KernelConnection
from ._forkserver import fork_supported
from ._interpreter import (
    NOTABLE_LIBRARIES,
    describe_interpreter,
    libraries_of_this_interpreter,
    libraries_of_this_interpreter_if_known,
)
from ._output import PathShortener
from ._isolation import Isolation, choose_isolation, make_undumpable
from ._workspace import Workspace
from .._records import ImageInput

__all__ = ["ChildKernel"]


class ChildKernel(KernelExecutor):
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
        self._workspace: Workspace | None = None
        self._shorten_paths: PathShortener | None = None
        self._libraries_probe: asyncio.Future[list[str]] | None = None
        self._isolation: Isolation | None = None

    @property
    def _conn(self) -> KernelConnection | None:
        """The running kernel process's connection, or None."""
        return self._running  # type: ignore[return-value]

    # -- lifecycle -----------------------------------------------------------------

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

    def _starting(self) -> None:
        if self.kernel_name is None and libraries_of_this_interpreter_if_known() is None:
            # Probed meanwhile (~20-100 ms of package metadata), so that a session
            # given this kernel does not wait for it before its first request.
            self._libraries_probe = asyncio.ensure_future(
                asyncio.to_thread(libraries_of_this_interpreter))

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

    async def _launch(self) -> None:
        """Start one kernel process, connect to it and run the bootstrap."""
        workspace = self._workspace
        assert workspace is not None
        conn = await KernelConnection.launch(
            kernel_name=self.kernel_name,
            launch=workspace.new_launch(os.environ, self.extra_env),
            cwd=workspace.scratch,
            startup_timeout=self.startup_timeout,
            config={**self._bootstrap_config(), "nice": self.nice},
            stopped=self._closed,
            log=self.log,
        )
        self._running = conn
        self._interpreter = conn.interpreter or self._interpreter
        scratch = workspace.scratch
        self._shorten_paths = PathShortener(
            self._interpreter.get("paths") or {},
            [scratch, os.path.realpath(scratch), workspace.kernel_path(scratch, forked=True)])

    def _path_shortener(self) -> PathShortener | None:
        return self._shorten_paths

    def _remove_dirs(self) -> None:
        if self._workspace is not None:  # kept, so scratch_path still answers
            self._workspace.remove()

    async def _after_shutdown(self) -> None:
        self._remove_dirs()

    # -- the Executor interface -----------------------------------------------------

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
                self._libraries = await self._probe_libraries(NOTABLE_LIBRARIES)
        return list(self._libraries)
