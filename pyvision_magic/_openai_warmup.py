"""Importing ``openai`` and building the HTTP client in a thread, before the first request."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._model import OpenAIModel

__all__ = ["import_openai_soon"]


def import_openai_soon(model: OpenAIModel) -> None:
    """Import ``openai`` and what its first request needs (0.5-1 s in all: the client's
    transport, the response types, the stream decoder) in a thread, so the first request
    does not wait for it after the images are encoded and the kernel started. Python's
    import lock makes an import elsewhere wait for this one instead of importing twice."""
    threading.Thread(target=_warm_openai, args=(model,), name="pyvision-import-openai",
                     daemon=True).start()


def _warm_openai(model: OpenAIModel) -> None:
    if "openai" in sys.modules:
        model.warm_up()
        return
    try:
        import numpy  # noqa: F401 - the image encoder's, needed before the first request
        import openai
        import openai._streaming  # noqa: F401
        import openai.lib.streaming.chat  # noqa: F401
        from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: F401

        # A client imports its HTTP transport and resources lazily; this one never connects.
        openai.AsyncOpenAI(api_key="warm-up", base_url="http://127.0.0.1:9/v1",
                           max_retries=0).chat.completions  # noqa: B018
        import anyio._backends._asyncio  # noqa: F401 - what the first request imports
    except Exception:  # noqa: BLE001 - only a warm-up: the real request reports any fault
        return
    model.warm_up()  # its own client, with its TLS set-up (~50 ms)
