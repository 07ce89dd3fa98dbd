"""Kernels forked from a template process that has ipykernel already imported.

A kernel started the usual way (``python -m ipykernel_launcher``) spends about
0.7 s of CPU importing before it can answer; sixteen of them on two cores take
seconds. :class:`ForkServer` starts one template process
(:mod:`._template`) per kernel environment, and each kernel is a fork of
it, ready after about 0.07 s of CPU. :class:`ForkedProvisioner` plugs this into
jupyter_client, so the rest of the kernel code sees an ordinary kernel: it
signals, polls and kills a :class:`ForkedProcess` as it would a ``Popen``.

What differs from a launched kernel, and why it is safe:

- The template is started with the kernels' environment (allowlisted, secrets
  removed), so nothing the kernels should not see is in the memory they copy.
- numpy's global random generator is reseeded in each kernel (``random`` does
  that itself after a fork). Python's string-hash seed is shared by the kernels
  of one template.
- ``/proc/PID/environ`` of a forked kernel shows the template's variables, so
  the per-kernel marker is not visible there (it is in ``os.environ`` and in
  every process the kernel execs). Orphans of a dead kernel are killed by the
  template instead, which is their subreaper.
- If the template cannot be started or dies, the kernel is launched the usual
  way and a warning is logged; nothing fails for it.

Only on Linux (forking a process that loaded macOS frameworks is unsafe), for
kernels that run this interpreter outside the sandbox.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Int

from . import _bootstrap, _landlock, _template
from ._env import MARKER_VARIABLE

__all__ = ["ForkServer", "ForkServerError", "ForkedProcess", "ForkedProvisioner",
           "fork_supported", "server_for"]

# Variables that differ from kernel to kernel and so do not pick the template.
_PER_KERNEL = frozenset({MARKER_VARIABLE, "JPY_PARENT_PID", "JPY_SESSION_NAME", "MPLCONFIGDIR"})
# How long a spawn may wait for the template to import and fork.
_SPAWN_TIMEOUT = 60.0


#: Starts the templates (see ``ForkServer._start``); its thread ends at exit.
_LAUNCHER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pyvision-template-launcher")


class ForkServerError(RuntimeError):
    """The template process could not fork a kernel."""


def fork_supported() -> bool:
    """Whether kernels can be forked here (Linux, with ``socket.send_fds``)."""
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


class ForkServer:
    """One template process and the kernels forked from it.

    Thread-safe; a reader thread receives the template's replies and the exit
    codes of its kernels. Create it with the environment the kernels will have
    (per-kernel variables excepted), then :meth:`spawn`.

    With a ``prefix`` (the bwrap call of :func:`~._sandbox.template_argv`)
    the template runs inside the sandbox: kernel pids are then those of the
    sandbox's process namespace, meaningless here, so every signal goes through
    the template (:meth:`signal`), which also knows whether a pid is still its
    kernel's. ``translate`` is ``(outside, inside)``, the shared kernel folder
    as this process and the sandbox see it.
    """

    def __init__(self, env: Mapping[str, str], *, python: str | None = None,
                 prefix: Sequence[str] = (), translate: tuple[str, str] | None = None) -> None:
        self.env = dict(env)
        #: The interpreter of the template, hence of its kernels.
        self.python = python or sys.executable
        self.prefix = list(prefix)
        self.translate = translate
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pending: dict[int, concurrent.futures.Future[int]] = {}
        self._exits: dict[int, int] = {}
        self._next_id = 0
        self.template_pid: int | None = None

    @property
    def process_pid(self) -> int | None:
        """Pid of the template's process here (bwrap's, in the sandbox)."""
        process = self._process
        return process.pid if process is not None else None

    @property
    def alive(self) -> bool:
        """Whether a template is running (its socket is open)."""
        return self._sock is not None

    def _start(self) -> None:
        """Start the template (under the lock); its imports go on in the background."""
        if self._process is not None:
            self._process.poll()  # collect a dead template
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # ps and top show this first line for the template and for every kernel.
            source = "# pyvision_magic kernel template\n" + Path(
                _template.__file__).read_text(encoding="utf-8")
            # From a thread that lives as long as this process: bwrap's
            # --die-with-parent follows the *thread* that started it.
            self._process = _LAUNCHER.submit(
                subprocess.Popen,
                [*self.prefix, self.python, "-c", source, str(theirs.fileno()),
                 _bootstrap.__file__, _landlock.__file__],
                pass_fds=[theirs.fileno()],
                env=self.env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Not in the caller's process group: a notebook kernel's shutdown
                # signals its group and waits for what is in it.
                start_new_session=True,
            ).result()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        threading.Thread(target=self._read, args=(ours, self._process),
                         name="pyvision-fork-server", daemon=True).start()

    def _read(self, sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            with self._changed:
                if "ready" in message:
                    self.template_pid = message["ready"]
                elif "exited" in message:
                    self._exits[message["exited"]] = message["code"]
                elif "id" in message:
                    future = self._pending.pop(message["id"], None)
                    if future is not None and "pid" in message:
                        future.set_result(message["pid"])
                    elif future is not None:
                        future.set_exception(ForkServerError(message.get("error", "unknown")))
                self._changed.notify_all()
        with self._changed:
            if self._sock is sock:
                self._sock = None
            sock.close()
            for future in self._pending.values():
                future.set_exception(ForkServerError("the template process ended"))
            self._pending.clear()
            self._changed.notify_all()
        try:  # collect it: a zombie would keep its pid, and a notebook's shutdown waiting
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def spawn(self, argv: list[str], *, cwd: str, env: Mapping[str, str],
              stdio: tuple[int, int, int], nice: int | None = None,
              connection: tuple[str, str] | None = None,
              landlock: dict[str, Any] | None = None) -> concurrent.futures.Future[int]:
        """Ask for a kernel running ``ipykernel_launcher argv``; the future gives its pid.

        ``nice`` lowers its CPU priority from the start (see ``ChildKernel.nice``).
        ``connection`` is ``(path, content)``: the connection file named in
        ``argv``, which is not on disk; the kernel reads it from memory instead.
        ``landlock`` is the spec the kernel applies to itself (see
        :func:`._landlock.apply`).

        ``stdio`` are the file descriptors for its stdin, stdout and stderr; they
        are passed over the socket, so the caller may close them afterwards.
        """
        with self._lock:
            if self._sock is None:
                self._start()
            assert self._sock is not None
            self._next_id += 1
            future: concurrent.futures.Future[int] = concurrent.futures.Future()
            self._pending[self._next_id] = future
            request = {"id": self._next_id, "argv": list(argv), "cwd": cwd, "env": dict(env),
                       "nice": nice, "connection": connection, "landlock": landlock,
                       "translate": self.translate}
            try:
                socket.send_fds(self._sock, [json.dumps(request).encode()], list(stdio))
            except OSError as exc:
                self._pending.pop(self._next_id, None)
                raise ForkServerError(f"the template process is gone ({exc})") from exc
        return future

    def signal(self, pid: int, signum: int) -> None:
        """Signal the process group of a kernel of this template, if it still runs."""
        with self._lock:
            if self._sock is None or pid in self._exits:
                return
            try:
                self._sock.send(json.dumps({"signal": pid, "signum": signum}).encode())
            except OSError:  # the template is gone, and its kernels with it
                pass

    def exit_code(self, pid: int) -> int | None:
        """The exit code of a forked kernel, or None while it runs."""
        with self._lock:
            if pid in self._exits:
                return self._exits[pid]
            if self._sock is None:
                # Its template died first, and took its kernels along (they die
                # with their parent, or with the sandbox's process namespace).
                return -signal.SIGKILL
        return None

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.exit_code(pid)
            if code is not None:
                return code
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            with self._changed:
                self._changed.wait(0.1 if remaining is None else min(remaining, 0.1))

    def forget(self, pid: int) -> None:
        with self._lock:
            self._exits.pop(pid, None)

    def close(self) -> None:
        """End the template (its kernels quit within a second, see the module)."""
        with self._lock:
            sock, self._sock = self._sock, None
            process, self._process = self._process, None
        if sock is not None:
            # shutdown() first: the reader thread blocks in recv() on this socket,
            # and close() alone would neither wake it nor send the template EOF.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if process is not None:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


_SERVERS: dict[tuple[Any, ...], ForkServer] = {}
_SERVERS_LOCK = threading.Lock()


def server_for(env: Mapping[str, str], *, prefix: Sequence[str] = (),
               translate: tuple[str, str] | None = None) -> ForkServer:
    """The template for kernels with this environment and sandbox (one for each)."""
    variables = tuple(sorted((k, v) for k, v in env.items() if k not in _PER_KERNEL))
    key = (sys.executable, variables, tuple(prefix), translate)
    with _SERVERS_LOCK:
        server = _SERVERS.get(key)
        if server is None:
            server = _SERVERS[key] = ForkServer(dict(variables), prefix=prefix, translate=translate)
        return server


def _forget_servers_after_fork() -> None:
    """In a child made by os.fork (multiprocessing, say): the templates are the parent's.

    Their sockets are shared with the parent and no reader thread runs here, so
    the child starts templates of its own if it needs kernels.
    """
    global _SERVERS, _SERVERS_LOCK
    _SERVERS, _SERVERS_LOCK = {}, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_servers_after_fork)


@atexit.register
def close_servers() -> None:
    """End every template of this process (at exit; their kernels end with them)."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        server.close()


