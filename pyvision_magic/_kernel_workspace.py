"""Where a child kernel runs: its directories, its environment, its sandbox.

A :class:`Workspace` lives as long as a :class:`~._kernel.ChildKernel`; every
kernel process launched for it (restarts included) works in the same scratch
directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._kernel_env import child_environment
from ._kernel_sandbox import bwrap_argv
from ._records import ImageInput

__all__ = ["Workspace"]

_MIME_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}


@dataclass
class Workspace:
    """The directories a kernel uses and, with the sandbox, the bwrap that confines it.

    Every launch gets a fresh directory ``private/k<N>`` for its connection file,
    sockets and log; in the sandbox only that directory and the scratch directory
    are writable. Nothing a sandboxed kernel left behind is written through later:
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
    bwrap : str or None
        The checked bwrap executable when sandboxed, else None.
    """

    private: str
    scratch: str
    owns_scratch: bool
    bwrap: str | None = None
    launches: int = 0

    @classmethod
    def create(cls, scratch_dir: str | None, bwrap: str | None) -> "Workspace":
        """Make the directories; ``bwrap`` (a checked path) asks for the sandbox."""
        private = tempfile.mkdtemp(prefix="pyvision-kernel-")
        if scratch_dir:
            os.makedirs(scratch_dir, exist_ok=True)
            return cls(private, scratch_dir, owns_scratch=False, bwrap=bwrap)
        return cls(private, tempfile.mkdtemp(prefix="pyvision-scratch-"), owns_scratch=True,
                   bwrap=bwrap)

    def new_launch(
        self, parent_env: Mapping[str, str], extra_env: Mapping[str, str]
    ) -> tuple[str, list[str], dict[str, str]]:
        """Prepare the next kernel launch.

        Returns
        -------
        base : str
            Path prefix of its connection file, sockets and log, in a new directory.
        command_prefix : list of str
            The bwrap call that wraps its command; empty without the sandbox.
        env : dict
            Its environment (see :func:`~._kernel_env.child_environment`).
        """
        self.launches += 1
        folder = os.path.join(self.private, f"k{self.launches}")
        os.mkdir(folder, 0o700)
        env = child_environment(parent_env, extra_env)
        if self.bwrap is None:
            return os.path.join(folder, "kernel"), [], env
        if "MPLCONFIGDIR" not in extra_env:
            env["MPLCONFIGDIR"] = _seed_matplotlib_dir(os.path.join(folder, "matplotlib"), parent_env)
        prefix = bwrap_argv(self.bwrap, writable=[folder, self.scratch], workdir=self.scratch)
        return os.path.join(folder, "kernel"), prefix, env

    def write_inputs(self, images: Sequence[ImageInput]) -> list[tuple[str, str]]:
        """Write the input images to ``scratch/inputs``; ``[(image_clue_N, path), ...]``."""
        folder = Path(self.scratch, "inputs")
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            folder.unlink()
        folder.mkdir(exist_ok=True)
        directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
        try:
            items = []
            for index, image in enumerate(images):
                name = f"image_clue_{index}" + _MIME_SUFFIX.get(image.mime, ".img")
                try:
                    os.unlink(name, dir_fd=directory)  # whatever is there, links included
                except FileNotFoundError:
                    pass
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                with open(os.open(name, flags, 0o644, dir_fd=directory), "wb") as file:
                    file.write(image.data)
                items.append((f"image_clue_{index}", str(folder / name)))
            return items
        finally:
            os.close(directory)

    def remove(self) -> None:
        """Delete the private directory, and the scratch directory if made here."""
        shutil.rmtree(self.private, ignore_errors=True)
        if self.owns_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


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
