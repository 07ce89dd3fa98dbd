"""A private event loop in a daemon thread, where every session of the magic runs.

The child kernels' zmq sockets belong to the loop that created them, so each
session's whole life (its run, and later Run and Fork clicks) goes through this
one loop. The notebook's own loop stays free: the cell only waits for a future,
which it can do while the frontend's comm messages (a Stop click) are handled.
This follows IPython's ``ScriptMagics``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running in a daemon thread; started on first use."""

    def __init__(self, name: str = "pyvision-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started if it was not."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=main, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._loop.is_closed()

    def in_loop(self) -> bool:
        """True when called from the loop's own thread."""
        return self._thread is threading.current_thread()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop's thread."""
        self.loop.call_soon_threadsafe(callback, *args)

    def wait(
        self,
        future: concurrent.futures.Future[T],
        on_interrupt: Callable[[], Any] | None = None,
        grace: float = 30.0,
    ) -> T:
        """Block until ``future`` is done.

        The first Ctrl-C calls ``on_interrupt()`` (which should make the work end
        soon) and keeps waiting up to ``grace`` seconds; a second Ctrl-C, or the
        grace running out, raises :class:`KeyboardInterrupt`.
        """
        interrupted = False
        while True:
            try:
                return future.result(timeout=grace if interrupted else None)
            except KeyboardInterrupt:
                if interrupted or on_interrupt is None:
                    raise
                interrupted = True
                on_interrupt()
            except concurrent.futures.TimeoutError:
                raise KeyboardInterrupt from None

    async def wait_async(
        self,
        future: concurrent.futures.Future[T],
        on_interrupt: Callable[[], Any] | None = None,
        grace: float = 30.0,
    ) -> T:
        """Like :meth:`wait`, from a coroutine on another loop (an async cell).

        An interrupt of an async cell reaches neither a ``KeyboardInterrupt``
        nor, reliably, a cancellation (ipykernel 7 may drop it), so while it
        waits a SIGINT handler of its own calls ``on_interrupt()``; a second
        SIGINT cancels the wait.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        interrupts = 0

        def on_sigint(*_: Any) -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1 and on_interrupt is not None:
                on_interrupt()
            elif task is not None:
                loop.call_soon_threadsafe(task.cancel)

        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            while True:
                try:
                    return await asyncio.shield(asyncio.wrap_future(future))
                except asyncio.CancelledError:
                    # A cancellation meant as an interrupt (older ipykernel) stops first.
                    if interrupts > 1 or on_interrupt is None:
                        raise
                    interrupts += 1
                    if task is not None and hasattr(task, "uncancel"):
                        task.uncancel()
                    on_interrupt()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def close(self, cleanup: Coroutine[Any, Any, Any] | None = None, timeout: float = 20.0) -> None:
        """Run ``cleanup`` on the loop (e.g. shut down kernels), then stop the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed():
            if cleanup is not None:
                cleanup.close()
            return
        if cleanup is not None:
            try:
                asyncio.run_coroutine_threadsafe(cleanup, loop).result(timeout)
            except Exception:  # best effort: the thread must stop anyway
                pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if not loop.is_running():
            loop.close()
