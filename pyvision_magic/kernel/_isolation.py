"""How a child kernel is confined: the choice of mechanism, and its parts outside bwrap.

``ChildKernel.sandbox`` (True, False or "auto") is resolved here once per kernel
(:func:`choose_isolation`) to an :class:`Isolation`: the bubblewrap sandbox of
:mod:`._sandbox` where it works, each kernel also confined by Landlock
(:mod:`._landlock`) when kernels share one sandbox; otherwise Landlock alone,
with the kernel's capabilities dropped and this process made non-dumpable.
What each mode stops, and what it does not, is the README's "Security model"
table, each row tried by a test in ``tests/test_isolation.py``.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import sys
from dataclasses import dataclass

from . import _landlock
from .._errors import KernelStartError
from ._sandbox import check_bwrap

__all__ = ["Isolation", "choose_isolation", "guard_argv", "landlock_abi", "make_undumpable"]

#: Landlock ABI with signal and abstract-socket scoping (Linux 6.12).
_SCOPED_ABI = 6
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Isolation:
    """How the kernels of one :class:`~._child.ChildKernel` are confined.

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


@functools.cache
def landlock_abi() -> int:
    """The Landlock ABI of this kernel, 0 without (probed once)."""
    return _landlock.abi_version()


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
        # Said once per session by the views (CLI, notebook), which know their user.
        note = str(exc).rstrip(".")
        _log.debug("tools run unsandboxed: %s", note)
        return Isolation(fallback, note=note)
    return Isolation("sandbox", bwrap, shared=can_share and abi >= _SCOPED_ABI)


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
    return [sys.executable, "-I", "-S", _landlock.__file__, "--guard", spec,
            "--connection-file", connection_file, "--"]
