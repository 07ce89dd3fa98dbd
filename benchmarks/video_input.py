"""What a video input costs before the model sees it, against decoding the whole clip.

The clip is a generated 640x360 MPEG-4 at 30 fps (60 s; 4 s with ``--quick``), written
with cv2.VideoWriter into a temporary folder. Figures:

- ``probe + sample time``: ``load_video`` (open, count, decode the first and last frame)
  plus ``sample_frames`` (8 frames, reduced to the pixel budget and encoded), against
  decoding every frame once with ``cv2.VideoCapture.read`` (what an eager reader does
  before anything can be asked). Interleaved rounds (A, B, A, B); min and median of each.
  Goal: the ratio of medians well below 1 and falling with the clip's length (lazy).
- ``bytes to the model``: the 8 sampled frames against one full-resolution PNG per
  second of video (a naive 1 fps feed). Goal: ratio <= 0.10.

Run ``python benchmarks/video_input.py [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyvision_magic._video import load_video, sample_frames  # noqa: E402

SIZE, FPS = (640, 360), 30


def _write_clip(path: Path, seconds: int) -> None:
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for i in range(seconds * FPS):
        frame = np.roll(background, 3 * i, axis=1)  # motion, so frames differ
        cv2.circle(frame, (20 + (i * 5) % (SIZE[0] - 40), SIZE[1] // 2), 15, (0, 255, 255), -1)
        writer.write(frame)
    writer.release()


def _ours(path: Path) -> list:
    video = load_video(path)
    return sample_frames(video, 8, 1024 * 1024)


def _decode_all(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def run(quick: bool) -> list[dict]:
    """Measure the figures; each row has figure, ours, baseline, ratio and goal."""
    seconds = 4 if quick else 60
    rounds = 2 if quick else 4
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        _write_clip(path, seconds)
        ours, baseline = [], []
        frames: list = []
        for _ in range(rounds):  # interleaved, so load drifts hit both alike
            start = time.perf_counter()
            frames = _ours(path)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            _decode_all(path)
            baseline.append(time.perf_counter() - start)
        sent = sum(len(f.image.data) for f in frames)
        capture = cv2.VideoCapture(str(path))
        per_second = []
        for k in range(seconds):
            capture.set(cv2.CAP_PROP_POS_FRAMES, k * FPS)
            ok, frame = capture.read()
            if ok:
                per_second.append(len(cv2.imencode(".png", frame)[1]))
        capture.release()
    naive = sum(per_second)
    return [
        {
            "figure": f"video probe + 8 frames, s ({seconds} s clip, 640x360 @ 30 fps; "
                      f"min {min(ours):.3f} vs {min(baseline):.3f})",
            "ours": round(statistics.median(ours), 3),
            "baseline": round(statistics.median(baseline), 3),
            "ratio": statistics.median(ours) / statistics.median(baseline),
            "goal": "ratio < 0.5 (decodes a few frames, not the clip)",
        },
        {
            "figure": f"video bytes to the model (8 frames vs a 1 fps PNG feed, {seconds} s)",
            "ours": sent,
            "baseline": naive,
            "ratio": sent / naive,
            "goal": "ratio <= 0.10",
        },
    ]


if __name__ == "__main__":
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
