"""The child kernel that runs the model's tools, and what surrounds it.

- :mod:`._base`: what every kernel executor shares (start, execute, restart, shutdown).
- :mod:`._child`: :class:`ChildKernel`, the executor on a local kernel process.
- :mod:`._pool`: :class:`KernelPool`, kernels started ahead of time.
- :mod:`._gateway`: :class:`GatewayKernel`, the executor on a Jupyter Kernel Gateway
  (:mod:`._remote`: one kernel there; :mod:`._gateway_api`: its REST + WebSocket API).
- :mod:`._connection`: one kernel process and its messages.
- :mod:`._output`: what an execution printed and showed, cleaned and capped.
- :mod:`._isolation`: how the kernels are confined (the choice of mechanism).
- :mod:`._sandbox`: the bubblewrap sandbox.
- :mod:`._landlock`: the Landlock domain each kernel applies to itself.
- :mod:`._forkserver` and :mod:`._template`: kernels forked from a template process.
- :mod:`._workspace`: a kernel's folders and how each launch is wrapped.
- :mod:`._env`: a kernel's environment and processes.
- :mod:`._interpreter`: which Python and libraries the tools have.
- :mod:`._bootstrap` and :mod:`._kernel_files`: code that runs inside the kernel.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ChildKernel", "GatewayKernel", "KernelPool"]

# Imported on first use: the kernel template and the Landlock guard load single
# files of this package, and jupyter_client is heavy.
_EXPORTS = {"ChildKernel": "_child", "GatewayKernel": "_gateway", "KernelPool": "_pool"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
