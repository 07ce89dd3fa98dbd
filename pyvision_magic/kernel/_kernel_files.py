"""Code that runs inside the child kernel: which image files an execution wrote.

Sent to the child with :mod:`._bootstrap` and run as the private module
``_pyvision_child_files`` (so nothing here may import pyvision_magic). Models
save their results as often as they show them (``plt.savefig("x.png")``,
``cv2.imwrite``, ``img.save``); the bootstrap shows such files to the model like
shown images, and this module finds them: a listing of the working folder before
the execution, compared with one after it. It also gives a kernel that does not
get a working folder from us (a gateway's) one of its own.
"""

from __future__ import annotations

import os
import shutil

#: The start of the name of a working folder made by :func:`enter_own_folder`.
OWN_FOLDER_PREFIX = "pyvision-tools-"

#: File name endings of the images looked for (what PIL opens and models write).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: Entries looked at per listing, and how deep: a tool that writes a million files
#: must not make every execution slow; what lies past this is not looked for.
MAX_ENTRIES = 5000
MAX_DEPTH = 3


def listing(folder: str = ".") -> dict:
    """``{relative path: (mtime_ns, size, inode)}`` of the image files under ``folder``."""
    found: dict = {}
    seen = 0
    stack = [("", 0)]
    while stack:
        relative, depth = stack.pop()
        try:
            entries = os.scandir(os.path.join(folder, relative) if relative else folder)
        except OSError:  # removed meanwhile, or not readable
            continue
        with entries:
            for entry in entries:
                seen += 1
                if seen > MAX_ENTRIES:
                    return found
                path = os.path.join(relative, entry.name) if relative else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if depth + 1 < MAX_DEPTH:
                            stack.append((path, depth + 1))
                    elif entry.is_file(follow_symlinks=False) and entry.name.lower().endswith(
                            IMAGE_SUFFIXES):
                        stat = entry.stat(follow_symlinks=False)
                        found[path] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
                except OSError:
                    continue
    return found


def written_since(before: dict, folder: str = ".") -> list:
    """Image files under ``folder`` that are new or changed since ``before`` (a
    :func:`listing`), oldest write first."""
    now = listing(folder)
    changed = [path for path, mark in now.items() if before.get(path) != mark]
    return sorted(changed, key=lambda path: (now[path][0], path))


def enter_own_folder(parent: str | None = None) -> str:
    """Make a private working folder, change into it, and remove it at exit.

    A gateway starts its kernels in one folder shared by all of them, where the
    inputs' files and whatever tools save would pile up. The folder is named
    after this process; the folders of this user's processes that are gone (a
    kernel the gateway killed cannot clean up) are removed first.
    """
    import atexit
    import tempfile

    parent = parent or tempfile.gettempdir()
    remove_folders_of_ended_kernels(parent)
    folder = tempfile.mkdtemp(prefix=f"{OWN_FOLDER_PREFIX}{os.getpid()}-", dir=parent)
    os.chdir(folder)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def remove_folders_of_ended_kernels(parent: str) -> None:
    """Remove the :func:`enter_own_folder` folders in ``parent`` of this user's
    processes that no longer run."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid = name[len(OWN_FOLDER_PREFIX):].partition("-")[0]
        if not (name.startswith(OWN_FOLDER_PREFIX) and pid.isdigit()):
            continue
        path = os.path.join(parent, name)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive (someone else's signal rights), or gone meanwhile
            continue
