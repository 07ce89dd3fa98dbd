"""Video clips as inputs: recognise, probe and sample them in the notebook process.

:func:`load_video` turns a video file, the bytes of one (a downloaded URL) or a numpy
array of frames (T, H, W, 3) into a :class:`VideoInput`: the clip's facts (frames,
fps, size, bytes) and where its file is. Nothing is decoded but the first and last
frame, which proves the clip is readable. :func:`sample_frames` then picks ``n``
frames spread evenly from the first to the last and reduces them so that together
they fit one image's pixel budget; those frames are what the model sees and what the
transcript keeps (never the clip itself). The tools read the whole clip as
``video_clue_N`` (:class:`~pyvision_magic.kernel.video_reader.VideoClue`).

Every failure is an :class:`ImageInputError` of one sentence saying what to do.
"""

from __future__ import annotations

import atexit
import base64
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import ImageInputError
from ._records import ImageInput

__all__ = ["VIDEO_SUFFIXES", "VideoFrame", "VideoInput", "is_video", "load_video",
           "check_video_limits", "sample_frames", "split_media", "load_media", "frame_budget"]

#: File name endings taken as video (anything else is tried as an image first).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ogv",
                  ".wmv", ".flv", ".3gp")
#: ISO media brands of still images (HEIC, AVIF): an ``ftyp`` box alone is not a video.
_IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")
_SNIFF_BYTES = 4 * 2**20
_ARRAY_FPS = 1.0


@dataclass
class VideoFrame:
    """One frame sampled for the model: its index, its time and its encoded image."""

    index: int
    seconds: float
    image: ImageInput

    def to_dict(self) -> dict[str, Any]:
        im = self.image
        return {"index": self.index, "seconds": round(self.seconds, 4), "mime": im.mime,
                "width": im.width, "height": im.height,
                "data": base64.b64encode(im.data).decode("ascii")}

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str) -> "VideoFrame":
        image = ImageInput(name=f"{name} frame {int(data['index'])}",
                           data=base64.b64decode(data["data"]), mime=data.get("mime") or "image/jpeg",
                           width=int(data.get("width") or 0), height=int(data.get("height") or 0))
        return cls(int(data["index"]), float(data.get("seconds") or 0.0), image)


@dataclass
class VideoInput:
    """An input clip: its facts, where its file is, and the frames sampled for the model.

    Attributes
    ----------
    name : str
        Shown to the model and in the views (the file name, or "video").
    source : str
        What the user passed: a path, a URL or ``<array>``.
    path : str or None
        The file holding the clip (a video, or ``.npy`` for an array); the transcript
        keeps it as a reference, and None (or a vanished file) means only the sampled
        frames are left.
    frames : list of VideoFrame
        Filled by the session (see :func:`sample_frames`), kept in the transcript.
    """

    name: str
    source: str
    path: str | None
    fps: float
    frame_count: int
    width: int
    height: int
    size_bytes: int = 0
    frames: list[VideoFrame] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frame_count / self.fps if self.fps > 0 else 0.0

    @property
    def available(self) -> bool:
        """Whether the clip's file is still there (else only its frames are)."""
        return bool(self.path) and os.path.isfile(self.path)  # type: ignore[arg-type]

    def facts(self) -> str:
        """One line of facts: ``3.00 s, 30 fps, 90 frames, 320x240``."""
        return (f"{self.duration:.2f} s, {self.fps:g} fps, {self.frame_count} frames, "
                f"{self.width}x{self.height}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "path": self.path, "fps": self.fps,
                "frame_count": self.frame_count, "width": self.width, "height": self.height,
                "size_bytes": self.size_bytes, "frames": [f.to_dict() for f in self.frames]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], index: int = 0) -> "VideoInput":
        name = data.get("name") or f"video_{index}"
        return cls(name=name, source=str(data.get("source") or ""), path=data.get("path"),
                   fps=float(data.get("fps") or 0.0), frame_count=int(data.get("frame_count") or 0),
                   width=int(data.get("width") or 0), height=int(data.get("height") or 0),
                   size_bytes=int(data.get("size_bytes") or 0),
                   frames=[VideoFrame.from_dict(f, name) for f in data.get("frames") or []])


