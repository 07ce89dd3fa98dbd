"""The session record and its JSON form (schema in README, "Transcript format")."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._errors import ConfigError
from ._records import ImageInput, Output, Usage

__all__ = ["Turn", "Transcript", "TRANSCRIPT_VERSION", "STATUSES", "shipped_sessions",
           "shipped_session_path"]

TRANSCRIPT_VERSION = 1

#: How a session can end; ``"running"`` while it has not.
STATUSES = ("running", "answered", "max_turns", "stopped", "error")


@dataclass
class Turn:
    """One model reply and, if it wrote code, what running it gave.

    ``exec_status`` is None when there was no code to run, else the
    :class:`ExecutionResult` status (``ok``, ``error``, ``timeout``, ``died``),
    ``"stopped"`` when the user stopped the session while the tool ran, or
    ``"skipped"`` when the code was not run (last turn, session stopped).
    ``answer`` is the final answer without its wrapping and ``raw_answer`` the
    text the model marked as its answer, as written (``\\boxed{'B'}`` gives
    ``B``); transcripts saved before ``raw_answer`` existed load it as None.
    """

    index: int
    text: str
    code: str | None = None
    outputs: list[Output] = field(default_factory=list)
    exec_status: str | None = None
    note: str = ""
    answer: str | None = None
    usage: Usage = field(default_factory=Usage)
    model_seconds: float = 0.0
    exec_seconds: float = 0.0
    raw_answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "index": self.index,
            "text": self.text,
            "code": self.code,
            "outputs": [o.to_dict() for o in self.outputs],
            "exec_status": self.exec_status,
            "note": self.note,
            "answer": self.answer,
            "usage": self.usage.to_dict(),
            "model_seconds": round(self.model_seconds, 3),
            "exec_seconds": round(self.exec_seconds, 3),
        }
        if self.raw_answer is not None:
            data["raw_answer"] = self.raw_answer
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Turn":
        return cls(
            index=int(data["index"]),
            text=str(data["text"]),
            code=data.get("code"),
            outputs=[Output.from_dict(o) for o in data.get("outputs") or []],
            exec_status=data.get("exec_status"),
            note=data.get("note") or "",
            answer=data.get("answer"),
            usage=Usage.from_dict(data.get("usage")),
            model_seconds=float(data.get("model_seconds") or 0.0),
            exec_seconds=float(data.get("exec_seconds") or 0.0),
            raw_answer=data.get("raw_answer"),
        )


@dataclass
class Transcript:
    """Everything a session did, enough to show it, replay it or export it."""

    question: str
    model: str
    images: list[ImageInput] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    status: str = "running"
    answer: str | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    max_turns: int = 10
    timeout: float = 60.0
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    version: int = TRANSCRIPT_VERSION
    #: Input clips: their facts, a reference to their file and the sampled frames
    #: (never the clip itself); see :class:`~._video.VideoInput`.
    videos: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created": self.created,
            "question": self.question,
            "model": self.model,
            "status": self.status,
            "answer": self.answer,
            "error": self.error,
            "usage": self.usage.to_dict(),
            "max_turns": self.max_turns,
            "timeout": self.timeout,
            "images": [
                {
                    "name": im.name,
                    "mime": im.mime,
                    "width": im.width,
                    "height": im.height,
                    "data": base64.b64encode(im.data).decode("ascii"),
                }
                for im in self.images
            ],
            "turns": [t.to_dict() for t in self.turns],
            **({"videos": [v.to_dict() for v in self.videos]} if self.videos else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Transcript":
        if not isinstance(data, dict) or "turns" not in data or "question" not in data:
            raise ValueError("not a pyvision transcript (no 'question' or 'turns')")
        version = data.get("version")
        if version != TRANSCRIPT_VERSION:
            raise ValueError(
                f"transcript version {version!r} is not supported (expected "
                f"{TRANSCRIPT_VERSION}); upgrade pyvision_magic"
            )
        return cls(
            version=version,
            created=data.get("created") or "",
            question=str(data["question"]),
            model=str(data.get("model") or ""),
            status=data.get("status") or "running",
            answer=data.get("answer"),
            error=data.get("error"),
            usage=Usage.from_dict(data.get("usage")),
            max_turns=int(data.get("max_turns") or 10),
            timeout=float(data.get("timeout") or 60.0),
            images=[
                ImageInput(
                    name=im.get("name") or f"image_{i}",
                    data=base64.b64decode(im["data"]),
                    mime=im.get("mime") or "image/png",
                    width=int(im.get("width") or 0),
                    height=int(im.get("height") or 0),
                )
                for i, im in enumerate(data.get("images") or [])
            ],
            turns=[Turn.from_dict(t) for t in data["turns"]],
            videos=_videos_from(data.get("videos")),
        )

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the transcript as JSON; the write is atomic (temp file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(self.to_json(), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"Cannot write the transcript to {path}: {exc.strerror}.") from exc
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Transcript":
        """Read a transcript saved by :meth:`save`; bad files raise :class:`ConfigError`.

        ``path`` may also name a session shipped with the package: ``demo`` (the coins
        session) or ``gallery:NAME`` (see :func:`shipped_sessions`).
        """
        path = shipped_session_path(path) or Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"Transcript file not found: {path}. Check the path.") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read the transcript {path}: {exc}.") from exc
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not a valid pyvision transcript: {exc}.") from exc


def _videos_from(items: Any) -> list[Any]:
    if not items:
        return []
    from ._video import VideoInput

    return [VideoInput.from_dict(v, i) for i, v in enumerate(items)]


#: Sessions shipped in ``pyvision_magic/data``: ``demo`` and ``gallery:NAME``.
_DEMO = "coins_session.json"


def shipped_sessions() -> list[str]:
    """The names :meth:`Transcript.load` takes for shipped sessions."""
    from importlib import resources

    gallery = resources.files("pyvision_magic") / "data" / "gallery"
    names = sorted(entry.name[:-5] for entry in gallery.iterdir() if entry.name.endswith(".json"))
    return ["demo"] + [f"gallery:{name}" for name in names]


def shipped_session_path(name: str | os.PathLike[str]) -> Path | None:
    """The file of a shipped session (``demo``, ``gallery:NAME``), or None for other names.

    Raises
    ------
    ConfigError
        For ``gallery:NAME`` with a NAME that is not shipped (the names are listed).
    """
    from importlib import resources

    if not isinstance(name, str) or not (name == "demo" or name.startswith("gallery:")):
        return None
    if name == "demo" and Path(name).exists():
        return None  # a file of that name in the working folder wins
    data = resources.files("pyvision_magic") / "data"
    entry = data / _DEMO if name == "demo" else data / "gallery" / f"{name[8:]}.json"
    if not entry.is_file():
        raise ConfigError(f"There is no shipped session {name!r}; the shipped sessions are "
                          f"{', '.join(shipped_sessions())}.")
    return Path(str(entry))
