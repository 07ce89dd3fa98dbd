"""What surrounds a child kernel at the OS level: its environment and its processes.

Generated code must not see the user's API keys, so the child gets an
allowlist of the parent's variables (what Python, ipykernel and the numeric
libraries need) and anything that looks like a secret is removed even when
its name is on the allowlist.

Code may start processes that outlive it (``start_new_session=True``, double
forks), so the kernel's whole tree is found through ``/proc`` -- by parent
links and by a marker variable every descendant inherits -- and killed.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "ALLOWED_NAMES",
    "ALLOWED_PREFIXES",
    "MARKER_VARIABLE",
    "looks_secret",
    "child_environment",
    "hidden_jupyter_paths",
    "kernel_tree",
    "kill_processes",
    "proc_pids",
    "process_links",
    "process_running",
]

#: Set to a per-kernel id in the child; every process it starts inherits it.
MARKER_VARIABLE = "PYVISION_KERNEL_ID"

#: Variables passed through by exact name.
ALLOWED_NAMES: frozenset[str] = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "TERM",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONNOUSERBASE",
        "PYTHONUSERBASE",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "CONDA_DEFAULT_ENV",
        "PYENV_VERSION",
        "LD_LIBRARY_PATH",
        "OMP_NUM_THREADS",
        # Where Jupyter and IPython keep their files; ipykernel reads these.
        "JUPYTER_PATH",
        "JUPYTER_CONFIG_DIR",
        "JUPYTER_DATA_DIR",
        "JUPYTER_RUNTIME_DIR",
        "JUPYTER_PLATFORM_DIRS",
        "IPYTHONDIR",
        "MPLCONFIGDIR",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_RUNTIME_DIR",
        # Tesseract finds its language data through this.
        "TESSDATA_PREFIX",
        # Windows needs these to start any process at all.
        "SYSTEMROOT",
        "WINDIR",
        "COMSPEC",
        "PATHEXT",
    }
)

#: Variables passed through by prefix (locale and BLAS threading knobs).
ALLOWED_PREFIXES: tuple[str, ...] = ("LC_", "OPENBLAS_", "MKL_", "OMP_")

# Substrings and prefixes of names that usually hold credentials.
_SECRET_WORDS = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|PRIVATE|SESSION_ID",
    re.IGNORECASE,
)
_SECRET_PREFIXES = (
    "OPENAI_",
    "AZURE_",
    "AWS_",
    "GOOGLE_",
    "GCP_",
    "GCLOUD_",
    "ANTHROPIC_",
    "HF_",
    "HUGGING",
    "GITHUB_",
    "GH_",
    "GITLAB_",
    "PYVISION_",
    "MISTRAL_",
    "GROQ_",
    "COHERE_",
    "DEEPSEEK_",
    "GEMINI_",
    "TOGETHER_",
    "OPENROUTER_",
)
# Values that are API keys whatever the variable is called.
_SECRET_VALUE = re.compile(r"^(sk-|sk_|ghp_|gho_|github_pat_|hf_|xox[abp]-|AKIA)[A-Za-z0-9_\-]{8,}")


def looks_secret(name: str, value: str = "") -> bool:
    """Tell whether a variable probably holds a credential.

    Parameters
    ----------
    name : str
        The variable's name.
    value : str
        Its value; some key formats are recognisable by value alone.
    """
    upper = name.upper()
    return bool(
        _SECRET_WORDS.search(upper)
        or upper.startswith(_SECRET_PREFIXES)
        or _SECRET_VALUE.match(value)
    )


def child_environment(
    parent: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
    *,
    mpl_backend: str = "module://matplotlib_inline.backend_inline",
) -> dict[str, str]:
    """Build the environment of a child kernel.

    Parameters
    ----------
    parent : mapping
        The parent's environment, usually ``os.environ``.
    extra : mapping, optional
        Variables the user adds explicitly; they are passed as given, since
        naming a variable in configuration is a deliberate choice.
    mpl_backend : str
        The matplotlib backend the child starts with.

    Returns
    -------
    dict
        Allowlisted, non-secret variables of ``parent``, then ``MPLBACKEND``
        and a few quieting switches, then ``extra``.
    """
    env = {
        name: value
        for name, value in parent.items()
        if (name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES))
        and not looks_secret(name, value)
    }
    env["MPLBACKEND"] = mpl_backend
    # The debugger's frozen-modules warning would otherwise land on the kernel's stderr.
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


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



def proc_pids() -> list[int]:
    """Every process id in ``/proc``; empty where there is none (macOS)."""
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:  # no /proc (macOS): only the kernel itself can be killed
        return []


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` from the state on, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    return data[data.rfind(b")") + 2 :].split()


def process_links(pid: int) -> tuple[int, int] | None:
    """``(parent pid, process group id)`` of a process, or None if it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[1]), int(fields[2])) if fields and len(fields) > 2 else None


