"""What a session does with video: bind ``video_clue_N``, show the model sampled
frames, and bring back the videos a tool writes.

Kept apart from :mod:`._session` so that the agent loop only calls a few hooks.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._errors import ImageInputError, PyVisionError
from ._records import ExecutionResult, Output
from ._video import (
    VIDEO_SUFFIXES,
    VideoInput,
    check_video_limits,
    human_size,
    load_video,
    sample_frames,
)

__all__ = ["bind_videos", "can_bind", "video_parts", "WrittenVideos", "frame_outputs",
           "describe_videos", "export_source"]

_HOW_TO_READ = (
    "In code, {var} is the whole clip: {var}.frame(i) and {var}.at(seconds) return any frame "
    "as an RGB PIL image, {var}.frames(step=k) every k-th frame, and len({var}), {var}.fps, "
    "{var}.duration and {var}.size give its facts; e.g. {var}.at({example:g})."
)


def can_bind(executor: Any) -> bool:
    """Whether ``executor`` has a scratch folder on this machine to put clips in."""
    # A property of the class: a kernel not started yet has no folder, but will have one.
    return hasattr(type(executor), "scratch_path")


def video_parts(videos: Sequence[VideoInput], bound: bool) -> list[dict[str, Any]]:
    """Message parts for the question's clips: facts, how to read frames, sampled frames.

    The frames go as :func:`sample_frames` encoded them (already within the budget).
    """
    from ._images import to_data_url

    parts: list[dict[str, Any]] = []
    for i, video in enumerate(videos):
        var = f"video_clue_{i}"
        text = (f"{var} ({video.name}): a video of {video.duration:.2f} s at {video.fps:g} fps, "
                f"{video.frame_count} frames of {video.width}x{video.height} pixels. "
                f"{len(video.frames)} frames sampled evenly follow, each labelled with its "
                "frame index and time. ")
        if bound and video.available:
            text += _HOW_TO_READ.format(var=var, example=round(video.duration / 2, 1))
        else:
            text += "The clip itself is not available to code: only these frames are."
        parts.append({"type": "text", "text": text})
        for frame in video.frames:
            label = f"{var} frame {frame.index} at {frame.seconds:.2f} s:"
            parts.append({"type": "text", "text": label})
            url = to_data_url(frame.image.mime, frame.image.data)
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


async def bind_videos(executor: Any, videos: Sequence[VideoInput], *,
                      max_bytes: int | None) -> list[str]:
    """Copy each available clip into the kernel's scratch folder and bind ``video_clue_N``.

    A clip whose file is gone (a transcript loaded elsewhere) is skipped: the model
    has its frames. Returns the names bound.

    Raises
    ------
    ImageInputError
        If the kernel cannot open a clip.
    """
    scratch = getattr(executor, "scratch_path", None)
    if scratch is None or not videos:
        return []
    lines, names = [], []
    for i, video in enumerate(videos):
        if not video.available:
            continue
        name = f"video_clue_{i}{Path(video.path or '').suffix.lower() or '.mp4'}"
        await asyncio.to_thread(_copy_into_inputs, video.path, Path(scratch), name, max_bytes)
        lines.append(f"video_clue_{i} = _VideoClue('inputs/{name}', fps={video.fps!r})")
        names.append(f"video_clue_{i}")
    if not lines:
        return []
    code = "\n".join(["from pyvision_magic.kernel.video_reader import VideoClue as _VideoClue",
                      *lines, "del _VideoClue"])
    result = await executor.execute(code)
    if result.status != "ok":
        why = next((o.evalue or o.text for o in result.outputs if o.kind == "error"), result.note)
        raise ImageInputError(f"The kernel could not open the input videos ({why}).",
                              source=", ".join(v.name for v in videos))
    return names


def _copy_into_inputs(source: str | None, scratch: Path, name: str, max_bytes: int | None) -> None:
    """Copy a clip to ``scratch/inputs/name``, never following a link a tool planted."""
    folder = scratch / "inputs"
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        folder.unlink()
    folder.mkdir(exist_ok=True)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | nofollow)
    try:
        try:
            os.unlink(name, dir_fd=directory)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(folder / name, ignore_errors=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow
        with open(source or "", "rb") as src, open(os.open(name, flags, 0o644, dir_fd=directory),
                                                  "wb") as dst:
            shutil.copyfileobj(src, dst, 2**20)
            if max_bytes is not None and dst.tell() > max_bytes:  # it grew since it was checked
                raise ImageInputError(f"The video {name} is over the {human_size(max_bytes)} "
                                      "limit; raise Session.max_video_bytes.", source=name)
    finally:
        os.close(directory)


def describe_videos(videos: Sequence[VideoInput], frames: int) -> list[str]:
    """One line per input clip for a terminal: name, facts, frames the model gets."""
    return [f"  video_clue_{i}: {v.name} ({v.facts()}, {human_size(v.size_bytes)}); "
            f"{len(v.frames) or min(frames, v.frame_count)} frames sampled for the model"
            for i, v in enumerate(videos)]


def export_source(videos: Sequence[VideoInput]) -> str:
    """The code of an exported notebook's cell that binds ``video_clue_N`` again."""
    lines = ["# The input videos, read from their files (the session kept only sampled frames)",
             "from pyvision_magic.kernel.video_reader import VideoClue"]
    for i, video in enumerate(videos):
        lines.append(f"video_clue_{i} = VideoClue({video.path!r}, fps={video.fps!r})  "
                     f"# {video.name}")
    return "\n".join(lines)


