"""pyvision_magic: a multimodal model answers questions about images by writing
Python tools that run in a child Jupyter kernel.

Heavy modules (openai, jupyter_client, PIL, numpy) load only when first used,
so importing the package, or loading the IPython extension, stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> private module that defines it
_EXPORTS = {
    "Session": "_session",
    "Transcript": "_transcript",
    "Turn": "_transcript",
    "Model": "_model",
    "ModelReply": "_model",
    "OpenAIModel": "_model",
    "ReplayModel": "_replay",
    "Executor": "_executor",
    "ChildKernel": "kernel._child",
    "KernelPool": "kernel._pool",
    "Output": "_records",
    "ExecutionResult": "_records",
    "ImageInput": "_records",
    "Usage": "_records",
    "load_image": "_images",
    "encode_for_model": "_images",
    "load_video": "_video",
    "VideoInput": "_video",
    "VideoClue": "kernel.video_reader",
    "parse_reply": "_parsing",
    "load_ipython_extension": "magics",
    "unload_ipython_extension": "magics",
    "PyVisionError": "_errors",
    "ConfigError": "_errors",
    "ImageInputError": "_errors",
    "ModelError": "_errors",
    "ModelAuthError": "_errors",
    "ModelNotFoundError": "_errors",
    "ModelUnreachable": "_errors",
    "ModelRateLimited": "_errors",
    "ModelStreamError": "_errors",
    "KernelError": "_errors",
    "KernelStartError": "_errors",
    "KernelDied": "_errors",
    "ToolTimeout": "_errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pyvision_magic' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