def process_running(pid: int) -> bool:
    """Whether a process exists and has not ended (a zombie has ended)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in (b"Z", b"X")


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return marker in environ.read().split(b"\0")
    except OSError:
        return False


def kernel_tree(root: int | None, marker: str | None = None) -> set[int]:
    """Processes that belong to a kernel, the kernel itself excluded.

    Parameters
    ----------
    root : int or None
        The kernel's pid; its descendants are found by parent links.
    marker : str, optional
        The value of :data:`MARKER_VARIABLE` in this kernel; processes that carry
        it are included even after they were orphaned (the kernel died first).
    """
    pids = proc_pids()
    children: dict[int, list[int]] = {}
    for pid in pids:
        links = process_links(pid)
        if links is not None:
            children.setdefault(links[0], []).append(pid)
    found: set[int] = set()
    stack = [root] if root else []
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    if marker:
        needle = f"{MARKER_VARIABLE}={marker}".encode()
        found.update(pid for pid in pids if pid not in found and _has_marker(pid, needle))
    found.discard(os.getpid())
    if root:
        found.discard(root)
    return found


def _start_time(pid: int) -> bytes | None:
    """When a process started (``/proc/PID/stat`` field 22), or None if it is gone."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


class _Handle:
    """A process as found: a pidfd where there is one, and its start time.

    A pid found in ``/proc`` may be reused before it is signalled; a pidfd names
    the process itself, and the start time, read before and after opening it,
    proves the pidfd is the process that was found.
    """

    def __init__(self, pid: int) -> None:
        self.pid, self.fd = pid, None
        started = _start_time(pid)
        if started is None:
            return
        try:
            self.fd = os.pidfd_open(pid)  # type: ignore[attr-defined]
        except (AttributeError, OSError):  # no pidfd (old Linux, not Linux): check each time
            self.started = started
            return
        if _start_time(pid) != started:  # reused in between: not ours
            os.close(self.fd)
            self.fd = None
        self.started = started

    def send(self, signum: int) -> None:
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, signum)  # type: ignore[attr-defined]
            elif getattr(self, "started", None) is not None and _start_time(self.pid) == self.started:
                os.kill(self.pid, signum)
        except OSError:  # ended meanwhile
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def kill_processes(find: Callable[[], Iterable[int]], rounds: int = 5) -> int:
    """Stop, then kill, every process ``find()`` returns, until it returns none new.

    Stopping first keeps a process from forking new ones while we look for them.
    Each process is signalled through a pidfd taken when it was found (or after
    checking its start time), never by a pid that may have been reused.
    Returns how many processes were killed.
    """
    handles: dict[int, _Handle] = {}
    try:
        for _ in range(rounds):
            new = set(find()) - set(handles)
            if not new:
                break
            for pid in new:
                handle = handles[pid] = _Handle(pid)
                handle.send(signal.SIGSTOP)
        for handle in handles.values():
            handle.send(signal.SIGKILL)
    finally:
        for handle in handles.values():
            handle.close()
    return len(handles)
