"""Offline tasks in the spirit of "Vision Language Models Are Blind" (Rahmanzadehgervi et al., 2024).

Each family draws simple figures with PIL from random parameters and computes the
ground truth from those parameters, not from the pixels; the tests check every
family's truth by an independent pixel analysis. The same seed gives the same
tasks (and the same PNG bytes for a given Pillow version).

Families (``subtask`` in the task file):

``line_intersections``  two three-point line plots; how many times they cross (0-2).
``touching_circles``    two circles; do they touch or overlap (Yes/No).
``circled_letter``      a word with one letter circled in red; which letter.
``overlapping_circles`` a chain of 5-9 overlapping circles; how many.
``overlapping_pentagons`` the same with pentagons.
``nested_squares``      2-5 squares inside each other; how many.
``grid``                an empty or lettered table; how many rows (or columns),
                        as subtasks ``grid_rows`` and ``grid_columns``.
``subway``              coloured paths between stations A-D; how many single-colour
                        paths go from one station to another (0-3).

Video families (MP4 clips in ``videos/``; only when chosen with ``--family``):

``moving_dot``          a dot slides to the right edge; at which second does it touch it.
``flashes``             a square lights up 1-6 times; how many times.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ._blind_video import VIDEO_FAMILIES
from .tasks import Task, write_tasks

__all__ = ["BLIND_FAMILIES", "VIDEO_FAMILIES", "Drawing", "generate_blind_tasks", "draw_family"]


@dataclass
class Drawing:
    """One generated figure, its question and its ground truth."""

    image: Any  # PIL.Image.Image
    question: str
    answer: str
    answer_type: str
    subtask: str
    params: dict[str, Any] = field(default_factory=dict)


def _families() -> dict[str, Callable[[random.Random], Drawing]]:
    from . import _blind_grids, _blind_shapes, _blind_video

    return {
        "moving_dot": _blind_video.moving_dot,
        "flashes": _blind_video.flashes,
        "line_intersections": _blind_shapes.line_intersections,
        "touching_circles": _blind_shapes.touching_circles,
        "circled_letter": _blind_shapes.circled_letter,
        "overlapping_circles": _blind_shapes.overlapping_circles,
        "overlapping_pentagons": _blind_shapes.overlapping_pentagons,
        "nested_squares": _blind_shapes.nested_squares,
        "grid": _blind_grids.grid,
        "subway": _blind_grids.subway,
    }


#: The family names, in generation order.
BLIND_FAMILIES = (
    "line_intersections",
    "touching_circles",
    "circled_letter",
    "overlapping_circles",
    "overlapping_pentagons",
    "nested_squares",
    "grid",
    "subway",
)


#: Families of clips (:data:`._blind_video.VIDEO_FAMILIES`) are generated only when named.
ALL_FAMILIES = BLIND_FAMILIES + VIDEO_FAMILIES


def draw_family(family: str, seed: int, index: int) -> Drawing:
    """Draw task ``index`` of ``family`` for ``seed`` (independent of other tasks)."""
    makers = _families()
    if family not in makers:
        raise ConfigError(f"Unknown blind task family {family!r}; choose from {', '.join(ALL_FAMILIES)}.")
    # A string seed is hashed with SHA-512: stable across runs and platforms.
    return makers[family](random.Random(f"pyvision-blind:{seed}:{family}:{index}"))


def generate_blind_tasks(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    families: Sequence[str] | None = None,
) -> list[Task]:
    """Generate ``n`` tasks per family into ``out_dir``.

    Writes ``out_dir/images/<id>.png`` and ``out_dir/tasks.jsonl`` (benchmark
    ``blind``) and returns the tasks.
    """
    if n < 1:
        raise ConfigError(f"--n must be at least 1, not {n}.")
    chosen = list(families or BLIND_FAMILIES)
    unknown = [f for f in chosen if f not in ALL_FAMILIES]
    if unknown:
        raise ConfigError(f"Unknown blind task family {unknown[0]!r}; choose from {', '.join(ALL_FAMILIES)}.")
    out = Path(out_dir)
    images = out / "images"
    try:
        images.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the output folder {out}: {exc.strerror}.") from exc
    tasks: list[Task] = []
    for family in chosen:
        for index in range(n):
            drawing = draw_family(family, seed, index)
            task_id = f"{family}-{index:04d}"
            if family in VIDEO_FAMILIES:  # a Clip: written as MP4 beside the images
                from ._blind_video import write_clip

                (out / "videos").mkdir(exist_ok=True)
                path = write_clip(drawing, out / "videos" / f"{task_id}.mp4")
            else:
                path = images / f"{task_id}.png"
                drawing.image.save(path, format="PNG", optimize=False)
            tasks.append(Task(
                id=task_id,
                question=drawing.question,
                images=[path.resolve()],
                answer=drawing.answer,
                answer_type=drawing.answer_type,
                benchmark="blind",
                subtask=drawing.subtask,
                meta={"family": family, "seed": seed, "index": index, **drawing.params},
            ))
    write_tasks(tasks, out / "tasks.jsonl")
    return tasks
