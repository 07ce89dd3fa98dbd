"""Child kernels kept for a whole evaluation run and reused from task to task.

Even a forked kernel costs about 0.1 s of CPU to start (0.7 s launched), and
cv2 and matplotlib load again in each new kernel when a tool first uses them,
so a run keeps one kernel per concurrent session and, between tasks, resets it
instead of starting a new process: the user namespace is put
back as it was after start-up, figures are closed, the working directory is
restored and emptied. A kernel whose tool timed out or died is restarted.
``KernelPool`` hands kernels out but never takes them back, so it does not fit.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from typing import Any

from .._executor import Executor
from .._records import ExecutionResult, ImageInput

__all__ = ["ReusedKernel", "SharedLibraries"]

# Run once, before the first task: remember the fresh namespace and directory.
_SNAPSHOT = """\
import builtins as __b
__b.__pyvision_eval_fresh__ = dict(get_ipython().user_ns)
__b.__pyvision_eval_cwd__ = __import__('os').getcwd()
del __b"""

# Run between tasks: back to the snapshot.
_RESET = """\
def __pyvision_eval_reset():
    import builtins, gc, os, sys
    shell = get_ipython()
    ns = shell.user_ns
    fresh = builtins.__pyvision_eval_fresh__
    for name in [name for name in ns if name not in fresh]:
        del ns[name]
    ns.update(fresh)
    # Close figures only if a tool used pyplot: importing it here would undo the
    # kernel's lazy start-up for every task.
    if 'matplotlib.pyplot' in sys.modules:
        sys.modules['matplotlib.pyplot'].close('all')
    os.chdir(builtins.__pyvision_eval_cwd__)
    try:
        shell.displayhook.flush()  # drops the output cache, then collects garbage
    except Exception:
        gc.collect()
__pyvision_eval_reset()"""


class SharedLibraries:
    """The library list for the prompt, probed once on the first kernel that is ready.

    Every session of a run gets the same system prompt, and sessions whose own
    kernel is still starting need not wait for it.
    """

    def __init__(self) -> None:
        self._future: asyncio.Future[list[str]] | None = None

    def offer(self, kernel: Any) -> None:
        """Probe ``kernel`` unless another kernel already does."""
        if self._future is None:
            self._future = asyncio.ensure_future(kernel.importable_libraries())

    async def get(self, kernel: Any) -> list[str]:
        self.offer(kernel)
        assert self._future is not None
        try:
            return list(await asyncio.shield(self._future))
        except Exception:
            self._future = None  # that kernel failed; the next one probes again
            raise


class ReusedKernel(Executor):
    """A :class:`ChildKernel` as seen by one session at a time, reset between sessions.

    The runner owns the kernel: :meth:`shutdown` from a session does nothing,
    :meth:`close` ends it.
    """

    def __init__(self, kernel: Any, libraries: SharedLibraries) -> None:
        self.kernel = kernel
        self.libraries = libraries
        self._snapshot_taken = False
        self._starting: asyncio.Future[None] | None = None
        self.needs_restart = False
        #: The runner's background start of this kernel, if any.
        self.warmup: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Start the kernel and take the namespace snapshot; concurrent calls share one start."""
        if self._starting is None or (self._starting.done() and not self._snapshot_taken):
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        await self.kernel.start()
        if not self._snapshot_taken:
            result = await self.kernel.execute(_SNAPSHOT, timeout=30)
            self._snapshot_taken = result.status == "ok"
            self.libraries.offer(self.kernel)

    @property
    def is_ready(self) -> bool:
        return bool(self.kernel.is_ready and self._snapshot_taken)

    @property
    def scratch_path(self) -> Any:
        """The kernel's working folder, where input videos are copied (see ``_video_session``)."""
        return self.kernel.scratch_path

    async def bind_images(self, images: Sequence[ImageInput]) -> list[str]:
        return await self.kernel.bind_images(images)

    async def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        result = await self.kernel.execute(code, timeout=timeout)
        if result.status in ("timeout", "died"):
            # The kernel may have been restarted inside: its snapshot is gone.
            self.needs_restart = True
        return result

    async def interrupt(self) -> None:
        await self.kernel.interrupt()

    async def restart(self) -> None:
        await self.kernel.restart()
        self._snapshot_taken = False
        await self.start()

    async def shutdown(self) -> None:
        """Sessions do not own this kernel; see :meth:`close`."""

    async def importable_libraries(self) -> list[str]:
        return await self.libraries.get(self.kernel)

    async def prepare_next(self) -> None:
        """Make the kernel fresh for the next task: reset it, or restart it if that fails."""
        if not self.needs_restart and self.kernel.is_ready and self._snapshot_taken:
            result = await self.kernel.execute(_RESET, timeout=30)
            if result.status == "ok":
                self._clear_scratch()
                return
        self.needs_restart = False
        await self.restart()
        self._clear_scratch()

    def _clear_scratch(self) -> None:
        folder = self.kernel.scratch_path
        if folder is None or not folder.is_dir():
            return
        for entry in os.scandir(folder):
            if entry.name == "inputs":
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass

    async def close(self) -> None:
        """Shut the kernel down (and wait for a start still in progress)."""
        await self.kernel.shutdown()
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
