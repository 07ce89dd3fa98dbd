"""Shared fixtures: the loopback chat server, test images, and a session runner."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chat_server import chat_server, make_chat_server  # noqa: F401  (fixtures)

from pyvision_magic.testing import code_reply  # noqa: F401  (tests import it from here)


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    """A 120x80 PNG: white, with a red square and a blue square."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (120, 80), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([10, 10, 40, 40], fill=(255, 0, 0))
    draw.rectangle([70, 30, 100, 60], fill=(0, 0, 255))
    path = tmp_path / "squares.png"
    img.save(path)
    return path


@pytest.fixture
def no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not depend on the developer's own endpoint settings."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PYVISION_MODEL"):
        monkeypatch.delenv(name, raising=False)


def run_session(question: str, images: list[Any], model: Any, observe: Any = None,
                **session_kwargs: Any):
    """Run a Session against a fresh child kernel and return it (kernel shut down).

    ``observe(session)`` is called before the run, to register observers.
    """
    from pyvision_magic.kernel._child import ChildKernel
    from pyvision_magic._session import Session

    async def go():
        kernel = ChildKernel()
        session = Session(question, images, model=model, executor=kernel, **session_kwargs)
        if observe is not None:
            observe(session)
        try:
            await session._async_run()
        finally:
            await kernel.shutdown()
            await model.aclose()
        return session

    return asyncio.run(go())


@pytest.fixture(scope="session", autouse=True)
def leaves_no_kernel_folders():
    """The suite leaves no ``pyvision-*`` folder in the temp dir (ours or a subprocess's).

    This process's own folder is removed at exit; by the end of the session it
    must already be empty: every kernel shut down removed what it made.
    """
    import glob
    import os
    import tempfile

    pattern = os.path.join(tempfile.gettempdir(), "pyvision-*")
    before = set(glob.glob(pattern))
    yield
    from pyvision_magic.kernel import _workspace

    # A subprocess killed on purpose (an interrupted eval, say) cannot clean up;
    # the next process that makes kernel folders removes its folder, as here.
    _workspace._sweep_stale_roots()
    # Likewise a gateway kernel killed on purpose: the next one removes its folder.
    from pyvision_magic.kernel import _kernel_files

    _kernel_files.remove_folders_of_ended_kernels(tempfile.gettempdir())
    own = _workspace._ROOT.get("path")
    left = sorted(set(glob.glob(pattern)) - before - {own})
    leftover = sorted(os.listdir(own)) if own and os.path.isdir(own) else []
    assert not left and not leftover, (
        f"folders left in the temp dir: {left}; in this process's kernel folder: {leftover}")