def is_video(name: str, head: bytes = b"") -> bool:
    """Whether a file named ``name`` starting with ``head`` is a video container."""
    if name.lower().endswith(VIDEO_SUFFIXES):
        return True
    return _container(head) is not None


def load_media(path: str | os.PathLike[str]) -> ImageInput | VideoInput:
    """A file given with ``-i``: a video (by its name or first bytes), else an image."""
    from ._images import load_image

    label = os.fspath(path)
    if is_video(label, _read_head(os.path.expanduser(label))):
        return load_video(label)
    return load_image(label)


def split_media(items: list[Any]) -> tuple[list[ImageInput], list[VideoInput]]:
    """Separate what ``-i`` values resolved to into images and videos, in order."""
    return ([i for i in items if not isinstance(i, VideoInput)],
            [i for i in items if isinstance(i, VideoInput)])


def load_video(source: Any, *, name: str | None = None, fps: float | None = None,
               bgr: bool = False, origin: str | None = None) -> VideoInput:
    """Probe a video file, the bytes of one, or an array of frames (T, H, W, 3).

    Parameters
    ----------
    source : str, os.PathLike, bytes or numpy.ndarray
        A path; the contents of a video file (kept in a temporary file); or frames
        as uint8 RGB (BGR with ``bgr``), stored losslessly as ``.npy``.
    name : str, optional
        Name shown to the model (default: the file name, "video" for bytes and arrays).
    fps : float, optional
        Frame rate of an array (default 1, so frame k is at k seconds).
    bgr : bool
        The array's channels are in OpenCV's BGR order.
    origin : str, optional
        What to call the clip in messages and :attr:`VideoInput.source` (the URL of
        downloaded bytes; default: the path).

    Raises
    ------
    ImageInputError
        When the clip is missing, empty, not a video, or in a codec OpenCV cannot decode.
    """
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(source, numpy.ndarray):
        return _from_array(source, name or "video", fps or _ARRAY_FPS, bgr)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "video"
        if not source:
            raise ImageInputError(f"The video {label} is empty (0 bytes); check where it came from.",
                                  source=label)
        suffix = Path(label).suffix.lower() if label.lower().endswith(VIDEO_SUFFIXES) else ".mp4"
        handle, path = tempfile.mkstemp(suffix=suffix, prefix="clip-", dir=_temporary_folder())
        with open(handle, "wb") as file:
            file.write(bytes(source))
        video = _probe(path, Path(label).name, origin or label)
        video.source = origin or label
        return video
    path = Path(os.path.expanduser(os.fspath(source)))
    label = origin or os.fspath(source)
    if not path.exists():
        raise ImageInputError(f"Video file not found: {label}. Check the path.", source=label)
    if path.is_dir():
        raise ImageInputError(f"{label} is a directory, not a video file; pass a file inside it.",
                              source=label)
    if path.stat().st_size == 0:
        raise ImageInputError(f"Video file {label} is empty (0 bytes); check that it was saved "
                              "completely.", source=label)
    return _probe(str(path.resolve()), name or path.name, label)


def check_video_limits(video: VideoInput, *, max_bytes: int | None,
                       max_seconds: float | None) -> None:
    """Refuse a clip over the size or duration cap (``None`` means no cap)."""
    if max_bytes is not None and video.size_bytes > max_bytes:
        raise ImageInputError(
            f"The video {video.name} is {human_size(video.size_bytes)}, over the "
            f"{human_size(max_bytes)} limit; cut it shorter or raise Session.max_video_bytes.",
            source=video.source)
    if max_seconds is not None and video.duration > max_seconds:
        raise ImageInputError(
            f"The video {video.name} lasts {video.duration:.1f} s, over the {max_seconds:g} s "
            "limit; cut it shorter or raise Session.max_video_seconds.", source=video.source)


