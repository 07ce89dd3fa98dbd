"""Plain records shared by the session, the executor, the model and the views.

They are dataclasses with ``to_dict``/``from_dict`` so that the transcript is
their JSON form, nothing more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["Output", "ExecutionResult", "ImageInput", "Usage"]


def _from_known(cls, data: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Output:
    """One item a tool produced.

    ``kind`` is ``"text"``, ``"image"`` or ``"error"``.

    - text: ``text`` holds it, ``stream`` says ``"stdout"``, ``"stderr"`` or ``"result"``
      (the value of the last expression).
    - image: ``data`` is base64 of the encoded bytes, ``mime`` is ``"image/png"`` or
      ``"image/jpeg"``, ``width``/``height`` in pixels, and ``variable`` the name the
      image is bound to in the kernel (``image_clue_N``) so later tools can use it.
    - error: ``ename``, ``evalue`` and ``text``, the full traceback without ANSI colours.
    """

    kind: str
    text: str = ""
    stream: str | None = None
    mime: str | None = None
    data: str | None = None
    width: int | None = None
    height: int | None = None
    variable: str | None = None
    ename: str | None = None
    evalue: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "") or k == "kind"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Output":
        if data.get("kind") not in ("text", "image", "error"):
            raise ValueError(f"unknown output kind {data.get('kind')!r}")
        return _from_known(cls, data)


@dataclass
class ExecutionResult:
    """What one execution of a tool gave.

    ``status`` is ``"ok"``, ``"error"`` (the code raised), ``"timeout"`` (stopped at
    the time limit) or ``"died"`` (the kernel process ended). ``note`` is a sentence
    for the model when something beyond the outputs happened, e.g. that the kernel
    was restarted and earlier variables are gone.
    """

    status: str
    outputs: list[Output] = field(default_factory=list)
    duration: float = 0.0
    note: str = ""


@dataclass
class ImageInput:
    """An input image, as encoded bytes plus what the prompt needs to say about it."""

    name: str
    data: bytes
    mime: str
    width: int
    height: int

    def file_name(self, index: int) -> str:
        """The name of its file in the kernel's working folder, as ``image_clue_<index>``.

        The kernel has it both there and under ``inputs/``.
        """
        return f"image_clue_{index}" + _MIME_SUFFIX.get(self.mime, ".img")


_MIME_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}


@dataclass
class Usage:
    """Token counts as reported by the endpoint (zero when it reports none).

    ``cached_tokens`` is the part of ``prompt_tokens`` the endpoint read from its
    prompt cache (``usage.prompt_tokens_details.cached_tokens``); ``reasoning_tokens``
    the part of ``completion_tokens`` spent thinking
    (``usage.completion_tokens_details.reasoning_tokens``). Both are included in,
    not added to, the counts they are part of.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Usage":
        # Transcripts saved before a field existed lack it: it stays 0.
        return _from_known(cls, {k: v for k, v in (data or {}).items() if v is not None})
