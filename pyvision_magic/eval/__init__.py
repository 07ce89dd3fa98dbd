"""Evaluation harness: the same model with and without tools, side by side.

The pieces, each in its own module:

- :mod:`~pyvision_magic.eval.tasks` -- the task file format (JSONL) and its loader.
- :mod:`~pyvision_magic.eval.converters` -- converters from local copies of public
  benchmarks (V*, VLMsAreBlind, MathVista, MMMU, VisualPuzzles).
- :mod:`~pyvision_magic.eval.blind` -- offline "Vision Language Models Are Blind"
  style tasks with exact ground truth.
- :mod:`~pyvision_magic.eval.scoring` -- answer extraction and scoring per answer type.
- :mod:`~pyvision_magic.eval.taxonomy` -- the paper's tool categories, by static analysis.
- :mod:`~pyvision_magic.eval.runner` -- concurrent, resumable runs with a token budget.
- :mod:`~pyvision_magic.eval.report` -- accuracy tables, Markdown/JSON and plots.

Heavy libraries (PIL, numpy, matplotlib, openai, jupyter_client) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Task": "tasks",
    "load_tasks": "tasks",
    "write_tasks": "tasks",
    "ANSWER_TYPES": "tasks",
    "generate_blind_tasks": "blind",
    "BLIND_FAMILIES": "blind",
    "score_answer": "scoring",
    "extract_answer": "scoring",
    "Score": "scoring",
    "classify_tool": "taxonomy",
    "ToolClass": "taxonomy",
    "CATEGORIES": "taxonomy",
    "EvalRunner": "runner",
    "RunSummary": "runner",
    "build_report": "report",
    "write_report": "report",
    "CONVERTERS": "converters",
    "convert": "converters",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pyvision_magic.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
