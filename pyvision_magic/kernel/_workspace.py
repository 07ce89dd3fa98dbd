"""Where a child kernel runs: its directories, its environment, its sandbox.

A :class:`Workspace` lives as long as a :class:`~._child.ChildKernel`; every
kernel process launched for it (restarts included) works in the same scratch
directory.

Every folder this process makes for kernels lives under one per-process folder,
``$TMPDIR/pyvision-<pid>-XXXX`` (:func:`process_root`): it is removed at exit,
and a folder left by a process that was killed (a notebook kernel stopped by
SIGKILL) is removed by the next process that makes one.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._env import child_environment, process_running
from . import _forkserver
from ._forkserver import ForkServer, close_servers
from ._env import hidden_jupyter_paths
from ._isolation import Isolation, guard_argv
from ._sandbox import SHARED_INSIDE, bwrap_argv, template_argv
from .._records import ImageInput

__all__ = ["Launch", "Workspace", "process_root"]

_ROOT: dict[str, str] = {}
_ROOT_LOCK = threading.Lock()
_ROOT_PREFIX = "pyvision-"


def process_root() -> str:
    """This process's folder for kernel folders (made on first use)."""
    with _ROOT_LOCK:
        root = _ROOT.get("path")
        if root is None or _ROOT.get("pid") != str(os.getpid()):
            _sweep_stale_roots()
            root = tempfile.mkdtemp(prefix=f"{_ROOT_PREFIX}{os.getpid()}-")
            _ROOT.update(path=root, pid=str(os.getpid()))
        return root