def human_size(n: int) -> str:
    """``n`` bytes as ``812 bytes``, ``6.3 KiB`` or ``512.0 MiB``."""
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.1f} MiB"


def frame_budget(n: int, max_pixels: int) -> int:
    """Pixels of each of ``n`` sampled frames: together they fit one image's budget."""
    return max(max_pixels // max(n, 1), 64 * 64)


def sample_frames(video: VideoInput, n: int, max_pixels: int, *,
                  label: str | None = None) -> list[VideoFrame]:
    """``n`` frames spread evenly over the clip, first and last included, each reduced
    to :func:`frame_budget` and encoded as the model will receive it.

    Raises
    ------
    ImageInputError
        If the clip's file is gone or a frame cannot be decoded.
    """
    from PIL import Image

    from ._images import _fit
    from .kernel.video_reader import VideoClue, VideoReadError

    if not video.available:
        raise ImageInputError(f"The video {video.name} is no longer at {video.path}; pass it again.",
                              source=video.source)
    budget = frame_budget(n, max_pixels)
    label = label or video.name
    frames = []
    try:
        with VideoClue(video.path, fps=video.fps) as clip:  # type: ignore[arg-type]
            for index in clip.uniform_indices(n):
                im = clip.frame(index)
                target = _fit(im.size, budget)
                if target != im.size:
                    im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
                mime, data = _encode_frame(im)
                image = ImageInput(name=f"{label} frame {index}", data=data, mime=mime,
                                   width=im.width, height=im.height)
                frames.append(VideoFrame(index, clip.time_of(index), image))
    except VideoReadError as exc:
        raise ImageInputError(f"The video {video.name} cannot be decoded ({exc}); re-encode it as "
                              "MP4.", source=video.source) from None
    return frames


def _encode_frame(im: Any) -> tuple[str, bytes]:
    """A frame as the model gets it: lossless PNG when flat (animation, screen capture,
    drawn test clips), else JPEG at the photo quality. The frames are sent as encoded
    here, so the full line-art test of ``encode_for_model`` (tens of ms a frame) is
    replaced by its flatness half, which is what separates camera footage (noise)."""
    import io

    import numpy as np

    from ._images import DEFAULT_JPEG_QUALITY

    a = np.asarray(im)
    flat = float(np.all(a[:, 1:] == a[:, :-1], axis=-1).mean()) if a.shape[1] > 1 else 1.0
    buffer = io.BytesIO()
    if flat >= 0.75:
        im.save(buffer, "PNG")
        return "image/png", buffer.getvalue()
    im.save(buffer, "JPEG", quality=DEFAULT_JPEG_QUALITY)
    return "image/jpeg", buffer.getvalue()


# -- probing -----------------------------------------------------------------------------


def _probe(path: str, name: str, label: str) -> VideoInput:
    from .kernel.video_reader import VideoClue, VideoReadError

    try:
        clip = VideoClue(path)
    except VideoReadError:
        raise _unreadable(path, label) from None
    with clip:
        if clip.frame_count == 0:
            raise ImageInputError(f"The video {label} has no frames; pass a clip with at least "
                                  "one frame.", source=label)
        try:
            clip.array(0)
        except VideoReadError:
            raise _codec_error(label, _fourcc_of(clip) or _codec_in_file(path)) from None
        return VideoInput(name=name, source=label, path=path, fps=clip.fps,
                          frame_count=clip.frame_count, width=clip.width, height=clip.height,
                          size_bytes=os.path.getsize(path))


def _unreadable(path: str, label: str) -> ImageInputError:
    head = _read_head(path)
    if _container(head) is None:
        return ImageInputError(f"{label} is not a video OpenCV can read; pass an MP4, WebM, AVI "
                               "or MOV file.", source=label)
    codec = _codec_in_file(path)
    if codec:
        return _codec_error(label, codec)
    return ImageInputError(f"The video {label} cannot be read: it is truncated or has no frames; "
                           "save or download it again.", source=label)


def _codec_error(label: str, codec: str | None) -> ImageInputError:
    which = f"its codec {codec!r}" if codec else "its codec"
    return ImageInputError(
        f"OpenCV here cannot decode the video {label} ({which}); re-encode it, e.g. "
        f"`ffmpeg -i {label} -c:v mpeg4 clip.mp4`.", source=label)


def _fourcc_of(clip: Any) -> str | None:
    import cv2

    code = int(clip._capture.get(cv2.CAP_PROP_FOURCC)) if clip._capture is not None else 0
    text = "".join(chr((code >> (8 * k)) & 0xFF) for k in range(4))
    return text if code > 0 and text.isprintable() and text.strip() else None


def _container(head: bytes) -> str | None:
    """The container a file's first bytes announce, if a video one."""
    if head[4:8] == b"ftyp" and head[8:12] not in _IMAGE_BRANDS:
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "mpeg"
    if head[:4] == b"\x30\x26\xb2\x75":
        return "asf"
    return None


def _read_head(path: str, size: int = 16) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(size)
    except OSError:
        return b""


def _codec_in_file(path: str) -> str | None:
    """The video codec a container names (AVI, MP4/MOV, Matroska), read from its headers."""
    try:
        with open(path, "rb") as file:
            data = file.read(_SNIFF_BYTES)
            file.seek(0, os.SEEK_END)
            if file.tell() > _SNIFF_BYTES:  # an MP4's moov box is often at the end
                file.seek(max(_SNIFF_BYTES, file.tell() - _SNIFF_BYTES))
                data += file.read()
    except OSError:
        return None
    patterns = (rb"vids(.{4})", rb"stsd.{12}(.{4})", rb"\x86[\x80-\xff](V_[A-Za-z0-9/_.]{1,30})")
    for pattern in patterns:
        found = re.search(pattern, data, re.DOTALL)
        if found:
            text = found.group(1).decode("latin-1")
            if text.isprintable() and text.strip():
                return text
    return None


def _from_array(arr: Any, name: str, fps: float, bgr: bool) -> VideoInput:
    import numpy as np

    if arr.ndim != 4 or arr.shape[3] != 3:
        raise ImageInputError(f"A video array must have shape (T, H, W, 3), not {arr.shape}.",
                              source="<array>")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ImageInputError(f"The video array {arr.shape} has no frames; pass at least one.",
                              source="<array>")
    if arr.dtype != np.uint8:
        raise ImageInputError(f"A video array must hold uint8 values, not {arr.dtype}; convert it "
                              "with arr.astype(np.uint8).", source="<array>")
    if fps <= 0:
        raise ImageInputError(f"A video's fps must be positive, not {fps:g}.", source="<array>")
    frames = arr[..., ::-1] if bgr else arr
    handle, path = tempfile.mkstemp(suffix=".npy", prefix="array-", dir=_temporary_folder())
    with open(handle, "wb") as file:
        np.save(file, np.ascontiguousarray(frames))
    return VideoInput(name=name, source="<array>", path=path, fps=float(fps),
                      frame_count=int(arr.shape[0]), width=int(arr.shape[2]),
                      height=int(arr.shape[1]), size_bytes=os.path.getsize(path))


_FOLDER: dict[str, str] = {}


#: Folders for clips are named ``<prefix><pid>-XXXX``.
CLIPS_PREFIX = "pyvision_clips-"


def _temporary_folder() -> str:
    """This process's folder for clips made from bytes or arrays (removed at exit;
    the folders of processes that were killed are removed when the next one is made)."""
    from .kernel._workspace import remove_folders_of_ended_processes

    folder = _FOLDER.get(str(os.getpid()))
    if folder is None or not os.path.isdir(folder):
        remove_folders_of_ended_processes(tempfile.gettempdir(), CLIPS_PREFIX)
        folder = tempfile.mkdtemp(prefix=f"{CLIPS_PREFIX}{os.getpid()}-")
        _FOLDER[str(os.getpid())] = folder
        atexit.register(shutil.rmtree, folder, True)
    return folder
