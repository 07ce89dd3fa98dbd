"""One launched kernel process and the messages exchanged with it.

:class:`KernelConnection` starts a kernel (optionally inside the sandbox),
runs the bootstrap in it, executes code while watching for deadlines and
death, and kills it with every process it started. What to do about a
timeout or a death -- restart, bind images again, tell the model -- is
decided by :class:`~._child.ChildKernel`, which owns one connection at a time.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

from . import _bootstrap, _kernel_files
from .._errors import KernelError, KernelStartError
from ._env import MARKER_VARIABLE, kernel_tree, kill_processes
from ._forkserver import ForkedProvisioner
from ._output import OutputCollector, collect_message
from ._sandbox import SandboxKernelManager, host_pid, sandboxed_kernel_pid
from ._workspace import Launch

__all__ = ["THIS_INTERPRETER", "ThisInterpreterSpecs", "KernelConnection", "Ran"]

#: The name under which the current interpreter is offered as a kernelspec.
THIS_INTERPRETER = "pyvision-this-interpreter"
# Kernel deaths are noticed within this many seconds while waiting for output.
_POLL = 0.2


class ThisInterpreterSpecs(KernelSpecManager):
    """Kernelspecs plus one that runs ipykernel in the parent's own interpreter.

    The installed ``python3`` spec may point at another Python; tools must see the
    packages of the environment the user runs pyvision from.
    """

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name == THIS_INTERPRETER:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name="pyvision tools",
                language="python",
                interrupt_mode="signal",
                metadata={},
            )
        return super().get_kernel_spec(kernel_name)


class _FailuresAsDebug(logging.LoggerAdapter):
    """The kernel manager's logger: a failed start is logged by jupyter_client with
    its traceback at error level, which a notebook shows under the cell; we report
    that failure in one sentence (:class:`KernelStartError`), so keep the traceback
    for debug logging."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self.debug(msg, *args, exc_info=exc_info, **kwargs)


@dataclass
class Ran:
    """How an execution ended, as seen from the messages.

    ``outcome`` is ``"done"`` (the kernel went idle), ``"stuck"`` (it ignored the
    interrupt past the grace time), ``"died"`` or ``"closed"`` (shut down meanwhile).
    """

    outcome: str
    interrupted: bool = False
    reply: dict[str, Any] = field(default_factory=dict)


def _boot_code(config: dict[str, Any]) -> str:
    sources = [(name, Path(module.__file__).read_text(encoding="utf-8"))
               for name, module in (("_pyvision_child_files", _kernel_files),
                                    ("_pyvision_child", _bootstrap))]
    return (
        "def _pyvision_boot(sources, config):\n"
        "    import sys, types\n"
        "    for name, source in sources:\n"
        "        module = types.ModuleType(name)\n"
        "        sys.modules[name] = module\n"
        "        exec(compile(source, '<' + name[1:] + '>', 'exec'), module.__dict__)\n"
        "    module.install(config)\n"
        "try:\n"
        f"    _pyvision_boot({sources!r}, {config!r})\n"
        "finally:\n"
        "    del _pyvision_boot\n"
    )


def _expression_value(reply: dict[str, Any], key: str) -> Any:
    """Decode a user expression that evaluated to a JSON string."""
    value = reply.get("user_expressions", {}).get(key, {})
    if value.get("status") != "ok":
        raise KernelError(f"{value.get('ename')}: {value.get('evalue')}")
    # The value is the repr of a JSON string (possibly wrapped over lines).
    return json.loads(ast.literal_eval(value["data"]["text/plain"]))