def _sweep_stale_roots() -> None:
    """Remove the folders of processes of this user that ended without cleaning up."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{_ROOT_PREFIX}*-*")):
        pid = os.path.basename(path)[len(_ROOT_PREFIX):].partition("-")[0]
        try:
            mine = os.stat(path).st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


@atexit.register
def _remove_root() -> None:
    root = _ROOT.get("path")
    if root is None or _ROOT.get("pid") != str(os.getpid()):
        return  # a forked child's copy of the parent's state
    close_servers()  # their kernels use the folders
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Launch:
    """What one kernel launch needs (see :meth:`Workspace.new_launch`).

    Attributes
    ----------
    base : str
        Path prefix of its connection file, sockets and log, in a new directory.
    command_prefix : list of str
        What wraps a launched kernel's command: the bwrap call, or the Landlock
        guard outside the sandbox; empty for none.
    env : dict
        Its environment (see :func:`~._env.child_environment`).
    server : ForkServer or None
        The template that forks it, when kernels are forked.
    landlock : dict or None
        The Landlock spec a forked kernel applies (see ``_landlock.apply``).
    """

    base: str
    command_prefix: list[str]
    env: dict[str, str]
    server: ForkServer | None = None
    landlock: dict[str, Any] | None = None
    sandboxed: bool = False


@dataclass
class Workspace:
    """The directories a kernel uses and, with the sandbox, the bwrap that confines it.

    Every launch gets a fresh directory with a random name under ``private`` for
    its connection file, sockets and log; in the sandbox only that directory and
    the scratch directory are writable (and, for a forked kernel, the only
    kernel folders it can see). Nothing a sandboxed kernel left behind is written through later:
    the next launch's files go to a directory it never saw, and input images are
    written without following links (a tool could plant ``inputs/image_clue_0.png``
    as a link to a file of the user's, for the parent to overwrite at a restart).

    Attributes
    ----------
    private : str
        Parent of the per-launch directories; removed at the end.
    scratch : str
        The kernel's working directory, where input images are written.
    owns_scratch : bool
        Whether ``scratch`` was made here, and is removed at the end.
    isolation : Isolation
        How its kernels are confined (see :mod:`._isolation`); ``isolation.shared``
        (kernels forked by one template inside one sandbox) is only chosen for
        kernels that can fork and own their scratch folder.
    fork : bool
        Whether kernels are forked from a template (else launched).
    memory_limit : int or None
        Bounds the sandbox's in-memory folders, like the kernel's address space.
    """

    private: str
    scratch: str
    owns_scratch: bool
    isolation: Isolation = field(default_factory=lambda: Isolation("none"))
    fork: bool = False
    memory_limit: int | None = None

    @classmethod
    def create(cls, scratch_dir: str | None, isolation: Isolation, *, fork: bool = False,
               memory_limit: int | None = None) -> "Workspace":
        """Make the directories, under :func:`process_root` unless ``scratch_dir`` is given.

        Names are random: a kernel that learns one (from a socket path) cannot
        guess the others.
        """
        root = process_root()
        private = tempfile.mkdtemp(prefix="k-", dir=root)
        options = dict(isolation=isolation, fork=fork, memory_limit=memory_limit)
        if scratch_dir:
            os.makedirs(scratch_dir, exist_ok=True)
            return cls(private, scratch_dir, owns_scratch=False, **options)
        return cls(private, tempfile.mkdtemp(prefix="s-", dir=root), owns_scratch=True, **options)

    def kernel_path(self, path: str, *, forked: bool) -> str:
        """``path`` (under :func:`process_root`) as a kernel sees it.

        ``forked``: whether that kernel was forked by the template, which shows
        the folder elsewhere in the shared sandbox (a launched one sees it as is).
        """
        root = process_root()
        if forked and self.isolation.shared and (path == root or path.startswith(root + os.sep)):
            return SHARED_INSIDE + path[len(root):]
        return path

    def new_launch(self, parent_env: Mapping[str, str], extra_env: Mapping[str, str]) -> Launch:
        """Prepare the next kernel launch (see :class:`Launch`)."""
        folder = os.path.join(self.private, uuid.uuid4().hex)
        os.makedirs(self.private, 0o700, exist_ok=True)
        os.mkdir(folder, 0o700)
        # A tool may have deleted its working folder before its kernel died.
        os.makedirs(self.scratch, exist_ok=True)
        env = child_environment(parent_env, extra_env)
        base = os.path.join(folder, "kernel")
        connection_file = base + ".json"
        isolation = self.isolation
        if not isolation.sandboxed:
            server = _forkserver.server_for(env) if self.fork else None
            if isolation.kind != "landlock":
                return Launch(base, [], env, server)
            hidden = hidden_jupyter_paths()
            return Launch(base, guard_argv(hidden, connection_file), env, server,
                          {"mode": "hide", "hidden": hidden})
        assert isolation.bwrap is not None
        if "MPLCONFIGDIR" not in extra_env:
            matplotlib = _seed_matplotlib_dir(os.path.join(folder, "matplotlib"), parent_env)
            env["MPLCONFIGDIR"] = matplotlib
        # Launched (no template, or it failed): a sandbox of its own.
        prefix = bwrap_argv(isolation.bwrap, writable=[folder, self.scratch], workdir=self.scratch,
                            memory_limit=self.memory_limit)
        if not self.isolation.shared:
            return Launch(base, prefix, env, sandboxed=True)
        root = process_root()
        server = _forkserver.server_for(env, prefix=template_argv(isolation.bwrap, shared=root,
                                                     memory_limit=self.memory_limit),
                            translate=(root, SHARED_INSIDE))
        spec = {"mode": "confine", "root": SHARED_INSIDE,
                "own": [self.kernel_path(folder, forked=True),
                        self.kernel_path(self.scratch, forked=True)]}
        return Launch(base, prefix, env, server, spec, sandboxed=True)

    def write_inputs(self, images: Sequence[ImageInput], *,
                     forked: bool = False) -> list[tuple[str, str]]:
        """Write the input images to ``scratch/inputs`` and, by the bare name models
        use (``Image.open("image_clue_0.png")``), to ``scratch`` itself.

        Returns ``[(image_clue_N, path under inputs), ...]``, in the kernel's paths
        (see :meth:`kernel_path`).
        """
        folder = Path(self.scratch, "inputs")
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            folder.unlink()
        folder.mkdir(exist_ok=True)
        items = []
        for index, image in enumerate(images):
            name = image.file_name(index)
            _write_new(folder, name, image.data)
            # The scratch folder is ours or the user's (maybe a link); its files are the tool's.
            _write_new(Path(self.scratch), name, image.data, folder_link_ok=True)
            items.append((f"image_clue_{index}", self.kernel_path(str(folder / name), forked=forked)))
        return items

    def remove(self) -> None:
        """Delete the private directory, and the scratch directory if made here."""
        shutil.rmtree(self.private, ignore_errors=True)
        if self.owns_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _write_new(folder: Path, name: str, data: bytes, *, folder_link_ok: bool = False) -> None:
    """Write ``folder/name`` as a new file, never through what a tool left there."""
    nofollow = 0 if folder_link_ok else getattr(os, "O_NOFOLLOW", 0)
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | nofollow)
    try:
        try:
            os.unlink(name, dir_fd=directory)  # whatever is there, links included
        except FileNotFoundError:
            pass
        except IsADirectoryError:  # a tool made a folder of that name
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with open(os.open(name, flags, 0o644, dir_fd=directory), "wb") as file:
            file.write(data)
    finally:
        os.close(directory)


def _seed_matplotlib_dir(folder: str, environ: Mapping[str, str]) -> str:
    """A writable matplotlib directory for the sandbox, with the parent's font cache.

    In the sandbox matplotlib's own directories are read-only, so it would warn
    and rebuild its font list at every start (seconds with many fonts).
    """
    home = environ.get("HOME") or os.path.expanduser("~")
    configured = environ.get("MPLCONFIGDIR")
    config = configured or os.path.join(
        environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "matplotlib"
    )
    cache = configured or os.path.join(
        environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "matplotlib"
    )
    os.makedirs(folder, exist_ok=True)
    for source in [os.path.join(config, "matplotlibrc"), *glob.glob(os.path.join(cache, "fontlist-*.json"))]:
        try:
            shutil.copy(source, folder)
        except OSError:  # absent or unreadable: matplotlib builds its own
            pass
    return folder
