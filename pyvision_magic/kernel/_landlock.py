"""Landlock rules a kernel process puts on itself before any tool runs (Linux).

Landlock (Linux 5.13+, unprivileged) lets a process restrict itself and every
process it later starts, for good; nothing can lift the restriction. A kernel
applies one *domain* before ipykernel starts a thread, so every thread of the
kernel, and every process its tools start, is inside it. What the domain does:

- **ptrace and /proc** (every Landlock version): a process in a domain cannot
  ptrace, nor read ``/proc/PID/environ``, ``mem``, ``fd``, ``cwd`` or ``maps``
  of, a process outside its domain, *even as root*. The user's notebook, its API
  key in the environment, the kernel template and sibling kernels are out of reach.
- **signals and abstract Unix sockets** (ABI 6, Linux 6.12+): no signal to a
  process outside the domain (the notebook, its kernel, the template, sibling
  kernels), no connection to an abstract Unix socket made outside it.
- **files**: paths are allowed by hierarchy. Two shapes are used:
  ``hide`` (outside the sandbox) allows everything except some paths (the Jupyter
  runtime directory with every kernel's connection file); ``confine`` (inside the
  bubblewrap sandbox, see :mod:`._sandbox`) allows reading everything but
  the other kernels' folders and writing only the kernel's own folders, ``/tmp``
  and ``/dev/shm``.

A hidden path is excluded by allowing each of its ancestors' *other* entries,
as they are when the kernel starts; so the ancestors themselves cannot be listed,
and nothing new can be created directly in them (``~`` when the runtime directory
is ``~/.local/share/jupyter/runtime``); their subfolders are unaffected.

This file is stdlib only and runs three ways: imported by the parent (to probe
the ABI), executed by the kernel template in each forked kernel, and run as a
script that wraps a launched kernel's command (``python -I -S THIS --guard SPEC
-- CMD...``): it applies the domain, takes the connection file out of the file
system (see :func:`conceal_connection_file`) and execs the kernel.
"""

import ctypes
import json
import os
import sys

# Syscall numbers are the same on every architecture that has Landlock.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_DROP = 24
_CAPSET = {"x86_64": 126, "aarch64": 91}

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

