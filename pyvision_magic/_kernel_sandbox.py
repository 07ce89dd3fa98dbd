"""The optional bubblewrap sandbox around a child kernel, and what it protects.

What the kernel protects, and what it does not
----------------------------------------------
**Default mode** (``sandbox=False``): the tools run in a separate process, as the
same user, with the same rights.

- Protected: the user's own Python process (a crash, hang or runaway allocation
  ends or restarts the kernel, not the notebook: time limits with interrupt, then
  restart; RLIMIT_AS and RLIMIT_FSIZE); API keys in the environment (the kernel
  gets an allowlist of variables with anything secret-looking removed); leftover
  processes (the kernel's whole process tree is killed on restart and shutdown).
- Not protected: everything else the user may do. Tools can read, change and
  delete any file the user can (home directory, SSH keys, notebooks, other
  projects, config files that hold API keys), use the network (upload files,
  reach local services), and see and signal the user's other processes.
  Running a tool is like running the model's code yourself.

**Sandbox** (``sandbox=True``, Linux with bubblewrap) adds:

- no network at all, not even to servers on the host's 127.0.0.1;
- a read-only filesystem, writable only in the scratch directory (and the
  directory of this launch's connection file and sockets); an empty private
  ``/tmp`` and ``/run`` (so the sockets of Docker, D-Bus and X11 there are out
  of reach);
- its own process view: other processes cannot be seen or signalled; its own
  ``/dev`` without the host's devices (so no GPU either);
- no capabilities, even when pyvision runs as root; it dies with its parent.

Still *not* protected with the sandbox: reading. Every file the user can read
stays readable, and what a tool prints is sent to the model endpoint, so a
secret in a readable file can still reach the model. Unix sockets elsewhere
than ``/tmp`` and ``/run`` can still be connected to; CPU time and disk use in
the scratch directory are limited only by ChildKernel's time, memory and file
size limits; bubblewrap is not a virtual machine, so a kernel exploit escapes it.

How
---
``bwrap`` wraps the kernel's command line: ``--unshare-net``, ``--unshare-pid``,
``--unshare-ipc``, ``--ro-bind / /`` with the scratch and socket directories bound
read-write at the same path, ``--tmpfs`` on ``/tmp`` and ``/run``, fresh
``/proc`` and ``/dev``, ``--cap-drop ALL`` (bwrap run by root keeps every
capability otherwise, and with them code could simply remount ``/`` read-write)
and ``--die-with-parent``. The parent never writes through a link the sandbox
could have planted (see :class:`~._kernel_workspace.Workspace`).

Signals need care: jupyter_client signals the process group of the process it
launched, which is bwrap, and bwrap dies of SIGINT instead of passing it on.
:class:`SandboxKernelManager` therefore interrupts the processes *inside* the sandbox
(those of bwrap's process group, minus bwrap itself) and leaves kills to the
provisioner, whose SIGKILL of the whole group ends the sandbox.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

from jupyter_client import AsyncKernelManager
from traitlets import List, Unicode

from ._errors import KernelStartError
from ._kernel_env import proc_pids, process_links

__all__ = ["SandboxKernelManager", "bwrap_argv", "check_bwrap", "sandboxed_kernel_pid"]

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
    candidates = [sys.prefix, sys.exec_prefix, sys.base_prefix,
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


def bwrap_argv(bwrap: str, *, writable: list[str], workdir: str) -> list[str]:
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
    argv = [bwrap, *_namespace_args(), "--ro-bind", "/", "/", "--proc", "/proc",
            "--dev", "/dev", *[arg for d in _MASKED for arg in ("--tmpfs", d)]]
    # Binds come after the tmpfs mounts: the directories usually live under /tmp.
    for path in interpreter_paths():
        argv += ["--ro-bind", path, path]
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

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return [*self.command_prefix, *super().format_kernel_cmd(extra_arguments)]

    async def _async_signal_kernel(self, signum: int) -> None:
        provisioner: Any = self.provisioner
        if not self.command_prefix or signum == signal.SIGKILL or provisioner is None:
            await super()._async_signal_kernel(signum)
            return
        for pid in _sandbox_processes(provisioner.pid):
            try:
                os.kill(pid, signum)
            except OSError:  # ended meanwhile
                pass

    signal_kernel = _async_signal_kernel  # type: ignore[assignment]