class ForkedProcess:
    """A forked kernel seen through the ``Popen`` methods jupyter_client uses."""

    stdin = stdout = stderr = None

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid)
            if self.returncode is not None:
                self.server.forget(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self.server.wait_exit(self.pid, timeout)
            if code is None:
                raise subprocess.TimeoutExpired(["ipykernel"], timeout or 0)
            self.returncode = code
            self.server.forget(self.pid)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        # Through the template, which signals only a kernel it has not reaped.
        if self.poll() is None:
            self.server.signal(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _fd(stream: Any, mode: int) -> tuple[int, bool]:
    """A file descriptor for a Popen-style stdio argument, and whether we opened it."""
    if stream is None or stream == subprocess.DEVNULL:
        return os.open(os.devnull, mode), True
    if isinstance(stream, int):
        return stream, False
    return stream.fileno(), False


def _kill_late_kernel(server: ForkServer, future: concurrent.futures.Future[int]) -> None:
    if not future.cancelled() and future.exception() is None:
        server.signal(future.result(), signal.SIGKILL)


class ForkedProvisioner(LocalProvisioner):  # type: ignore[misc]
    """A provisioner whose kernels are forked by a :class:`ForkServer`.

    It takes the command jupyter_client built (``[PREFIX...] python -m
    ipykernel_launcher ARGS``) and has the template run ``ARGS``; anything
    else, or a failing template, is launched as usual, prefix included (the
    sandbox or the Landlock guard, so a fallback is never less protected).
    Signals go through the template (see :meth:`ForkServer.signal`).
    """

    nice = Int(None, allow_none=True, help="Niceness the kernel starts with; None leaves it.")
    prefix_length = Int(0, help="Arguments before the kernel's own command (the wrapper).")

    def __init__(self, *, server: ForkServer, landlock: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.landlock = landlock

    @property
    def forked(self) -> bool:
        """Whether the running kernel was forked (not launched after a failure)."""
        return isinstance(self.process, ForkedProcess)

    async def send_signal(self, signum: int) -> None:
        if self.forked:
            self.process.send_signal(signum)  # never killpg: the pid may be the sandbox's
            return
        await super().send_signal(signum)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        own = cmd[self.prefix_length:]
        if own[:3] != [sys.executable, "-m", "ipykernel_launcher"]:
            return await super().launch_kernel(cmd, **kwargs)
        env = kwargs.get("env") or dict(os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        server = self.server
        opened: list[int] = []
        try:
            stdio = []
            for name, mode in (("stdin", os.O_RDONLY), ("stdout", os.O_WRONLY),
                               ("stderr", os.O_WRONLY)):
                fd, ours = _fd(kwargs.get(name), mode)
                stdio.append(fd)
                if ours:
                    opened.append(fd)
            future = server.spawn(own[3:], cwd=cwd, env=env,
                                  stdio=(stdio[0], stdio[1], stdio[2]), nice=self.nice,
                                  connection=(self.parent.connection_file,
                                              self.parent.connection_json()),
                                  landlock=self.landlock)
            try:
                pid = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                             _SPAWN_TIMEOUT)
            except BaseException:
                # Given up on (timeout, cancel): a kernel forked later must not linger.
                future.add_done_callback(lambda done: _kill_late_kernel(server, done))
                raise
        except (ForkServerError, OSError, asyncio.TimeoutError) as exc:
            self.log.warning("Forking a kernel failed (%s); launching it the usual way.", exc)
            self.parent.memory_only = False  # a launched kernel reads the file (then deletes it)
            self.parent.write_connection_file()
            return await super().launch_kernel(cmd, **kwargs)
        finally:
            for fd in opened:
                os.close(fd)
        self.process = ForkedProcess(server, pid)
        # pid is the template's view (the sandbox's namespace); no process group
        # is signalled from here.
        self.pid, self.pgid = (None if server.prefix else pid), None
        self.cwd = cwd
        return self.connection_info