#: Rights that make sense on a file (the others only on directories).
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
#: Rights that read or run, and never change anything.
READ_RIGHTS = EXECUTE | READ_FILE | READ_DIR
#: The folders the confined kernel may write to besides its own.
SHARED_WRITABLE = ("/tmp", "/dev/shm")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class LandlockError(OSError):
    """The domain could not be applied; the kernel must not run unprotected."""


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def abi_version():
    """The Landlock ABI this kernel offers: 0 when there is none (or not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0),
                                  ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def _fs_rights(abi):
    rights = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def _scopes(abi):
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


def _children(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def hide_rules(hidden, handled):
    """``[(path, rights)]`` that allow all of ``handled`` except beneath ``hidden``."""
    hidden = {os.path.realpath(p) for p in hidden if p}
    hidden.discard("/")
    blocked = set()
    for path in hidden:
        parent = os.path.dirname(path)
        while True:
            blocked.add(parent)
            if parent == "/":
                break
            parent = os.path.dirname(parent)
    if not hidden:
        return [("/", handled)]
    rules = []
    for ancestor in sorted(blocked):
        # Reading the ancestor itself (stat, open of ".") stays possible.
        for name in _children(ancestor):
            entry = os.path.join(ancestor, name)
            if entry in blocked or entry in hidden:
                continue
            rules.append((entry, handled))
    return rules


def confine_rules(own, others_root, handled):
    """Rules for a kernel inside the shared sandbox (see the module docstring).

    ``own`` are the kernel's folders (beneath ``others_root``, which holds every
    kernel's folders and is otherwise hidden, listing included).
    """
    rules = hide_rules([others_root], handled)
    writable = set(SHARED_WRITABLE)
    confined = []
    for path, rights in rules:
        if path in writable or any(path == w or path.startswith(w + "/") for w in writable):
            confined.append((path, rights))
        elif path == "/dev":
            # Device files stay writable (/dev/null, ttys); nothing can be made there.
            confined.append((path, rights & (READ_RIGHTS | WRITE_FILE | TRUNCATE | IOCTL_DEV)))
        else:
            confined.append((path, rights & READ_RIGHTS))
    confined += [(path, handled) for path in SHARED_WRITABLE if os.path.isdir(path)]
    confined += [(path, handled) for path in own]
    return confined


def restrict(rules, handled, scoped):
    """Apply a Landlock domain to this thread and its future children.

    Raises
    ------
    LandlockError
        If the kernel refuses the ruleset: the caller must not go on unprotected.
    """
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise LandlockError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    attr = _RulesetAttr(handled, 0, scoped)
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise LandlockError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue  # gone or unreadable: it stays out of reach
            try:
                info = os.fstat(fd)
                import stat

                if stat.S_ISLNK(info.st_mode):
                    continue  # the target is covered (or not) where it lives
                if not stat.S_ISDIR(info.st_mode):
                    rights &= FILE_RIGHTS
                rights &= handled
                if not rights:
                    continue
                beneath = _PathBeneathAttr(rights, fd)
                if libc.syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                                ctypes.byref(beneath), ctypes.c_uint32(0)) != 0:
                    raise LandlockError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
            finally:
                os.close(fd)
        if libc.syscall(_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise LandlockError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def drop_capabilities():
    """Give up every capability, for good (a kernel run by root keeps none).

    Without CAP_SYS_PTRACE, root cannot read the memory or environment of a
    process that made itself non-dumpable (the parent does, outside the
    sandbox), and without CAP_KILL it cannot signal processes of other users.
    """
    libc = _libc()
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    number = _CAPSET.get(os.uname().machine)
    if number is None:
        return
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: twice 32 bits, all zero
    if libc.syscall(number, ctypes.byref(header), ctypes.byref(data)) != 0:
        raise LandlockError(ctypes.get_errno(), "capset failed")


def apply(spec):
    """Apply a spec made by the parent: ``{"mode": "hide"|"confine", ...}``.

    ``hide``: ``{"hidden": [paths]}``; ``confine``: ``{"own": [paths], "root": path}``.
    Capabilities are dropped first.
    """
    abi = abi_version()
    if abi < 1:
        raise LandlockError(0, "Landlock is not available")
    handled = _fs_rights(abi)
    if spec["mode"] == "confine":
        rules = confine_rules(spec["own"], spec["root"], handled)
    else:
        rules = hide_rules(spec.get("hidden", []), handled)
    if os.geteuid() == 0:
        drop_capabilities()
    restrict(rules, handled, _scopes(abi))


def die_with_parent():
    """Be killed (SIGKILL) when the parent process ends (Linux)."""
    _libc().prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)


def conceal_connection_file(path):
    """Read a connection file into an anonymous in-memory file and delete it.

    Returns the ``/proc/self/fd/N`` path the kernel reads it from instead: no
    other process can find or open it (``/proc/PID/fd`` of another domain is
    out of reach), so the kernel's HMAC key is not on disk once it started.
    """
    with open(path, "rb") as source:
        data = source.read()
    os.unlink(path)
    fd = os.memfd_create("pyvision-connection", 0)  # inheritable: the kernel reads it
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return f"/proc/self/fd/{fd}"


def kill_children(keep=frozenset()):
    """SIGKILL every child of this process but ``keep``: orphans that a subreaper
    (the kernel template, the guard) inherited from a kernel that ended.

    They are its own unreaped children, so their pids cannot have been reused.
    """
    import signal

    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in keep:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                data = stat.read()
            if int(data[data.rfind(b")") + 2:].split()[1]) == me:
                os.kill(int(name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


def _subreap(kernel):
    """Stay as the kernel's parent: reap, and kill what it leaves behind.

    This process is a subreaper, so whatever a tool started (even in a session
    of its own, even with an empty environment) is re-parented here once its
    own parent ends; when the kernel ends, every such process is killed and
    this process ends the way the kernel did.
    """
    import signal

    # Ctrl-C for the kernel reaches this process too (jupyter_client signals the
    # process group): the kernel handles it, this process must not die of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if pid == kernel:
            break
    kill_children()  # what is left is orphans of the kernel's tools
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # end the way the kernel did, so the exit is reported alike
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP keep their default anyway
            pass
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def _guard(argv):
    """``--guard SPEC [--connection-file PATH] -- CMD...``: protect, then run CMD.

    CMD runs in a child; this process stays as its subreaper (see :func:`_subreap`).
    """
    spec = json.loads(argv[1])
    rest = argv[2:]
    connection = None
    if rest[:1] == ["--connection-file"]:
        connection, rest = rest[1], rest[2:]
    if rest[:1] != ["--"] or len(rest) < 2:
        sys.exit("usage: _landlock.py --guard SPEC [--connection-file PATH] -- CMD...")
    command = rest[1:]
    if connection is not None:
        concealed = conceal_connection_file(connection)
        command = [concealed if arg == connection else arg for arg in command]
    apply(spec)
    _libc().prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    kernel = os.fork()
    if kernel == 0:
        die_with_parent()
        # ipykernel quits when its parent changes; its parent is this process.
        os.environ["JPY_PARENT_PID"] = str(os.getppid())
        os.execvp(command[0], command)
    _subreap(kernel)


if __name__ == "__main__" and sys.argv[1:2] == ["--guard"]:
    _guard(sys.argv[1:])
