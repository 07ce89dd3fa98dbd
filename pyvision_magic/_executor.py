"""The interface through which the session runs the model's tools."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

from ._meta import InterfaceMeta
from ._records import ExecutionResult, ImageInput

__all__ = ["Executor"]


class Executor(metaclass=InterfaceMeta):
    """Runs generated code somewhere the user's notebook is safe from it.

    Called by :class:`~pyvision_magic.Session`, in this order: :meth:`start` once
    (possibly early, while the first model request is still in flight),
    :meth:`bind_images` once with the question's images, :meth:`execute` once per
    tool, :meth:`shutdown` when the session closes. :meth:`interrupt` may come at
    any time from a stop request. All methods are coroutines on the session's loop.

    An execution never raises for what the code did: errors, timeouts and kernel
    deaths come back as an :class:`ExecutionResult` whose ``status`` says so, since
    the model must be told and the session must go on. Only failures of the
    executor itself (the kernel cannot start) raise :class:`KernelError`.
    """

    @abstractmethod
    async def start(self) -> None:
        """Start the backend, if not started yet. Calling it twice is harmless."""

    @abstractmethod
    async def bind_images(self, images: Sequence[ImageInput]) -> list[str]:
        """Make the images available to code as ``image_clue_0``, ``image_clue_1``, ...

        Returns the names bound, in order. Images produced later by tools are
        numbered after these.
        """

    @abstractmethod
    async def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        """Run ``code`` and collect what it printed, displayed and raised.

        ``timeout`` is in seconds; ``None`` uses the executor's default.
        Output of one execution never leaks into another.
        """

    @abstractmethod
    async def interrupt(self) -> None:
        """Interrupt the running execution, if any (like Ctrl-C)."""

    @abstractmethod
    async def restart(self) -> None:
        """Start afresh: all state is lost; images must be bound again."""

    @abstractmethod
    async def shutdown(self) -> None:
        """Stop the backend and every process the code started. Idempotent."""

    async def importable_libraries(self) -> list[str]:
        """Names of the notable libraries that code can import (for the prompt)."""
        return []
