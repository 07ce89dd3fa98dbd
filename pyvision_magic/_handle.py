"""Sessions as the notebook holds them: each with its kernel, view and forks.

A :class:`Workspace` owns the private loop (see :mod:`._runner`), the kernel
pool and every :class:`SessionHandle` made in one IPython shell. All kernel
work of a handle runs on that loop; the widget callbacks only submit work and
get a future back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import sys
from collections.abc import Callable
from typing import Any

from ._console import plural
from ._errors import ConfigError
from ._runner import LoopThread
from ._transcript import Transcript, Turn

__all__ = ["Workspace", "SessionHandle"]

#: What a copied cell says of an earlier tool it brings that did not end well there.
_ENDED_BADLY = {"error": " (in its kernel it raised an error)",
                "timeout": " (in its kernel it timed out)",
                "died": " (in its kernel it ended when the kernel died)",
                "stopped": " (in its kernel it was stopped)"}


class Workspace:
    """The loop, the kernels and the sessions of one shell.

    ``settings`` is the :class:`~pyvision_magic.magics.PyVision` configurable
    (``max_kernels``, ``use_pool``); ``make_model`` returns a live model for
    forks of loaded sessions, or None when no endpoint is configured.
    """

    def __init__(self, settings: Any, make_model: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self.make_model = make_model
        self.runner = LoopThread()
        self.handles: list[SessionHandle] = []
        self._ids = itertools.count(1)
        self._pool: Any = None
        self._models: list[Any] = []
        self._told_isolation = False
        self._told_bundle = False

    # -- kernels -------------------------------------------------------------

    def prestart(self) -> concurrent.futures.Future[None]:
        """Start filling the kernel pool in the background."""
        return self.runner.submit(self._pool_start())

    async def _pool_start(self) -> None:
        pool = self._get_pool()
        if pool is not None:
            await pool.start()

    def _get_pool(self) -> Any:
        if not getattr(self.settings, "use_pool", True):
            return None
        if self._pool is None:
            try:
                from .kernel._pool import KernelPool
            except ImportError:
                return None
            gateway = getattr(self.settings, "gateway_url", None)
            self._pool = KernelPool(parent=self.settings, **({"gateway_url": gateway} if gateway else {}))
        return self._pool

    async def new_kernel(self, sandbox: bool | str = "auto", gateway: str | None = None) -> Any:
        """A kernel for a new session: from the pool when one is warm, else a new one.

        ``sandbox`` True or False (the cell's ``--sandbox``, ``--no-sandbox`` or
        ``PyVision.sandbox``) gets a kernel of its own, started now, so a missing
        bubblewrap is a usage error of the cell; "auto" takes a pooled one.
        """
        from .kernel._child import ChildKernel

        gateway = gateway or getattr(self.settings, "gateway_url", None)
        pool = self._get_pool() if sandbox == "auto" else None
        if gateway and (pool is None or pool.gateway_url != gateway):
            from .kernel._gateway import GatewayKernel

            kernel = GatewayKernel(parent=self.settings, url=gateway)
            await kernel.start()  # a refused token is the cell's usage error, said now
        elif sandbox != "auto":
            kernel = ChildKernel(parent=self.settings, sandbox=sandbox)
            await kernel.start()
        else:
            pool = self._get_pool()
            # A kernel still starting is fine: the session sends its first request
            # while the start finishes.
            kernel = (await pool.acquire(wait=False) if pool is not None
                      else ChildKernel(parent=self.settings))
            await kernel.choose_isolation()  # known before the session starts, to be told
        await self._evict()
        return kernel

    @staticmethod
    def isolation_notice(kernel: Any) -> str:
        """The line a session's header shows when its tools run unsandboxed, else ""."""
        isolation = getattr(kernel, "isolation", None)
        if isolation is None or isolation.sandboxed:
            return ""
        return f"Tools run {isolation.describe()}."

    def static_only(self) -> bool:
        """True when the widget front end is missing: sessions show their static copy.

        Said once, on stderr, with what to do.
        """
        from .ui import bundle_problem

        problem = bundle_problem()
        if problem and not self._told_bundle:
            self._told_bundle = True
            print(f"pyvision: {problem}.", file=sys.stderr)
        return problem is not None

    def tell_isolation(self, kernel: Any, stream: Any = None) -> None:
        """Say once, on stderr, that the tools run unsandboxed, and why."""
        isolation = getattr(kernel, "isolation", None)
        if isolation is None or isolation.sandboxed or self._told_isolation:
            return
        self._told_isolation = True
        print(f"pyvision: tools run {isolation.describe()}.", file=stream or sys.stderr)

    async def _evict(self) -> None:
        """Shut down the kernels of the oldest idle sessions beyond ``max_kernels``."""
        limit = max(int(getattr(self.settings, "max_kernels", 8)), 1)
        live = [h for h in self.handles if h.kernel is not None]
        for handle in live[: max(len(live) - limit + 1, 0)]:
            if not handle.running and not handle.busy:
                await handle._async_shutdown_kernel()

    def remember_model(self, model: Any) -> None:
        if model not in self._models:
            self._models.append(model)

    def add(self, handle: "SessionHandle") -> "SessionHandle":
        handle.id = next(self._ids)
        if handle.view is not None:
            handle.view.session_id = handle.id
        self.handles.append(handle)
        return handle

    def get(self, ident: int) -> "SessionHandle":
        for handle in self.handles:
            if handle.id == ident:
                return handle
        raise ConfigError(f"There is no session {ident}; `%pyvision kernels` lists them.")

    async def _async_close(self) -> None:
        for handle in self.handles:
            if handle.running:
                handle.session.stop()
        await asyncio.gather(*(h._async_shutdown_kernel() for h in self.handles),
                             return_exceptions=True)
        if self._pool is not None:
            await self._pool.shutdown()
            self._pool = None
        await asyncio.gather(*(m.aclose() for m in self._models), return_exceptions=True)

    def close(self) -> None:
        """Stop every session, shut down every kernel, stop the loop. Idempotent."""
        if self.runner.running:
            self.runner.close(self._async_close())


