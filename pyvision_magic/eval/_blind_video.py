"""Blind-task families made of short clips (see :mod:`.blind`), written with OpenCV.

``moving_dot``  a dot slides to the right edge and stops there; at which second does it
                first touch the edge (one decimal; the answer is a frame's exact time).
``flashes``     a square lights up 1-6 times; how many times.

The frames are drawn from the parameters with ``cv2.circle``/array slices (no
anti-aliasing) and the ground truth is computed from the same parameters; the tests
check it by decoding the written MP4 and measuring its pixels. Every change the
answer hinges on is several pixels or levels wide, so MPEG-4 compression cannot move it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Clip", "VIDEO_FAMILIES", "moving_dot", "flashes", "write_clip"]

#: Video families, in generation order; chosen with ``--family``.
VIDEO_FAMILIES = ("moving_dot", "flashes")

BACKGROUND = (30, 30, 30)
DOT = (240, 200, 40)  # RGB


@dataclass
class Clip:
    """One generated clip (frames RGB uint8), its question and its ground truth."""

    frames: list[Any]
    fps: float
    question: str
    answer: str
    answer_type: str
    subtask: str
    params: dict[str, Any] = field(default_factory=dict)


def moving_dot(rng: random.Random) -> Clip:
    """A dot that moves at constant speed until it touches the right edge, then rests."""
    import cv2
    import numpy as np

    width, height = 320, 180
    fps = rng.choice([10, 12, 20, 24])  # whole frames at every half second
    reach = rng.choice([1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    radius = rng.randint(8, 14)
    reach_frame = round(reach * fps)  # an exact frame: reach * fps is a whole number
    total = reach_frame + rng.randint(fps, 2 * fps)
    x0, y = radius + rng.randint(2, 20), rng.randint(radius + 10, height - radius - 10)
    x_end = width - 1 - radius  # the dot's rightmost pixel is on the last column
    frames = []
    for i in range(total):
        x = x0 + round((x_end - x0) * min(i, reach_frame) / reach_frame)
        frame = np.full((height, width, 3), BACKGROUND, np.uint8)
        cv2.circle(frame, (x, y), radius, DOT, thickness=-1, lineType=cv2.LINE_8)
        frames.append(frame)
    return Clip(frames, float(fps),
                "A dot moves to the right in this video. At what time, in seconds from the start "
                "of the clip, does it first touch the right edge of the frame? Answer in seconds "
                "with one decimal.",
                f"{reach_frame / fps:.1f}", "number", "moving_dot",
                {"fps": fps, "reach_frame": reach_frame, "frames": total, "radius": radius})


def flashes(rng: random.Random) -> Clip:
    """A dark frame whose centre square lights up ``count`` times."""
    import numpy as np

    width, height = 160, 120
    fps = rng.choice([10, 12, 15])
    count = rng.randint(1, 6)
    side = rng.randint(30, 60)
    top, left = (height - side) // 2, (width - side) // 2
    lit = []
    for k in range(count):
        lit += [False] * rng.randint(3 if k else 4, 8) + [True] * rng.randint(3, 6)
    lit += [False] * rng.randint(4, 8)
    frames = []
    for on in lit:
        frame = np.full((height, width, 3), BACKGROUND, np.uint8)
        if on:
            frame[top:top + side, left:left + side] = (250, 250, 250)
        frames.append(frame)
    return Clip(frames, float(fps),
                "How many times does the square in the middle of this video light up?",
                str(count), "integer", "flashes",
                {"fps": fps, "count": count, "frames": len(lit)})


def write_clip(clip: Clip, path: str | Path) -> Path:
    """Write ``clip`` as an MPEG-4 (``mp4v``) file, which every OpenCV build with FFmpeg reads."""
    import cv2

    path = Path(path)
    height, width = clip.frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MPEG-4 video to {path}.")
    try:
        for frame in clip.frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
