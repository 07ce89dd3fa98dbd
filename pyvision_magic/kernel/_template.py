"""The template process that forks ready-made kernels (runs in the child, not here).

Starting ipykernel costs about 0.7 s of CPU, nearly all of it imports. This
program imports ipykernel, IPython, numpy and PIL once, then waits; each
request makes it fork, and the forked copy becomes a kernel at once, about
0.07 s of CPU later. :mod:`._forkserver` starts it and talks to it.

It is run as ``python -c <this file's text> FD BOOTSTRAP LANDLOCK``: FD is its
end of a ``SOCK_SEQPACKET`` socket pair, one JSON object per packet; BOOTSTRAP
and LANDLOCK are the paths of :mod:`._bootstrap` (for ``lower_priority``
and ``_become_subreaper``) and :mod:`._landlock`. It may run inside the
bubblewrap sandbox (see :mod:`._sandbox`), where its pids are those of
the sandbox's own process namespace and the parent's paths are seen elsewhere.

- Request ``{"id", "argv", "cwd", "env", "nice", "connection", "landlock",
  "translate"}`` with three file descriptors (the kernel's stdin, stdout and
  stderr) attached: fork a kernel that runs ``ipykernel_launcher argv``; reply
  ``{"id", "pid"}`` or ``{"id", "error"}``. ``connection`` is ``[path, content]``:
  the connection file named in ``argv`` is not on disk, and the kernel reads
  it from memory. Before ipykernel starts a thread the kernel applies the Landlock
  spec (see :func:`._landlock.apply`) and asks to die with the template.
  ``translate`` is ``[outside, inside]``: the parent's path prefix of the shared
  kernel folder and where the sandbox shows it.
- Request ``{"signal": pid, "signum": n}``: signal that kernel's process group,
  if it is a kernel that has not been reaped (so the pid cannot have been reused).
- Unasked ``{"exited": pid, "code": n}`` when a kernel ends (``-n``: signal ``n``).
  The template is a subreaper: what a dead kernel left running is re-parented
  to it, and it kills those at once.
- An empty read (the parent is gone) ends the template; its kernels die with it
  (``PR_SET_PDEATHSIG``, or the end of the sandbox's process namespace).

Nothing here may start a thread or a zmq context before forking. The template's
environment is already the kernels' (allowlisted, no secrets), so its memory,
which every kernel inherits, holds nothing the kernels should not see.
"""

import gc
import json
import os
import selectors
import signal
import socket
import sys
import traceback

#: Imported before the first fork; a freshly started kernel has all of these.
PRELOAD = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython.core.completer",
    "jedi",
    "numpy",
    "PIL.Image",
)


#: What ``sys.argv[0]`` is in a launched kernel.
_LAUNCHER = "ipykernel_launcher.py"
#: The kernel bootstrap's functions (its file is the second argument).
_BOOTSTRAP: dict = {}
#: The Landlock module's functions (its file is the third argument).
_LANDLOCK: dict = {}


def _preload() -> None:
    global _LAUNCHER
    # ipykernel_launcher drops the "" that ``-c`` puts first; IPython adds it back.
    if sys.path and sys.path[0] == "":
        del sys.path[0]
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception as exc:  # noqa: BLE001 - a missing extra only costs speed
            print(f"[pyvision template] could not preload {name}: {exc!r}", file=sys.stderr)
    import importlib.util

    spec = importlib.util.find_spec("ipykernel_launcher")
    if spec is not None and spec.origin:
        _LAUNCHER = spec.origin


def _translator(request: dict):
    """Map the parent's paths to this side's (the identity outside the sandbox)."""
    outside, inside = request.get("translate") or ("", "")
    if not outside:
        return lambda value: value

    def translate(value: str) -> str:
        if value == outside or value.startswith(outside + "/"):
            return inside + value[len(outside):]
        return value

    return translate