class KernelConnection:
    """A running kernel process: its manager, its client and its marker.

    Create it with :meth:`launch`; end it with :meth:`close`.

    Parameters
    ----------
    km : SandboxKernelManager
        The manager that launched (or is launching) the kernel.
    marker : str
        The value of :data:`~._env.MARKER_VARIABLE` in the kernel's processes.
    stopped : callable
        Returns True once the owner shut down; waits end within one poll then.
    log : logging.Logger
        Where teardown troubles are noted.
    """

    def __init__(
        self, km: SandboxKernelManager, marker: str, stopped: Callable[[], bool], log: logging.Logger
    ) -> None:
        self.km = km
        self.client: Any = None
        self.marker = marker
        self.sandboxed = km.sandboxed
        #: ``{"executable": ..., "version": ...}`` of the kernel's Python, once booted.
        self.interpreter: dict[str, Any] = {}
        self._stopped = stopped
        self._log = log
        self._kernel_pid: int | None = None

    @classmethod
    async def launch(
        cls,
        *,
        kernel_name: str | None,
        launch: Launch,
        cwd: str,
        startup_timeout: float,
        config: dict[str, Any],
        stopped: Callable[[], bool],
        log: logging.Logger,
    ) -> "KernelConnection":
        """Start a kernel, connect to it and run the bootstrap.

        ``launch`` (see :class:`~._workspace.Launch`) says where its
        connection file, sockets and log go, what wraps its command (the
        sandbox, or the Landlock guard), and the template that forks it, if any
        (see :mod:`._forkserver`).

        Raises
        ------
        KernelStartError
            If the kernel cannot start or set itself up; nothing is left running.
        """
        marker = uuid.uuid4().hex
        base = launch.base
        forked = launch.server is not None and kernel_name is None
        km = SandboxKernelManager(
            kernel_name=kernel_name or THIS_INTERPRETER,
            kernel_spec_manager=ThisInterpreterSpecs(),
            transport="ipc",
            ip=base,
            connection_file=base + ".json",
            command_prefix=launch.command_prefix,
            sandboxed=launch.sandboxed,
            memory_only=forked,
            log=_FailuresAsDebug(log, {}),
        )
        if forked:
            km.kernel_id = str(uuid.uuid4())
            km.provisioner = ForkedProvisioner(
                kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km,
                nice=config.get("nice"), server=launch.server, landlock=launch.landlock,
                prefix_length=len(launch.command_prefix),
            )
        connection = cls(km, marker, stopped, log)
        try:
            await connection._start(kernel_name, base, cwd,
                                    {**launch.env, MARKER_VARIABLE: marker},
                                    startup_timeout, config)
        except BaseException:
            await connection.close()
            raise
        return connection

    async def _start(
        self,
        kernel_name: str | None,
        base: str,
        cwd: str,
        env: dict[str, str],
        startup_timeout: float,
        config: dict[str, Any],
    ) -> None:
        try:
            with open(base + ".log", "ab") as log:
                await self.km.start_kernel(
                    env=env,
                    cwd=cwd,
                    # The history database is useless here and locks up with many kernels.
                    extra_arguments=["--HistoryManager.enabled=False"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
        except NoSuchKernel as exc:
            raise KernelStartError(
                f"There is no Jupyter kernel named {kernel_name!r}; run "
                "`jupyter kernelspec list` to see the names, or leave kernel_name unset."
            ) from exc
        except Exception as exc:
            raise KernelStartError(
                f"The child kernel could not be launched ({exc}); check that ipykernel "
                "is installed in the kernel's Python."
            ) from exc
        self.client = self.km.client()
        # No heartbeat thread: liveness comes from the process (km.is_alive), and 16
        # kernels would mean 16 more threads taking turns at the GIL.
        self.client.start_channels(hb=False)
        if not await self._wait_ready(time.monotonic() + startup_timeout):
            # The log goes with the kernel's folder: quote its end here.
            try:
                with open(base + ".log", "rb") as log:
                    tail = log.read()[-1500:].decode("utf-8", "replace").strip()
            except OSError:
                tail = ""
            alive = "running" if await self.km.is_alive() else "ended"
            raise KernelStartError(
                f"The child kernel did not become ready within {startup_timeout:g} s (its "
                f"process {alive}); its log ends: {tail or '(empty)'}"
            )
        # A launched kernel has read its connection file (the Landlock guard deletes
        # it then), and jupyter_client may have written it again: its key must not
        # stay on disk for a tool to read. (A forked kernel's never was there.)
        try:
            os.unlink(self.km.connection_file)
        except FileNotFoundError:
            pass
        reply = await self.silent(
            _boot_code(config),
            timeout=startup_timeout,
            expressions={"interpreter": "__import__('_pyvision_child').interpreter()"},
        )
        if reply["status"] != "ok":
            raise KernelStartError(
                "The child kernel started but could not set itself up "
                f"({reply.get('ename')}: {reply.get('evalue')})."
            )
        try:
            self.interpreter = _expression_value(reply, "interpreter")
        except KernelError as exc:  # only informative: the kernel works without it
            self._log.debug("kernel interpreter unknown: %s", exc)

    async def _wait_ready(self, deadline: float) -> bool:
        """Wait until the kernel answers on the shell channel and reaches us on iopub.

        Like ``wait_for_ready`` but without its 0.2 s of silence at the end: output
        is matched to its request anyway, so stray start-up messages do no harm.
        A request sent before the kernel listens waits in zmq's queue; an iopub
        subscription made too late misses the status messages, and then the
        request is sent again.
        """
        while time.monotonic() < deadline and not self._stopped():
            msg_id = self.client.kernel_info()
            wait_until = min(deadline, time.monotonic() + 1.0)
            if await self.reply(msg_id, wait_until) is not None:
                # The kernel publishes busy and idle for the request it just answered.
                try:
                    await self.client.get_iopub_msg(timeout=0.25)
                    return True
                except queue.Empty:
                    continue
            if not await self.km.is_alive():
                return False
        return False

    @property
    def forked(self) -> bool:
        """Whether this kernel was forked from a template."""
        return bool(getattr(self.km.provisioner, "forked", False))

    @property
    def pid(self) -> int | None:
        """The kernel's process id as this process sees it (not bwrap's, if sandboxed)."""
        provisioner: Any = self.km.provisioner
        if self._kernel_pid is None and provisioner is not None and self.sandboxed:
            if self.forked:  # the template told its own namespace's pid
                server = provisioner.server
                template = server.process_pid
                self._kernel_pid = host_pid(provisioner.process.pid, template) if template else None
            else:
                self._kernel_pid = sandboxed_kernel_pid(provisioner.pid)
        if self.sandboxed:
            return self._kernel_pid
        return getattr(provisioner, "pid", None)

    async def close(self) -> None:
        """Kill the kernel and every process it started."""
        client, self.client = self.client, None
        root = getattr(self.km.provisioner, "pid", None)
        kill_processes(lambda: kernel_tree(root, self.marker))
        if client is not None:
            client.stop_channels()
        try:
            await self.km.shutdown_kernel(now=True)
        except Exception as exc:  # already gone is fine; say so in the log
            self._log.debug("kernel shutdown: %s", exc)
        # Orphans of the dead kernel carry the marker; catch late forks too.
        kill_processes(lambda: kernel_tree(None, self.marker))

    async def alive(self) -> bool:
        return self.client is not None and await self.km.is_alive()

    async def interrupt(self) -> None:
        """Send Ctrl-C (or an interrupt message, if the kernelspec asks for one)."""
        await self.km.interrupt_kernel()

    def exit_description(self) -> str:
        """How the kernel process ended, as a clause: ``" (killed by SIGKILL)"``, or ""."""
        process = getattr(self.km.provisioner, "process", None)
        code = process.poll() if process is not None else None
        if code is None:
            return ""
        if self.sandboxed and not self.forked and code > 128:
            code = 128 - code  # bwrap exits with 128 + the signal that ended the kernel
        if code < 0:
            try:
                return f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                return f" (killed by signal {-code})"
        return f" (exit code {code})"

    # -- messages -------------------------------------------------------------------

    async def silent(
        self, code: str, *, timeout: float, expressions: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Run code that is not the user's: no history, no outputs, and wait for its reply."""
        msg_id = self.client.execute(
            code,
            silent=True,
            store_history=False,
            user_expressions=expressions or {},
            allow_stdin=False,
            stop_on_error=False,
        )
        reply = await self.reply(msg_id, time.monotonic() + timeout)
        if reply is None:
            raise KernelError("The child kernel stopped answering; restart it.")
        return reply

    async def reply(self, msg_id: str, deadline: float) -> dict[str, Any] | None:
        """The shell reply to ``msg_id``, or None if the kernel died or time ran out."""
        while time.monotonic() < deadline and not self._stopped():
            try:
                msg = await self.client.get_shell_msg(timeout=_POLL)
            except queue.Empty:
                if not await self.alive():
                    return None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]
        return None

    async def call(self, expression: str, *, timeout: float = 30.0) -> Any:
        """Evaluate a JSON-returning expression in the child's private module."""
        reply = await self.silent(
            "",
            timeout=timeout,
            expressions={"value": f"__import__('_pyvision_child').{expression}"},
        )
        return _expression_value(reply, "value")

    async def run(
        self, code: str, collected: OutputCollector, *, limit: float | None, grace: float
    ) -> Ran:
        """Execute ``code``, collecting its outputs, until it ends or must be given up.

        At ``limit`` seconds the kernel is interrupted; ``grace`` seconds later the
        execution counts as stuck.
        """
        started = time.monotonic()
        msg_id = self.client.execute(
            code, silent=False, store_history=True, allow_stdin=False, stop_on_error=False
        )
        deadline = started + limit if limit else None
        interrupted_at: float | None = None
        last_check = started
        while True:
            if self._stopped():  # shut down from another task meanwhile
                return Ran("closed", interrupted_at is not None)
            now = time.monotonic()
            if deadline is not None and interrupted_at is None and now >= deadline:
                interrupted_at = now
                await self.interrupt()
            if interrupted_at is not None and now >= interrupted_at + grace:
                return Ran("stuck", True)
            if now - last_check >= _POLL:
                last_check = now
                if not await self.alive():
                    return Ran("died", interrupted_at is not None)
            # Wake up in time for the next deadline (limit, then grace).
            wait = _POLL
            if interrupted_at is not None:
                wait = min(wait, interrupted_at + grace - now)
            elif deadline is not None:
                wait = min(wait, deadline - now)
            try:
                msg = await self.client.get_iopub_msg(timeout=max(wait, 0.0))
            except queue.Empty:
                continue
            # Only this execution's messages: late output of an earlier one is discarded.
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                reply = await self.reply(msg_id, time.monotonic() + 5.0) or {}
                return Ran("done", interrupted_at is not None, reply)
            collect_message(msg, collected)