class SessionHandle:
    """A session of the notebook: answer, status, transcript, kernel, view, forks.

    This is what ``%%pyvision -o NAME`` stores. Its methods may be called from
    the notebook: :meth:`rerun` and :meth:`fork` block until done.
    """

    def __init__(self, workspace: Workspace, session: Any, view: Any = None, *,
                 kernel: Any = None, fork_of: tuple["SessionHandle", int] | None = None) -> None:
        self.workspace = workspace
        self.session = session
        self.view = view
        #: The child kernel (None once shut down, or for a loaded session until Run).
        self.kernel = kernel
        #: ``(parent handle, turn index)`` for a fork.
        self.fork_of = fork_of
        self.forks: list[SessionHandle] = []
        self.id = 0
        self.running = False
        self.busy = False
        #: Called with this handle after each run, rerun or fork ends (static rendering).
        self.on_change: Callable[[SessionHandle], Any] | None = None
        self._fresh_kernel_needed = kernel is None
        if view is not None:
            view.attach(session)
            view.on_run(self._run_clicked)
            view.on_fork(self._fork_clicked)
            view.on_stop(self.stop)
            view.on_copy(self.cell_source)

    # -- what users read -----------------------------------------------------

    @property
    def transcript(self) -> Transcript:
        return self.session.transcript

    @property
    def answer(self) -> str | None:
        return self.transcript.answer

    @property
    def status(self) -> str:
        return self.transcript.status

    @property
    def root(self) -> "SessionHandle":
        return self.fork_of[0].root if self.fork_of else self

    def __repr__(self) -> str:
        answer = f", answer={self.answer!r}" if self.answer is not None else ""
        return (f"<pyvision session {self.id}: {self.status}, "
                f"{plural(len(self.transcript.turns), 'turn')}{answer}>")

    # -- running ---------------------------------------------------------------

    async def _async_run(self) -> Transcript:
        self.running = True
        try:
            return await self.session._async_run()
        finally:
            self.running = False
            if self.fork_of is not None:
                # The cell that ran the root session refreshes its own static copy once.
                self._changed()

    def stop(self) -> None:
        """Ask the running session to end now (status ``stopped``); safe from any thread."""
        self.session.stop()
        for fork in self.forks:
            if fork.running:
                fork.stop()

    def _changed(self) -> None:
        root = self.root
        if root.on_change is not None:
            try:
                root.on_change(root)
            except Exception as exc:  # the live view matters more than the saved copy
                self.session.log.debug("static rendering failed: %s", exc)

    async def _ensure_kernel(self, index: int) -> None:
        """Give the session a kernel whose state comes from the turns before ``index``."""
        if not self._fresh_kernel_needed and self.kernel is not None:
            return
        kernel = await self.workspace.new_kernel(gateway=getattr(self.kernel, "url", None))
        self.kernel = self.session.executor = kernel
        await kernel.bind_images(self.transcript.images)
        await self._bind_videos(kernel)
        for turn in self.transcript.turns[:index]:
            if turn.code and turn.exec_status not in (None, "skipped", "stopped"):
                await kernel.execute(turn.code, timeout=self.session.timeout)
        self._fresh_kernel_needed = False

    async def _async_rerun(self, index: int, code: str) -> Turn:
        if self.running:
            raise ConfigError("The session is still running; stop it first.")
        if not code.strip():
            raise ConfigError("The code is empty; write some code to run.")
        self.busy = True
        try:
            await self._ensure_kernel(index)
            return await self.session._async_rerun(index, code)
        finally:
            self.busy = False
            self._changed()

    def rerun(self, index: int, code: str | None = None) -> Turn:
        """Run ``code`` (default: the turn's own) as turn ``index``, replacing its outputs."""
        code = self.session._turn(index).code if code is None else code
        future = self.workspace.runner.submit(self._async_rerun(index, code or ""))
        return self.workspace.runner.wait(future)

    def _run_clicked(self, index: int, code: str) -> concurrent.futures.Future[Turn]:
        return self.workspace.runner.submit(self._async_rerun(index, code))

    async def _async_fork(self, index: int, code: str) -> "SessionHandle":
        from ._session import Session
        from ._replay import ReplayModel

        if self.running:
            raise ConfigError("The session is still running; stop it first.")
        model = self.session.model
        if isinstance(model, ReplayModel) and model.transcript is self.transcript:
            # A loaded session: a live model if one is configured, else the recording.
            live = self.workspace.make_model() if self.workspace.make_model else None
            model = live or ReplayModel(Transcript.from_dict(self.transcript.to_dict()))
            self.workspace.remember_model(model)
        kernel = await self.workspace.new_kernel(gateway=getattr(self.kernel, "url", None))
        child: Session = self.session.fork(index, code, model=model, executor=kernel)
        view = None
        if self.view is not None:
            from .ui import SessionWidget

            view = SessionWidget(child.transcript.question, child.transcript.images,
                                 child.transcript.model, title=f"Fork from turn {index + 1}",
                                 fork_of=index, videos=child.transcript.videos)
            self.view.add_fork(view, index)
        handle = SessionHandle(self.workspace, child, view, kernel=kernel, fork_of=(self, index))
        self.workspace.add(handle)
        self.forks.append(handle)
        await handle._async_run()
        return handle

    def fork(self, index: int, code: str | None = None) -> "SessionHandle":
        """Continue from turn ``index`` with ``code``; blocks until the fork ends."""
        code = self.session._turn(index).code if code is None else code
        future = self.workspace.runner.submit(self._async_fork(index, code or ""))
        return self.workspace.runner.wait(future, on_interrupt=self._stop_forks)

    def _stop_forks(self) -> None:
        for fork in self.forks:
            fork.stop()

    def _fork_clicked(self, index: int, code: str) -> concurrent.futures.Future["SessionHandle"]:
        return self.workspace.runner.submit(self._async_fork(index, code))

    def cell_source(self, index: int, code: str) -> str:
        """``code`` as a notebook cell: the tool kernel's imports and images first.

        The images come from ``%pyvision images``: the inputs, and the images
        earlier turns bound as ``image_clue_N``. Earlier tools that define a
        name the code uses (``mask``, ``def measure``) come next, each under a
        comment naming its turn, the names it gives, and how it ended if not well.
        """
        from ._names import turns_needed

        t = self.transcript
        names = [f"image_clue_{i}" for i in range(len(t.images))]
        for turn in t.turns[:index]:
            names += [o.variable for o in turn.outputs if o.kind == "image" and o.variable]
        known = {"np", "plt", "Image", "cv2", *names}
        ran = [turn for turn in t.turns[:index]
               if turn.code and turn.exec_status not in (None, "skipped")]
        earlier = [(ran[i], given) for i, given in
                   turns_needed([turn.code for turn in ran], code, known)]
        lines = [f"# Turn {index + 1}'s tool from pyvision session {self.id}, set up as in "
                 "its kernel.",
                 "import numpy as np", "import matplotlib.pyplot as plt", "from PIL import Image",
                 "import cv2"]
        if names:
            lines.append(f"{', '.join(names)}, = %pyvision images {self.id} {index + 1}")
        parts = ["\n".join(lines)]
        for turn, given in earlier:
            ended = _ENDED_BADLY.get(turn.exec_status or "", "")
            parts.append(f"# Turn {turn.index + 1}'s tool, for {', '.join(given)}{ended}:\n"
                         f"{(turn.code or '').rstrip()}")
        if earlier:
            parts.append(f"# Turn {index + 1}'s tool:\n{code}")
        else:
            parts.append(code)
        return "\n\n".join(parts)

    # -- kernel ----------------------------------------------------------------

    async def _async_shutdown_kernel(self) -> None:
        kernel, self.kernel = self.kernel, None
        self._fresh_kernel_needed = True
        if kernel is not None:
            await kernel.shutdown()

    def shutdown_kernel(self) -> None:
        """Shut the kernel down; a later Run starts a new one and replays earlier turns."""
        self.workspace.runner.wait(self.workspace.runner.submit(self._async_shutdown_kernel()))

    async def _async_restart_kernel(self) -> None:
        if self.kernel is None:
            return
        await self.kernel.restart()
        await self.kernel.bind_images(self.transcript.images)
        await self._bind_videos(self.kernel)

    async def _bind_videos(self, kernel: Any) -> None:
        """Bind the clips as ``video_clue_N`` again (see ``_video_session``)."""
        if self.transcript.videos:
            from ._video_session import bind_videos

            await bind_videos(kernel, self.transcript.videos,
                              max_bytes=self.session.max_video_bytes)

    def restart_kernel(self) -> None:
        """Restart the kernel: variables from the tools are gone, the images are bound again."""
        self.workspace.runner.wait(self.workspace.runner.submit(self._async_restart_kernel()))