def frame_outputs(video: VideoInput, label: str) -> list[Output]:
    """A text line of the clip's facts, then its sampled frames, as tool outputs."""
    listing = ", ".join(f"frame {f.index} at {f.seconds:.2f} s" for f in video.frames)
    text = (f"[video {label}: {video.facts()}; {len(video.frames)} frames sampled evenly "
            f"follow: {listing}]\n")
    outputs = [Output(kind="text", text=text, stream="stdout")]
    for frame in video.frames:
        im = frame.image
        outputs.append(Output(kind="image", mime=im.mime, width=im.width, height=im.height,
                              data=base64.b64encode(im.data).decode("ascii")))
    return outputs


class WrittenVideos:
    """Finds the video files a tool wrote in the top of its working folder.

    Call :meth:`snapshot` before the tool runs and :meth:`collect` after: each video
    file that is new or changed comes back as its facts and sampled frames, under the
    same caps as an input clip. Files are copied out with ``O_NOFOLLOW`` before they
    are decoded, so a link a sandboxed tool plants never makes this process read a
    file the tool could not.
    """

    def __init__(self, *, frames: int, max_pixels: int, max_bytes: int | None,
                 max_seconds: float | None) -> None:
        self.frames, self.max_pixels = frames, max_pixels
        self.max_bytes, self.max_seconds = max_bytes, max_seconds
        self._seen: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _scan(scratch: Any) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        if scratch is None:
            return found
        try:
            with os.scandir(scratch) as entries:
                for entry in entries:
                    if entry.name.lower().endswith(VIDEO_SUFFIXES) and entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        found[entry.name] = (st.st_size, st.st_mtime_ns)
        except OSError:
            pass
        return found

    async def snapshot(self, executor: Any) -> None:
        """Note the video files in ``executor``'s working folder (none without one)."""
        self._seen = await asyncio.to_thread(self._scan, getattr(executor, "scratch_path", None))

    async def collect(self, executor: Any, result: ExecutionResult) -> ExecutionResult:
        """``result`` with the frames of each video the tool wrote appended."""
        scratch = getattr(executor, "scratch_path", None)
        now = await asyncio.to_thread(self._scan, scratch)
        changed = sorted(name for name, stamp in now.items() if self._seen.get(name) != stamp)
        self._seen = now
        for name in changed:
            try:
                video = await asyncio.to_thread(self._read, str(scratch), name)
                result.outputs.extend(frame_outputs(video, name))
            except Exception as exc:  # noqa: BLE001 - a bad file is the tool's, not a fault
                why = str(exc) if isinstance(exc, PyVisionError) else f"{type(exc).__name__}: {exc}"
                result.outputs.append(Output(kind="text", stream="stderr",
                                             text=f"[video {name} cannot be shown: {why}]\n"))
        return result

    def _read(self, scratch: str, name: str) -> VideoInput:
        folder = tempfile.mkdtemp(prefix="pyvision-written-")
        copy = os.path.join(folder, "clip" + Path(name).suffix.lower())
        try:
            directory = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0), dir_fd=directory)
            except OSError as exc:
                raise ImageInputError(f"it cannot be opened ({exc.strerror})", source=name) from None
            finally:
                os.close(directory)
            limit = self.max_bytes
            with open(fd, "rb") as src, open(copy, "wb") as dst:
                data = src.read(limit + 1 if limit is not None else -1)
                if limit is not None and len(data) > limit:
                    raise ImageInputError(f"it is over the {human_size(limit)} video limit",
                                          source=name)
                dst.write(data)
            video = load_video(copy, name=name, origin=name)
            check_video_limits(video, max_bytes=self.max_bytes, max_seconds=self.max_seconds)
            video.frames = sample_frames(video, self.frames, self.max_pixels, label=name)
            video.path = None  # the copy is removed below
            return video
        finally:
            shutil.rmtree(folder, ignore_errors=True)
