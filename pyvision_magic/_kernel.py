"""The child Jupyter kernel that runs the model's tools."""

from __future__ import annotations

import ast
import asyncio
import enum
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from traitlets import Dict, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from . import _kernel_bootstrap
from ._errors import ImageInputError, KernelError, KernelStartError
from ._executor import Executor
from ._kernel_env import MARKER_VARIABLE, child_environment, kernel_tree, kill_processes
from ._kernel_output import OutputCollector, collect_message
from ._records import ExecutionResult, ImageInput

__all__ = ["ChildKernel"]

# The name under which the current interpreter is offered as a kernelspec.
_THIS_INTERPRETER = "pyvision-this-interpreter"
_MIME_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}
# Kernel deaths are noticed within this many seconds while waiting for output.
_POLL = 0.2
# Libraries worth telling the model about: (import name, distribution names).
_NOTABLE_LIBRARIES: list[tuple[str, Any]] = [
    ("numpy", "numpy"),
    ("cv2", ["opencv-python-headless", "opencv-python", "opencv-contrib-python"]),
    ("PIL", "pillow"),
    ("matplotlib", "matplotlib"),
    ("scipy", "scipy"),
    ("skimage", "scikit-image"),
    ("sklearn", "scikit-learn"),
    ("pandas", "pandas"),
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("pytesseract", "pytesseract"),
    ("easyocr", "easyocr"),
    ("imageio", "imageio"),
    ("shapely", "shapely"),
    ("networkx", "networkx"),
    ("sympy", "sympy"),
]


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    CLOSED = "closed"


class _ThisInterpreterSpecs(KernelSpecManager):
    """Kernelspecs plus one that runs ipykernel in the parent's own interpreter.

    The installed ``python3`` spec may point at another Python; tools must see the
    packages of the environment the user runs pyvision from.
    """

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name == _THIS_INTERPRETER:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name="pyvision tools",
                language="python",
                interrupt_mode="signal",
                metadata={},
            )
        return super().get_kernel_spec(kernel_name)


