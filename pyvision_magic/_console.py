"""Session progress as text on a terminal (the CLI, and the magic outside a notebook).

What the model and the tools wrote is shown with its control characters made
visible (``^[`` for ESC): a reply or a tool's output must not be able to set
the clipboard (OSC 52), the window title or move the cursor.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["ConsoleProgress", "ImageSaver", "plural", "terminal_safe"]

# C0 and C1 controls but newline and tab, DEL, and lone surrogates (unprintable).
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# What may stand in a file name made from a recorded variable name.
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_]+")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg"}
# Lines of one tool output shown before the rest is summarised.
_SHOWN_LINES = 20


def terminal_safe(text: str) -> str:
    """``text`` with every control character shown, not obeyed, by a terminal.

    C0 controls become caret notation (``^[`` for ESC, ``^M`` for a lone
    carriage return), DEL ``^?``, C1 controls ``\\x9b``-style escapes and lone
    surrogates U+FFFD. Newlines and tabs are kept.
    """
    return _UNSAFE.sub(_visible, text.replace("\r\n", "\n"))


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    if code <= 0x9F:
        return f"\\x{code:02x}"
    return "\ufffd"


def plural(count: int, noun: str) -> str:
    """``"1 turn"``, ``"2 turns"``, ``"1,234 tokens"``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _size(nbytes: int) -> str:
    if nbytes < 1024:
        return plural(nbytes, "byte")
    if nbytes < 1024 * 1024:
        return f"{nbytes / 1024:.0f} KB"
    return f"{nbytes / (1024 * 1024):.1f} MB"


def tokens_spent(usage: Any, suffix: str = "") -> str:
    """``"12,345 tokens"``, with ``" (9,800 cached)"`` when the endpoint cached some;
    ``suffix`` goes after the count (``"12,345 tokens so far (9,800 cached)"``)."""
    text = plural(usage.total_tokens, "token") + suffix
    cached = getattr(usage, "cached_tokens", 0) or 0
    return f"{text} ({cached:,} cached)" if cached else text


class ConsoleProgress:
    """Writes each turn's progress to a stream (stderr), as the session emits it.

    What the model and the tools wrote passes through :func:`terminal_safe`.
    Each tool's line gives the tokens spent so far, and the footer the total
    (with the cached part), or says "replay" when the session's model replays a
    saved one (its recorded tokens were not spent here).
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.replay = False
        self._transcript: Any = None  # the attached session's, for the running total
        self._line_open = False  # the last thing written did not end its line

    def _write(self, text: str) -> None:
        if text:
            self.stream.write(text)
            self.stream.flush()
            self._line_open = not text.endswith("\n")

    def _write_line(self, line: str) -> None:
        """``line`` on a line of its own, even after a reply that stopped mid-line."""
        self._write(("\n" if self._line_open else "") + line + "\n")

    def attach(self, session: Any) -> None:
        from ._replay import ReplayModel

        self.replay = isinstance(session.model, ReplayModel)
        self._transcript = session.transcript
        session.on_turn_start(self.turn_start)
        session.on_text_delta(self.text_delta)
        session.on_outputs(self.outputs)
        session.on_status(self.status)

    def header(self, question: str, images: Sequence[Any]) -> None:
        """The question and each input image (the name it is bound to, file, size)."""
        self._write(f"Question: {terminal_safe(question.strip())}\n")
        for i, image in enumerate(images):
            self._write(
                f"  image_clue_{i}: {terminal_safe(image.name)} "
                f"({image.width}×{image.height} px, {_size(len(image.data))})\n"
            )

    def turn_start(self, turn: Any) -> None:
        self._write(f"\n── turn {turn.index + 1} ──\n")

    def text_delta(self, turn: Any, delta: str) -> None:
        self._write(terminal_safe(delta))

    def outputs(self, turn: Any) -> None:
        if turn.exec_status == "skipped":
            self._write(f"\n[tool not run] {terminal_safe(turn.note)}\n")
            return
        images = [o.variable or "image" for o in turn.outputs if o.kind == "image"]
        summary = f"\n[tool {turn.exec_status} in {turn.exec_seconds:.2f} s"
        if images:
            summary += f"; {plural(len(images), 'image')}: {terminal_safe(', '.join(images))}"
        usage = self._transcript.usage if self._transcript is not None else None
        if usage is not None and usage.total_tokens and not self.replay:
            summary += f"; {tokens_spent(usage, ' so far')}"
        self._write(summary + "]\n")
        for out in turn.outputs:
            if out.kind in ("text", "error"):
                lines = terminal_safe(out.text.rstrip("\n")).splitlines()
                shown = lines[:_SHOWN_LINES]
                if len(lines) > _SHOWN_LINES:
                    shown.append(f"... ({plural(len(lines) - _SHOWN_LINES, 'more line')})")
                self._write("".join(f"  │ {line}\n" for line in shown))
        if turn.note:
            self._write(f"  note: {terminal_safe(turn.note)}\n")

    def image_saved(self, path: Path) -> None:
        self._write(f"  saved {terminal_safe(str(path))}\n")

    def retry(self, notice: Any) -> None:
        """A model's :class:`~pyvision_magic._retry.RetryNotice`: it waits to ask again."""
        self._write_line(
            f"  {notice.reason}, retry {notice.attempt}/{notice.max_retries} in {notice.delay:.1f} s"
        )

    def status(self, transcript: Any) -> None:
        if transcript.status == "running":
            return
        spent = "replay" if self.replay else tokens_spent(transcript.usage)
        turns = plural(len(transcript.turns), "turn")
        self._write_line("")  # a blank line before it, after a reply or a tool's output
        self._write(f"── {transcript.status} after {turns}, {spent} ──\n")


class ImageSaver:
    """Writes every image a tool showed to a folder, as ``turnN_image_clue_K.png``.

    ``report(path)`` is called after each file is written; ``warn(text)`` when one
    cannot be (the session goes on: a full disk must not cost the user the answer).
    """

    def __init__(self, folder: Path, report: Callable[[Path], Any] | None = None,
                 warn: Callable[[str], Any] | None = None) -> None:
        self.folder = folder
        self.report = report
        self.warn = warn
        #: Every file written, in order.
        self.written: list[Path] = []

    @staticmethod
    def prepare(folder: str) -> Path:
        """Create ``folder`` if needed and check that files can be written there.

        Raises
        ------
        ConfigError
            When it is a file, cannot be created, or cannot be written to.
        """
        import tempfile

        from ._errors import ConfigError

        path = Path(folder).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"Cannot save images to {folder}: it is a file, not a folder; "
                              "name a folder (it is created if needed).")
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"Cannot save images to {folder}: {reason}; "
                              "name a folder you can write to.") from None
        return path

    def attach(self, session: Any) -> None:
        session.on_outputs(self.outputs)

    def outputs(self, turn: Any) -> None:
        images = [o for o in turn.outputs if o.kind == "image"]
        for k, out in enumerate(images):
            stem = _NOT_IN_NAME.sub("_", out.variable or "").strip("_")[:64] or f"image_{k}"
            path = self.folder / f"turn{turn.index + 1}_{stem}.{_EXTENSIONS.get(out.mime or '', 'png')}"
            try:
                path.write_bytes(base64.b64decode(out.data or "", validate=True))
            except (OSError, binascii.Error) as exc:
                if self.warn is not None:
                    self.warn(f"could not save {path}: {getattr(exc, 'strerror', None) or exc}")
                continue
            self.written.append(path)
            if self.report is not None:
                self.report(path)
