"""Callbacks that may be plain functions or coroutines."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["run_hook", "Callbacks"]

log = logging.getLogger("pyvision_magic")


async def run_hook(hook: Callable[..., Any] | None, *args: Any) -> Any:
    """Call ``hook(*args)``, awaiting the result if it is awaitable."""
    if hook is None:
        return None
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class Callbacks:
    """An ordered set of observers for one kind of event.

    A failing observer is logged and skipped: a broken view must not end the
    session it is watching.
    """

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []

    def register(self, callback: Callable[..., Any], remove: bool = False) -> None:
        """Add ``callback``, or take it away with ``remove=True``."""
        if remove:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
        elif callback not in self._callbacks:
            self._callbacks.append(callback)

    async def fire(self, *args: Any) -> None:
        for callback in list(self._callbacks):
            try:
                await run_hook(callback, *args)
            except Exception:
                log.exception("observer %r failed", callback)

    def __len__(self) -> int:
        return len(self._callbacks)