def _connection_in_memory(content: str, translate) -> str:
    """The connection file's content in an anonymous in-memory file; its path.

    ``/proc/self/fd/N`` of another process is out of reach (Landlock), so the
    kernel's key is nowhere a tool could read it. Inside the sandbox the socket
    paths are translated to where the sandbox shows them.
    """
    info = json.loads(content)
    if isinstance(info.get("ip"), str):
        info["ip"] = translate(info["ip"])
    fd = os.memfd_create("pyvision-connection", 0)  # inheritable: the kernel reads it
    os.write(fd, json.dumps(info).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return f"/proc/self/fd/{fd}"


def _become_kernel(request: dict, fds: list, template_fds: list) -> int:
    """In the forked child: turn into the kernel; returns its exit code."""
    for fd in template_fds:
        os.close(fd)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()  # its own process group, as jupyter_client gives a launched kernel
    template = os.getppid()
    _LANDLOCK["die_with_parent"]()
    if os.getppid() != template:  # the template died before that took effect
        return 1
    if request.get("nice") is not None:
        _BOOTSTRAP["lower_priority"](request["nice"])
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    sys.stdin = os.fdopen(0, "r", closefd=False)
    translate = _translator(request)
    os.chdir(translate(request["cwd"]))
    env = {name: translate(value) for name, value in request["env"].items()}
    # ipykernel quits once its parent changes; its parent is this template. (The
    # trait's default was read from the environment when the template imported it.)
    env["JPY_PARENT_PID"] = str(os.getppid())
    argv = [translate(arg) for arg in request["argv"]]
    if request.get("connection"):
        path, content = request["connection"]
        in_memory = _connection_in_memory(content, translate)
        argv = [in_memory if arg == translate(path) else arg for arg in argv]
    argv.append(f"--IPKernelApp.parent_handle={os.getppid()}")
    if request.get("landlock") is not None:
        # Before ipykernel starts any thread: a domain covers only the threads
        # started after it, and tools could run code on an older one.
        _LANDLOCK["apply"](request["landlock"])
    os.environ.clear()
    os.environ.update(env)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        # The global generator was seeded once in the template; every kernel
        # would draw the same numbers (random reseeds itself after a fork).
        numpy.random.seed()
    from ipykernel import kernelapp

    sys.argv = [_LAUNCHER, *argv[:-1]]
    try:
        kernelapp.IPKernelApp.launch_instance(argv=argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def _send(sock: socket.socket, message: dict) -> None:
    sock.send(json.dumps(message).encode())


def _signal(kernels: set, request: dict) -> None:
    pid = request["signal"]
    if pid not in kernels:  # reaped already (or never ours): its pid may be reused
        return
    try:
        os.killpg(pid, request["signum"])  # the kernel leads its own group
    except OSError:
        try:
            os.kill(pid, request["signum"])
        except OSError:
            pass


def _reap(sock: socket.socket, kernels: set) -> None:
    ended = False
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid in kernels:
            kernels.discard(pid)
            ended = True
            _send(sock, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})
    if ended:
        # Every kernel is a subreaper, so what its tools leave behind stays its own
        # until it dies; then it lands here, since this process is a subreaper too.
        _LANDLOCK["kill_children"](kernels)


def main(fd: int, bootstrap: str, landlock: str) -> None:
    for path, namespace in ((bootstrap, _BOOTSTRAP), (landlock, _LANDLOCK)):
        with open(path, encoding="utf-8") as source:
            exec(compile(source.read(), path, "exec"), namespace)
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    _preload()
    # What the template loaded is never garbage: keep the kernels' collections off
    # it, so they neither walk it (50 ms a time) nor copy its pages by touching it.
    gc.freeze()
    _BOOTSTRAP["_become_subreaper"]()
    kernels: set = set()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Ctrl-C in a terminal reaches the whole foreground group; the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    _send(sock, {"ready": os.getpid()})
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_read:
                try:
                    while os.read(wake_read, 512):
                        pass
                except BlockingIOError:
                    pass
                _reap(sock, kernels)
                continue
            data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
            if not data:
                return  # the parent closed its end: it is gone or done with us
            request = json.loads(data)
            if "signal" in request:
                for received in fds:
                    os.close(received)
                _signal(kernels, request)
                continue
            try:
                pid = os.fork()
            except OSError as exc:
                for received in fds:
                    os.close(received)
                _send(sock, {"id": request["id"], "error": str(exc)})
                continue
            if pid == 0:
                code = 1
                try:
                    selector.close()
                    sock.close()
                    code = _become_kernel(request, fds, [wake_read, wake_write])
                except BaseException:  # noqa: BLE001 - the child must never return
                    traceback.print_exc()
                finally:
                    try:
                        import atexit

                        atexit._run_exitfuncs()
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            kernels.add(pid)
            for received in fds:
                os.close(received)
            _send(sock, {"id": request["id"], "pid": pid})


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
