"""The bubblewrap sandbox around child kernels.

Two shapes (which one is :mod:`._isolation`'s choice):

- **One sandbox for the kernel template** (:func:`template_argv`): the template of
  :mod:`._forkserver` runs inside bwrap and forks every kernel there; each kernel
  then confines itself with Landlock (:func:`._landlock.confine_rules`), so the
  kernels of one sandbox cannot read, signal or trace each other. The folder that
  holds every kernel folder of this process is shown inside at
  :data:`SHARED_INSIDE`, and the template translates the parent's paths.
- **One sandbox per kernel** (:func:`bwrap_argv`), for kernels that are launched:
  a named kernelspec, ``fork=False``, a user ``scratch_dir``, or a Linux without
  Landlock's signal scoping.

Both run ``bwrap --unshare-net --unshare-pid --unshare-ipc --die-with-parent
--cap-drop ALL`` (bwrap run by root keeps every capability otherwise, and with
them code could simply remount ``/`` read-write) with ``/`` read-only, fresh
``/proc`` and ``/dev``, ``/tmp`` and ``/dev/shm`` as in-memory folders bounded
by the kernel's memory limit, ``/run`` hidden (Docker and D-Bus sockets), and the
Jupyter runtime directory hidden (connection files of the user's own kernels).
The parent never writes through a link the sandbox could have planted (see
:class:`~._workspace.Workspace`).

Still *not* protected: reading. Every file the user can read stays readable, and
what a tool prints is sent to the model endpoint. bubblewrap is not a virtual
machine: a kernel exploit escapes it.

Signals need care: jupyter_client signals the process group of the process it
launched, which is bwrap, and bwrap dies of SIGINT instead of passing it on.
:class:`SandboxKernelManager` therefore interrupts the processes *inside* a
per-kernel sandbox (those of bwrap's process group, minus bwrap itself), sends
a forked kernel's signals through its template, and leaves kills to the
provisioner, whose SIGKILL of the whole group ends the sandbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

from jupyter_client import AsyncKernelManager
from traitlets import Bool, List, Unicode

from .._errors import KernelStartError
from ._env import hidden_jupyter_paths, proc_pids, process_links

__all__ = ["SHARED_INSIDE", "SandboxKernelManager", "bwrap_argv", "check_bwrap", "host_pid",
           "sandboxed_kernel_pid", "template_argv"]

#: Where the sandbox shows the folder that holds every kernel's folders.
SHARED_INSIDE = "/run/pyvision"

# Resolved bwrap path -> None if it works, else the error message; checked once.
_CHECKED: dict[str, str | None] = {}
_INSTALL = (
    "install the Debian package `bubblewrap` (apt-get install bubblewrap), point "
    "ChildKernel.bwrap_path at it, or run without the sandbox"
)


async def check_bwrap(bwrap_path: str) -> str:
    """Make sure bwrap can build our sandbox here; return its resolved path.

    Runs ``bwrap ... true`` with the namespaces the sandbox uses, once per path.

    Raises
    ------
    KernelStartError
        If bwrap is missing or cannot create namespaces (no unprivileged user
        namespaces, or a container that forbids them).
    """
    resolved = shutil.which(bwrap_path)
    if resolved is None:
        raise KernelStartError(
            f"The sandbox needs bubblewrap, but {bwrap_path!r} was not found; {_INSTALL}."
        )
    if resolved not in _CHECKED:
        argv = [resolved, *_namespace_args(), "--ro-bind", "/", "/", "--proc", "/proc",
                "--dev", "/dev", "--", "true"]
        try:
            done = await asyncio.to_thread(
                subprocess.run, argv, capture_output=True, text=True, timeout=30
            )
            problem = None if done.returncode == 0 else (
                done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
            )[-1]
        except (OSError, subprocess.SubprocessError) as exc:
            problem = str(exc)
        _CHECKED[resolved] = problem and (
            f"bubblewrap ({resolved}) cannot create a sandbox here ({problem}); enable "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
            "user.max_user_namespaces > 0) or run without the sandbox."
        )
    message = _CHECKED[resolved]
    if message:
        raise KernelStartError(message)
    return resolved


#: Directories replaced by empty in-memory ones inside the sandbox.
_MASKED = ("/tmp", "/run")


def interpreter_paths() -> list[str]:
    """Paths the kernel's Python needs that the masked directories would hide.

    A virtual environment or a checkout installed in editable mode may live under
    /tmp (CI clones do); without these read-only binds the kernel could not even
    start inside the sandbox.
    """
    # This package too: the kernel template reads its bootstrap and Landlock files
    # by path, and an editable install is found through an import hook, not sys.path.
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [sys.prefix, sys.exec_prefix, sys.base_prefix, package,
                  os.path.dirname(sys.executable), *sys.path,
                  *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    found: list[str] = []
    for path in candidates:
        if not path or not os.path.isabs(path) or not os.path.exists(path):
            continue
        for real in {os.path.abspath(path), os.path.realpath(path)}:
            hidden = any(real == d or real.startswith(d + os.sep) for d in _MASKED)
            if hidden and real not in found:
                found.append(real)
    # A parent bound first keeps the children visible; drop the redundant ones.
    found.sort(key=len)
    return [p for i, p in enumerate(found)
            if not any(p.startswith(q + os.sep) for q in found[:i])]


def _namespace_args() -> list[str]:
    return ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
            "--cap-drop", "ALL"]


def _memory_mounts(memory_limit: int | None) -> list[str]:
    """The in-memory mounts, each bounded: they hold host memory the tools use.

    bwrap's ``/dev`` is an in-memory folder too, without a size: it is made
    read-only once ``/dev/shm`` is in it (device files stay writable).
    """
    size = str(memory_limit or 2**30)
    return ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm",
            "--size", str(2**20), "--tmpfs", "/run", "--remount-ro", "/dev"]


def _hide_jupyter() -> list[str]:
    argv: list[str] = []
    for path in hidden_jupyter_paths():
        if os.path.isdir(path) and not any(
                path == d or path.startswith(d + os.sep) for d in _MASKED):
            argv += ["--tmpfs", path]
    return argv


def _common_argv(bwrap: str, memory_limit: int | None) -> list[str]:
    """What both sandbox shapes share: namespaces, a read-only ``/``, bounded
    in-memory folders, Jupyter's folders hidden, the interpreter's paths bound back."""
    argv = [bwrap, *_namespace_args(), "--ro-bind", "/", "/", "--proc", "/proc",
            "--dev", "/dev", *_memory_mounts(memory_limit), *_hide_jupyter()]
    # Binds come after the tmpfs mounts: these paths live under /tmp or /run.
    for path in interpreter_paths():
        argv += ["--ro-bind", path, path]
    return argv


def template_argv(bwrap: str, *, shared: str, memory_limit: int | None) -> list[str]:
    """The bwrap call around a kernel template: one sandbox for all its kernels.

    ``shared`` (the folder that holds every kernel folder of this process) is
    shown at :data:`SHARED_INSIDE`; each kernel sees only its own folders there
    (Landlock, see :func:`._landlock.confine_rules`).
    """
    argv = _common_argv(bwrap, memory_limit)
    real = os.path.realpath(shared)
    argv += ["--bind", real, SHARED_INSIDE, "--unsetenv", "JPY_PARENT_PID", "--chdir", "/", "--"]
    return argv


def bwrap_argv(bwrap: str, *, writable: list[str], workdir: str,
               memory_limit: int | None = None) -> list[str]:
    """The command-line prefix that runs a kernel command inside the sandbox.

    Parameters
    ----------
    bwrap : str
        Path of the bwrap executable (see :func:`check_bwrap`).
    writable : list of str
        Directories bound read-write at the same path: the scratch directory and
        this launch's directory with the connection file and IPC sockets (both
        sides use the socket files, so the path must be the same inside).
    workdir : str
        The kernel's working directory.
    """
    argv = _common_argv(bwrap, memory_limit)
    for path in writable:
        real = os.path.realpath(path)
        argv += ["--bind", real, real]
    # ipykernel quits when its parent is init, and inside the sandbox it is (bwrap's
    # reaper is pid 1); --die-with-parent does that job instead.
    argv += ["--unsetenv", "JPY_PARENT_PID", "--chdir", os.path.realpath(workdir), "--"]
    return argv


def _sandbox_processes(bwrap_pid: int) -> list[int]:
    """Processes in the sandbox that share bwrap's process group, bwrap's own excluded."""
    links = {pid: process_links(pid) for pid in proc_pids()}
    helpers = {bwrap_pid} | {pid for pid, link in links.items() if link and link[0] == bwrap_pid}
    return sorted(
        pid for pid, link in links.items()
        if link and link[1] == bwrap_pid and pid not in helpers
    )


def host_pid(inner_pid: int, ancestor: int) -> int | None:
    """The pid here of the process that is ``inner_pid`` in a sandbox below ``ancestor``."""
    links = {pid: process_links(pid) for pid in proc_pids()}

    def below(pid: int) -> bool:
        seen = 0
        while pid > 1 and seen < 64:
            link = links.get(pid)
            if link is None:
                return False
            pid, seen = link[0], seen + 1
            if pid == ancestor:
                return True
        return False

    for pid in links:
        try:
            with open(f"/proc/{pid}/status", encoding="utf-8") as status:
                line = next((l for l in status if l.startswith("NSpid:")), "")
        except OSError:
            continue
        ids = line.split()[1:]
        if len(ids) > 1 and ids[-1] == str(inner_pid) and below(pid):
            return pid
    return None


def sandboxed_kernel_pid(bwrap_pid: int | None) -> int | None:
    """The kernel's pid as the parent sees it: the child of bwrap's reaper."""
    if bwrap_pid is None:
        return None
    links = {pid: process_links(pid) for pid in proc_pids()}
    reapers = [pid for pid, link in links.items() if link and link[0] == bwrap_pid]
    kernels = sorted(pid for pid, link in links.items() if link and link[0] in reapers)
    return kernels[0] if kernels else None


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command can be wrapped in bwrap.

    With an empty :attr:`command_prefix` it behaves as ``AsyncKernelManager``.
    """

    command_prefix = List(
        Unicode(), help="Arguments put before the kernelspec's command (the bwrap call)."
    )
    sandboxed = Bool(False, help="Whether command_prefix is a bwrap call (signals go inside).")
    memory_only = Bool(
        False, help="Delete the connection file as soon as it is written: a forked kernel "
        "gets its content through the template, so its key is never on disk for a tool "
        "to read (jupyter_client would otherwise write it again after the launch).")

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        if self.memory_only:
            try:
                os.unlink(self.connection_file)
            except FileNotFoundError:
                pass

    def connection_json(self) -> str:
        """The connection file's content, from memory."""
        info = dict(self.get_connection_info())
        if isinstance(info.get("key"), bytes):
            info["key"] = info["key"].decode("ascii")
        return json.dumps(info)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return [*self.command_prefix, *super().format_kernel_cmd(extra_arguments)]

    async def _async_signal_kernel(self, signum: int) -> None:
        provisioner: Any = self.provisioner
        if getattr(provisioner, "forked", False):  # through its template
            await provisioner.send_signal(signum)
            return
        if not self.sandboxed or signum == signal.SIGKILL or provisioner is None:
            await super()._async_signal_kernel(signum)
            return
        for pid in _sandbox_processes(provisioner.pid):
            try:
                os.kill(pid, signum)
            except OSError:  # ended meanwhile
                pass

    signal_kernel = _async_signal_kernel  # type: ignore[assignment]