class ChildKernel(Executor, LoggingConfigurable):
    """Runs tools in a child Jupyter kernel, one execution at a time.

    The kernel starts with ``np``, ``cv2``, ``Image`` and ``plt`` imported, in a
    scratch directory, with an environment free of secrets. Every image a tool
    shows is returned and also bound in the kernel as the next ``image_clue_N``.
    Timeouts interrupt the kernel and restart it if it does not stop; a kernel
    that dies is restarted; in both cases the input images are bound again.

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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state = _State.NEW
        self._start_task: asyncio.Future[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._km: AsyncKernelManager | None = None
        self._client: Any = None
        self._marker = ""
        self._private_dir: str | None = None
        self._scratch: str | None = None
        self._owns_scratch = False
        self._images: list[ImageInput] = []
        self._bound_names: list[str] = []
        self._libraries: list[str] | None = None
        self._launches = 0

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> "ChildKernel":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    @property
    def pid(self) -> int | None:
        """Process id of the running kernel, or None."""
        provisioner = getattr(self._km, "provisioner", None)
        return getattr(provisioner, "pid", None)

    @property
    def scratch_path(self) -> Path | None:
        """The kernel's working directory, once started."""
        return Path(self._scratch) if self._scratch else None

    @property
    def is_ready(self) -> bool:
        """True once :meth:`start` finished and until :meth:`shutdown`."""
        return self._state is _State.READY

    async def start(self) -> None:
        """Start the kernel and import the preloaded libraries, if not done yet.

        Safe to call concurrently and repeatedly; every caller waits for the same
        start.

        Raises
        ------
        KernelStartError
            If the kernel cannot start, or this kernel was already shut down.
        """
        if self._state is _State.READY:
            return
        if self._state is _State.CLOSED:
            raise KernelStartError("This kernel was shut down; create a new ChildKernel.")
        if self._start_task is None:
            self._state = _State.STARTING
            self._start_task = asyncio.ensure_future(self._first_start())
        task = self._start_task
        try:
            # shield: one cancelled waiter must not cancel the start others wait for.
            await asyncio.shield(task)
        except KernelStartError:
            if self._start_task is task:
                self._start_task = None
                self._state = _State.NEW
            raise

    async def _first_start(self) -> None:
        self._private_dir = tempfile.mkdtemp(prefix="pyvision-kernel-")
        if self.scratch_dir:
            os.makedirs(self.scratch_dir, exist_ok=True)
            self._scratch = self.scratch_dir
        else:
            self._scratch = tempfile.mkdtemp(prefix="pyvision-scratch-")
            self._owns_scratch = True
        try:
            await self._launch()
        except BaseException:
            await self._teardown()
            self._remove_dirs()
            raise
        if self._state is _State.STARTING:  # not if shut down meanwhile
            self._state = _State.READY

    async def _launch(self) -> None:
        """Start one kernel process, connect to it and run the bootstrap."""
        assert self._private_dir and self._scratch
        self._launches += 1
        self._marker = uuid.uuid4().hex
        base = os.path.join(self._private_dir, f"k{self._launches}")
        km = AsyncKernelManager(
            kernel_name=self.kernel_name or _THIS_INTERPRETER,
            kernel_spec_manager=_ThisInterpreterSpecs(),
            transport="ipc",
            ip=base,
            connection_file=base + ".json",
        )
        env = child_environment(os.environ, self.extra_env)
        env[MARKER_VARIABLE] = self._marker
        self._km = km
        try:
            with open(base + ".log", "ab") as log:
                await km.start_kernel(
                    env=env,
                    cwd=self._scratch,
                    # The history database is useless here and locks up with many kernels.
                    extra_arguments=["--HistoryManager.enabled=False"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
        except NoSuchKernel as exc:
            raise KernelStartError(
                f"There is no Jupyter kernel named {self.kernel_name!r}; run "
                "`jupyter kernelspec list` to see the names, or leave kernel_name unset."
            ) from exc
        except Exception as exc:
            raise KernelStartError(
                f"The child kernel could not be launched ({exc}); check that ipykernel "
                "is installed in the kernel's Python."
            ) from exc
        client = km.client()
        client.start_channels()
        self._client = client
        try:
            await client.wait_for_ready(timeout=self.startup_timeout)
        except RuntimeError as exc:
            raise KernelStartError(
                f"The child kernel did not become ready within {self.startup_timeout:g} s; "
                f"its log is {base}.log."
            ) from exc
        config = {
            "max_images": self.max_images,
            "max_image_pixels": self.max_image_pixels,
            "memory_limit": self.memory_limit,
            "file_size_limit": self.file_size_limit,
        }
        source = Path(_kernel_bootstrap.__file__).read_text(encoding="utf-8")
        boot = (
            "def _pyvision_boot(source, config):\n"
            "    import sys, types\n"
            "    module = types.ModuleType('_pyvision_child')\n"
            "    sys.modules['_pyvision_child'] = module\n"
            "    exec(compile(source, '<pyvision_child>', 'exec'), module.__dict__)\n"
            "    module.install(config)\n"
            "try:\n"
            f"    _pyvision_boot({source!r}, {config!r})\n"
            "finally:\n"
            "    del _pyvision_boot\n"
        )
        reply = await self._silent(boot, timeout=self.startup_timeout)
        if reply["status"] != "ok":
            raise KernelStartError(
                "The child kernel started but could not set itself up "
                f"({reply.get('ename')}: {reply.get('evalue')})."
            )

    async def _teardown(self) -> None:
        """Kill the kernel and every process it started; keep the directories."""
        km, client = self._km, self._client
        self._km = self._client = None
        root, marker = getattr(getattr(km, "provisioner", None), "pid", None), self._marker
        kill_processes(lambda: kernel_tree(root, marker))
        if client is not None:
            client.stop_channels()
        if km is not None:
            try:
                await km.shutdown_kernel(now=True)
            except Exception as exc:  # already gone is fine; say so in the log
                self.log.debug("kernel shutdown: %s", exc)
        # Orphans of the dead kernel carry the marker; catch late forks too.
        kill_processes(lambda: kernel_tree(None, marker))

    def _remove_dirs(self) -> None:
        if self._private_dir:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None
        if self._owns_scratch and self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._owns_scratch = False

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
        if self._km is not None and self._state is _State.READY:
            await self._km.interrupt_kernel()

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # -- talking to the kernel ------------------------------------------------------

    async def _alive(self) -> bool:
        return self._km is not None and await self._km.is_alive()

    async def _silent(
        self, code: str, *, timeout: float, expressions: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Run code that is not the user's: no history, no outputs, and wait for its reply."""
        msg_id = self._client.execute(
            code,
            silent=True,
            store_history=False,
            user_expressions=expressions or {},
            allow_stdin=False,
            stop_on_error=False,
        )
        reply = await self._reply(msg_id, time.monotonic() + timeout)
        if reply is None:
            raise KernelError("The child kernel stopped answering; restart it.")
        return reply

    async def _reply(self, msg_id: str, deadline: float) -> dict[str, Any] | None:
        """The shell reply to ``msg_id``, or None if the kernel died or time ran out."""
        while time.monotonic() < deadline and self._state is not _State.CLOSED:
            try:
                msg = await self._client.get_shell_msg(timeout=_POLL)
            except queue.Empty:
                if not await self._alive():
                    return None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]
        return None

    async def _call(self, expression: str, *, timeout: float = 30.0) -> Any:
        """Evaluate a JSON-returning expression in the child's private module."""
        reply = await self._silent(
            "",
            timeout=timeout,
            expressions={"value": f"__import__('_pyvision_child').{expression}"},
        )
        value = reply.get("user_expressions", {}).get("value", {})
        if value.get("status") != "ok":
            raise KernelError(f"{value.get('ename')}: {value.get('evalue')}")
        text = value["data"]["text/plain"]
        # The value is the repr of a JSON string (possibly wrapped over lines).
        return json.loads(ast.literal_eval(text))

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
        assert self._scratch
        folder = Path(self._scratch, "inputs")
        folder.mkdir(exist_ok=True)
        items = []
        for index, image in enumerate(images):
            name = f"image_clue_{index}"
            path = folder / (name + _MIME_SUFFIX.get(image.mime, ".img"))
            path.write_bytes(image.data)
            items.append((name, str(path)))
        try:
            names = await self._call(f"bind_inputs({items!r})")
        except KernelError as exc:
            raise ImageInputError(
                f"The kernel could not open the input images ({exc}).",
                source=", ".join(image.name for image in images),
            ) from exc
        self._bound_names = names
        return names

    async def importable_libraries(self) -> list[str]:
        """Notable libraries the tools can import, as ``"name version"`` (cached)."""
        if self._libraries is None:
            await self.start()
            async with self._get_lock():
                self._libraries = await self._call(f"probe_libraries({_NOTABLE_LIBRARIES!r})")
        return list(self._libraries)

    async def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        """Run ``code`` and collect what it printed, showed and raised.

        Never raises for what the code did: errors, timeouts and kernel deaths are
        reported in :attr:`ExecutionResult.status` and ``note``.
        """
        await self.start()
        async with self._get_lock():
            if self._km is None and self._state is _State.READY:
                # An earlier restart failed half way; try once more before running.
                await self._relaunch()
            return await self._execute(code, self.timeout if timeout is None else timeout)

    async def _execute(self, code: str, limit: float | None) -> ExecutionResult:
        started = time.monotonic()
        collected = OutputCollector(self.max_output_chars, self.max_images, self.max_image_pixels)
        msg_id = self._client.execute(
            code, silent=False, store_history=True, allow_stdin=False, stop_on_error=False
        )
        deadline = started + limit if limit else None
        interrupted_at: float | None = None
        last_check = started
        outcome = "running"
        while outcome == "running":
            if self._state is _State.CLOSED:  # shut down from another task meanwhile
                outcome = "closed"
                break
            now = time.monotonic()
            if deadline is not None and interrupted_at is None and now >= deadline:
                interrupted_at = now
                await self._km.interrupt_kernel()  # type: ignore[union-attr]
            if interrupted_at is not None and now >= interrupted_at + self.interrupt_grace:
                outcome = "stuck"
                break
            if now - last_check >= _POLL:
                last_check = now
                if not await self._alive():
                    outcome = "died"
                    break
            # Wake up in time for the next deadline (limit, then grace).
            wait = _POLL
            if interrupted_at is not None:
                wait = min(wait, interrupted_at + self.interrupt_grace - now)
            elif deadline is not None:
                wait = min(wait, deadline - now)
            try:
                msg = await self._client.get_iopub_msg(timeout=max(wait, 0.0))
            except queue.Empty:
                continue
            # Only this execution's messages: late output of an earlier one is discarded.
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                outcome = "done"
            else:
                collect_message(msg, collected)

        notes: list[str] = []
        if outcome == "done":
            reply = await self._reply(msg_id, time.monotonic() + 5.0) or {}
            if interrupted_at is not None:
                status = "timeout"
                collected.items = [
                    item for item in collected.items if item.ename != "KeyboardInterrupt"
                ]
                notes.append(
                    f"The tool was stopped at its time limit of {limit:g} s; the variables "
                    "it and earlier tools defined are kept."
                )
            elif reply.get("status") == "error" or any(
                item.kind == "error" for item in collected.items
            ):
                status = "error"
            else:
                status = "ok"
        elif outcome == "stuck":
            status = "timeout"
            await self._relaunch()
            notes.append(
                f"The tool was stopped at its time limit of {limit:g} s and the kernel had to "
                "be restarted, so all variables from earlier tools are gone"
                + self._rebound_clause()
            )
        elif outcome == "closed":
            status = "died"
            notes.append("The kernel was shut down while the tool was running.")
        else:
            status = "died"
            how = self._exit_description()
            await self._relaunch()
            notes.append(
                f"The kernel process died while running the tool{how}; it was restarted, so "
                "all variables from earlier tools are gone" + self._rebound_clause()
            )
        if collected.dropped_images:
            notes.append(
                f"{collected.dropped_images} more image(s) were not shown (limit "
                f"{self.max_images} per execution)."
            )
        return ExecutionResult(
            status=status,
            outputs=collected.outputs(),
            duration=time.monotonic() - started,
            note=" ".join(notes),
        )

    def _rebound_clause(self) -> str:
        if not self._bound_names:
            return "."
        names = ", ".join(self._bound_names)
        return f" (the input images are bound again as {names})."

    def _exit_description(self) -> str:
        process = getattr(getattr(self._km, "provisioner", None), "process", None)
        code = process.poll() if process is not None else None
        if code is None:
            return ""
        if code < 0:
            try:
                return f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                return f" (killed by signal {-code})"
        return f" (exit code {code})"
