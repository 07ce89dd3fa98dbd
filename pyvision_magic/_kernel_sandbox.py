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
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from jupyter_client import AsyncKernelManager
from traitlets import Bool, List, Unicode

from . import _kernel_landlock
from ._errors import KernelStartError
from ._kernel_env import proc_pids, process_links

__all__ = ["Isolation", "SandboxKernelManager", "bwrap_argv", "check_bwrap", "choose_isolation",
           "guard_argv", "hidden_jupyter_paths", "sandboxed_kernel_pid", "template_argv"]

#: Where the sandbox shows the folder that holds every kernel's folders.
SHARED_INSIDE = "/run/pyvision"
#: Landlock ABI with signal and abstract-socket scoping (Linux 6.12).
_SCOPED_ABI = 6
_log = logging.getLogger(__name__)
_WARNED: set[str] = set()


@dataclass(frozen=True)
class Isolation:
    """How the kernels of one :class:`~._kernel.ChildKernel` are confined.

    ``kind`` is ``"sandbox"`` (bubblewrap; ``shared``: kernels forked by a
    template inside one sandbox, each kernel also confined by Landlock, else one
    sandbox per kernel), ``"landlock"`` (no sandbox; each kernel confined by
    Landlock and without capabilities, this process made non-dumpable) or
    ``"none"``. ``note`` says why the sandbox is not used, when it is not.
    """

    kind: str
    bwrap: str | None = None
    shared: bool = False
    note: str = ""

    @property
    def sandboxed(self) -> bool:
        return self.kind == "sandbox"

    def describe(self) -> str:
        """One line for the user: what protects the tools here."""
        if self.sandboxed:
            return "sandboxed (bubblewrap: no network, read-only files, own processes)"
        why = f": {self.note}" if self.note else ""
        return (f"unsandboxed{why}; tools can use the network and write your files "
                "(see the README, Security model)")


def landlock_abi() -> int:
    """The Landlock ABI of this kernel, 0 without (probed once)."""
    if "abi" not in _LANDLOCK_ABI:
        _LANDLOCK_ABI["abi"] = _kernel_landlock.abi_version()
    return _LANDLOCK_ABI["abi"]


_LANDLOCK_ABI: dict[str, int] = {}


async def choose_isolation(requested: bool | str, bwrap_path: str, *, can_share: bool) -> Isolation:
    """Resolve ``ChildKernel.sandbox`` (True, False or "auto") to an :class:`Isolation`.

    ``can_share`` says whether kernels may be forked from a template (this
    interpreter, Linux, no user scratch folder); in the sandbox that also needs
    Landlock's signal scoping, which keeps the kernels of one sandbox apart.

    Raises
    ------
    KernelStartError
        If the sandbox is asked for (True) but cannot be built here.
    """
    abi = landlock_abi()
    fallback = "landlock" if abi >= 1 else "none"
    if requested is False:
        return Isolation(fallback, note="the sandbox is turned off")
    try:
        bwrap = await check_bwrap(bwrap_path)
    except KernelStartError as exc:
        if requested is True:
            raise
        note = str(exc).rstrip(".")
        if note not in _WARNED:
            _WARNED.add(note)
            _log.warning("Tools run unsandboxed: %s.", note)
        return Isolation(fallback, note=note)
    return Isolation("sandbox", bwrap, shared=can_share and abi >= _SCOPED_ABI)


def hidden_jupyter_paths() -> list[str]:
    """Folders with Jupyter's secrets: the runtime dir (kernel connection files,
    server tokens) and, in a notebook, the folder of this kernel's connection file.
    """
    paths = []
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        paths.append(jupyter_runtime_dir())
    except Exception:  # noqa: BLE001 - jupyter_core is a dependency; be safe anyway
        pass
    ipykernel = sys.modules.get("ipykernel.connect")
    if ipykernel is not None:
        try:
            paths.append(os.path.dirname(ipykernel.get_connection_file()))
        except Exception:  # noqa: BLE001 - not inside a kernel
            pass
    found = []
    for path in paths:
        real = os.path.realpath(path)
        if real not in found and real != "/":
            found.append(real)
    return found


def make_undumpable() -> None:
    """Make this process non-dumpable: outside the sandbox, a tool (same user,
    no capabilities) then cannot read its environment (the API key) or memory.

    The cost: no core dumps of this process, and attaching a debugger or
    profiler (py-spy, gdb) to it needs root.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
        except (OSError, AttributeError):
            pass


def guard_argv(hidden: list[str], connection_file: str) -> list[str]:
    """Prefix that launches a kernel under Landlock outside the sandbox."""
    spec = json.dumps({"mode": "hide", "hidden": hidden})
    return [sys.executable, "-I", "-S", _kernel_landlock.__file__, "--guard", spec,
            "--connection-file", connection_file, "--"]

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


def _memory_mounts(memory_limit: int | None) -> list[str]:
    """The in-memory mounts, each bounded: they hold host memory the tools use."""
    size = str(memory_limit or 2**30)
    return ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm",
            "--size", str(2**20), "--tmpfs", "/run"]


def _hide_jupyter() -> list[str]:
    argv: list[str] = []
    for path in hidden_jupyter_paths():
        if os.path.isdir(path) and not any(
                path == d or path.startswith(d + os.sep) for d in _MASKED):
            argv += ["--tmpfs", path]
    return argv


def template_argv(bwrap: str, *, shared: str, memory_limit: int | None) -> list[str]:
    """The bwrap call around a kernel template: one sandbox for all its kernels.

    ``shared`` (the folder that holds every kernel folder of this process) is
    shown at :data:`SHARED_INSIDE`; each kernel sees only its own folders there
    (Landlock, see :func:`._kernel_landlock.confine_rules`).
    """
    argv = [bwrap, *_namespace_args(), "--ro-bind", "/", "/", "--proc", "/proc",
            "--dev", "/dev", *_memory_mounts(memory_limit), *_hide_jupyter()]
    for path in interpreter_paths():
        argv += ["--ro-bind", path, path]
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
    argv = [bwrap, *_namespace_args(), "--ro-bind", "/", "/", "--proc", "/proc",
            "--dev", "/dev", *_memory_mounts(memory_limit), *_hide_jupyter()]
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
