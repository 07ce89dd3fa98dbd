"""Kernels started ahead of time, so a new session does not wait for one."""

from __future__ import annotations

import asyncio
from typing import Any

from traitlets import Int, Unicode
from traitlets.config import LoggingConfigurable

from .._errors import KernelError, KernelStartError
from ._child import ChildKernel

__all__ = ["KernelPool"]


class KernelPool(LoggingConfigurable):
    """Keeps ``size`` child kernels started, with their libraries imported.

    :meth:`acquire` hands one over at once when one is ready and starts a
    replacement in the background. The caller owns an acquired kernel and shuts
    it down; kernels are never returned to the pool, since tools leave state
    behind. Kernels are configured like any :class:`ChildKernel` (they take the
    pool's config, e.g. ``c.ChildKernel.timeout``).
    """

    size = Int(
        1, help="Number of kernels kept started and ready. 0 makes acquire() start one cold."
    ).tag(config=True)

    gateway_url = Unicode(
        None, allow_none=True,
        help="Start the kernels on this Jupyter Kernel Gateway (configured like any "
        "GatewayKernel) instead of as local child kernels. None: local kernels.",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pending: list[tuple[ChildKernel, asyncio.Future[None]]] = []
        self._closed = False

    async def __aenter__(self) -> "KernelPool":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    def _kernel(self) -> Any:
        if self.gateway_url:
            from ._gateway import GatewayKernel

            return GatewayKernel(parent=self, url=self.gateway_url)
        return ChildKernel(parent=self)

    def _new(self) -> tuple[ChildKernel, asyncio.Future[None]]:
        kernel = self._kernel()
        return kernel, asyncio.ensure_future(kernel.start())

    def _refill(self) -> None:
        while not self._closed and len(self._pending) < self.size:
            self._pending.append(self._new())

    async def start(self) -> None:
        """Start filling the pool and wait until every kernel in it is ready."""
        if self._closed:
            raise KernelError("This pool was shut down; create a new KernelPool.")
        self._refill()
        await asyncio.gather(*(task for _, task in self._pending), return_exceptions=True)

    @property
    def ready(self) -> int:
        """Number of kernels that can be handed over at once."""
        return sum(task.done() and not task.exception() for _, task in self._pending)

    async def acquire(self, wait: bool = True) -> ChildKernel:
        """A started kernel: a ready one at once, else the first to finish starting.

        ``wait=False`` hands over a ready kernel if there is one, else one that is
        still starting (its :meth:`ChildKernel.start` waits for that start), so the
        caller can overlap the rest of the start with its own work: a session sends
        its first request meanwhile.

        Raises
        ------
        KernelStartError
            If no kernel can be started (with ``wait=False``, raised by the kernel's
            own ``start()`` instead).
        """
        if self._closed:
            raise KernelError("This pool was shut down; create a new KernelPool.")
        self._refill()
        if not self._pending:  # size 0: nothing kept warm
            kernel = self._kernel()
            if wait:
                await kernel.start()
            return kernel
        done = [entry for entry in self._pending if entry[1].done()]
        if not done and not wait:
            kernel, task = self._pending.pop(0)
            self._refill()
            task.add_done_callback(_seen)  # the kernel's own start() reports a failure
            return kernel
        if not done:
            await asyncio.wait([task for _, task in self._pending], return_when=asyncio.FIRST_COMPLETED)
            done = [entry for entry in self._pending if entry[1].done()]
        kernel, task = done[0]
        self._pending.remove((kernel, task))
        self._refill()
        if task.exception() is not None:
            await kernel.shutdown()
            if not wait:  # a new kernel, whose start() will say what is wrong
                return self._kernel()
            failure = task.exception()
            if isinstance(failure, KernelStartError):  # its sentence says what to do
                raise failure
            raise KernelStartError(
                "A pooled kernel failed to start; check the kernel settings and try again."
            ) from failure
        return kernel

    async def shutdown(self) -> None:
        """Shut down every kernel still in the pool. Idempotent."""
        self._closed = True
        pending, self._pending = self._pending, []
        await asyncio.gather(*(kernel.shutdown() for kernel, _ in pending), return_exceptions=True)
        for _, task in pending:
            if task.done() and not task.cancelled():
                task.exception()  # mark a failed start as seen


def _seen(task: "asyncio.Future[None]") -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the kernel's start() raises it to its caller
