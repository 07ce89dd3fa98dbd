"""``video_clue_N``: a video clip the tools read frame by frame.

A :class:`VideoClue` opens the clip with OpenCV and decodes only the frames asked
for, so binding a long clip costs nothing up front. The same class probes and
samples clips in the notebook process (:mod:`pyvision_magic._video`), so the
frames the model is shown and the frames its tools read come from one decoder.

A ``.npy`` file of shape (T, H, W, 3) (RGB, uint8) is read the same way, memory
mapped; it has no frame rate of its own, so ``fps`` must be given.

Example (in a tool)::

    video_clue_0                     # VideoClue('clip.mp4': 90 frames, 30 fps, 3.00 s, 320x240)
    video_clue_0.at(2.5)             # the frame shown 2.5 s into the clip, a PIL image
    video_clue_0.frame(-1)           # the last frame
    video_clue_0.frames(step=15)     # every 15th frame, as a list of PIL images
"""

from __future__ import annotations

import math
import os
from typing import Any

__all__ = ["VideoClue", "VideoReadError"]


class VideoReadError(ValueError):
    """The clip cannot be opened or a frame of it cannot be decoded."""


class VideoClue:
    """A video clip read lazily with OpenCV; frames come back as RGB PIL images.

    Parameters
    ----------
    path : str or os.PathLike
        A video file OpenCV can read (MP4, WebM, AVI, MOV, ...), or a ``.npy`` array
        of frames (T, H, W, 3).
    fps : float, optional
        Frames per second; required for ``.npy``, else read from the file.

    Attributes
    ----------
    path : str
        Absolute path of the clip.
    fps : float
        Frames per second.
    frame_count : int
        Number of frames; ``len(clip)`` too.
    width, height : int
        Frame size in pixels.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._array: Any = None
        self._capture: Any = None
        self._position = 0  # index of the frame the capture decodes next
        if self.path.endswith(".npy"):
            import numpy as np

            self._array = np.load(self.path, mmap_mode="r")
            if self._array.ndim != 4 or self._array.shape[3] != 3 or self._array.shape[0] == 0:
                raise VideoReadError(f"{self.path} must hold frames of shape (T, H, W, 3), "
                                     f"not {self._array.shape}.")
            self.frame_count, self.height, self.width = (int(n) for n in self._array.shape[:3])
            self.fps = float(fps or 1.0)
            return
        import cv2

        capture = cv2.VideoCapture(self.path)
        if not capture.isOpened():
            raise VideoReadError(f"OpenCV cannot open {self.path} as a video.")
        self._capture = capture
        self.fps = float(fps or capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(self.fps) or self.fps <= 0:
            self.fps = 25.0  # what ffmpeg assumes for a stream that states none
        self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if math.isfinite(count) and 0 < count < 2**31 else 0
        if self.frame_count and not self._readable(self.frame_count - 1):
            self.frame_count = 0  # the container's count is wrong: count the frames
        if not self.frame_count:
            self.frame_count = self._count_frames()

    # -- facts -----------------------------------------------------------------------

    @property
    def duration(self) -> float:
        """Length of the clip in seconds (frames / fps)."""
        return self.frame_count / self.fps

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    def __len__(self) -> int:
        return self.frame_count

    def __repr__(self) -> str:
        return (f"VideoClue({os.path.basename(self.path)!r}: {self.frame_count} frames, "
                f"{self.fps:g} fps, {self.duration:.2f} s, {self.width}x{self.height})")

    def time_of(self, index: int) -> float:
        """When frame ``index`` is shown, in seconds from the start."""
        return self._index(index) / self.fps

    def index_at(self, seconds: float) -> int:
        """The index of the frame shown at ``seconds`` (0 <= seconds <= duration)."""
        if not 0 <= seconds <= self.duration:
            raise IndexError(f"{seconds:g} s is outside the clip, which lasts "
                             f"{self.duration:.3f} s.")
        return min(math.floor(seconds * self.fps + 1e-9), self.frame_count - 1)

    def uniform_indices(self, n: int) -> list[int]:
        """``n`` frame indices spread evenly from the first frame to the last."""
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}.")
        last = self.frame_count - 1
        if n >= self.frame_count:
            return list(range(self.frame_count))
        if n == 1:
            return [last // 2]
        return sorted({round(k * last / (n - 1)) for k in range(n)})

    # -- frames ----------------------------------------------------------------------

    def frame(self, index: int) -> Any:
        """Frame ``index`` (negative counts from the end) as an RGB PIL image."""
        from PIL import Image

        return Image.fromarray(self.array(index))

    def at(self, seconds: float) -> Any:
        """The frame shown at ``seconds`` into the clip, as an RGB PIL image."""
        return self.frame(self.index_at(seconds))

    def frames(self, step: int = 1, start: int = 0, stop: int | None = None) -> list[Any]:
        """Every ``step``-th frame from ``start`` up to ``stop`` (exclusive), as PIL images.

        Decodes in order, so reading many frames costs one pass over that part.
        """
        if step < 1:
            raise ValueError(f"step must be at least 1, not {step}.")
        indices = range(*slice(start, stop, step).indices(self.frame_count))
        return [self.frame(i) for i in indices]

    def array(self, index: int) -> Any:
        """Frame ``index`` as an RGB numpy array of shape (height, width, 3)."""
        import numpy as np

        index = self._index(index)
        if self._array is not None:
            return np.ascontiguousarray(self._array[index])
        import cv2

        if not self._seek(index):
            raise VideoReadError(f"Frame {index} of {os.path.basename(self.path)} cannot be decoded.")
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            self._position = -1  # unknown: seek next time
            raise VideoReadError(f"Frame {index} of {os.path.basename(self.path)} cannot be decoded.")
        self._position = index + 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        """Release the decoder (frames can no longer be read)."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> "VideoClue":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- decoding ----------------------------------------------------------------------

    def _index(self, index: int) -> int:
        if not hasattr(index, "__index__"):  # ints and numpy integers, not floats
            raise TypeError(f"a frame index must be an integer, not {type(index).__name__}; "
                            "use at(seconds) for a time.")
        index = index.__index__()
        if index < 0:
            index += self.frame_count
        if not 0 <= index < self.frame_count:
            raise IndexError(f"frame index out of range: the clip has {self.frame_count} frames "
                             f"(0 to {self.frame_count - 1}).")
        return index

    def _seek(self, index: int) -> bool:
        """Put the decoder before frame ``index``: skip ahead a little, or seek."""
        import cv2

        if self._capture is None:
            raise VideoReadError("This clip was closed; open it again with VideoClue(path).")
        ahead = index - self._position
        if 0 <= ahead <= 32 and self._position >= 0:
            # Decoding a few frames is cheaper (and surer) than a seek to a keyframe.
            for _ in range(ahead):
                if not self._capture.grab():
                    return False
            self._position = index
            return True
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        self._position = index
        return True

    def _readable(self, index: int) -> bool:
        try:
            ok = self._seek(index) and self._capture.grab()
        except Exception:  # noqa: BLE001 - a decoder fault means "not readable"
            ok = False
        self._position = index + 1 if ok else -1
        return bool(ok)

    def _count_frames(self) -> int:
        import cv2

        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        count = 0
        while self._capture.grab():
            count += 1
        self._position = -1
        return count
