"""The live view of one session: one anywidget, its state synced, its text streamed.

The state and messages are described in ``docs/session_view.md``. The widget
only observes a session's events and reports the user's actions to callbacks
(``on_run``, ``on_fork``, ``on_stop``, ``on_copy``); it never runs anything
itself, so tests can build it and trigger actions with :meth:`SessionWidget.click`
without a browser.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from .._records import ImageInput, Usage
from .._render import INPUT_SIZES, OUTPUT_SIZES, prose
from .._render import _code_html as code_html
from .._transcript import Transcript, Turn
from ._edits import EditLog
from ._state import MediaStore, outputs_state
from ._stream import ReplyStream

__all__ = ["SessionWidget", "bundle_problem", "STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_ESM, _CSS = STATIC_DIR / "session_view.js", STATIC_DIR / "session_view.css"

_BUSY = {"run": "Running…", "fork": "Forking: replaying the earlier turns…"}

log = logging.getLogger(__name__)

#: What the page did with a Copy to cell, as the browser reports it.
_COPIED = {
    "cell": "Inserted as a new cell below.",
    "clipboard": "No notebook cell could be made here: the code is on the clipboard.",
    "none": "Neither a new cell nor the clipboard worked here: copy the code from the editor.",
}

#: Reduces images and highlights code while the session goes on: one thread, so a
#: session's images never take more than one core from the kernels and the model.
_WORKER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pyvision-view")


def _quietly(function: Callable[..., Any], *args: Any) -> None:
    """Run ``function``; a failure here only means the work is done again, later, in place."""
    try:
        function(*args)
    except Exception as exc:  # noqa: BLE001
        log.debug("background view work failed: %s", exc)


def bundle_problem() -> str | None:
    """Why the front end cannot be shown (its bundle was never built), or None."""
    if _ESM.is_file() and _CSS.is_file():
        return None
    return ("the notebook front end of pyvision_magic is not built (no "
            f"{_ESM.name} in {STATIC_DIR}): reinstall with `pip install -e .` where Node.js "
            "and npm are installed; the static view is shown instead")


class SessionWidget(anywidget.AnyWidget):
    """Everything a session shows, in one widget model.

    Use :meth:`attach` to follow a :class:`~pyvision_magic.Session`, or
    :meth:`show_transcript` for a finished one. Run and Fork callbacks take
    ``(turn_index, code)`` and may return a :class:`concurrent.futures.Future`;
    while it runs the turn's buttons are disabled, and its error, if any, is
    shown on the turn.
    """

    # Paths: anywidget reads them, and reloads them on change with ANYWIDGET_HMR=1.
    _esm = _ESM if _ESM.is_file() else (
        "export default { render({ el }) { el.textContent = 'pyvision: the front end is not "
        "built; reinstall pyvision_magic where Node.js is installed.'; } };")
    _css = _CSS if _CSS.is_file() else ""

    header = traitlets.Dict(help="question, model, input images, title, notice").tag(sync=True)
    state = traitlets.Dict(help="status, answer, usage, elapsed time, phase").tag(sync=True)
    turns = traitlets.List(help="one dict per turn").tag(sync=True)
    forks = traitlets.List(help="[{turn, ref}] of the forks' widgets").tag(sync=True)

    def __init__(self, question: str, images: Sequence[ImageInput], model: str, *,
                 uid: str | None = None, title: str = "", notice: str = "",
                 fork_of: int | None = None, videos: Sequence[Any] = (), **kwargs: Any) -> None:
        self.uid = uid or uuid.uuid4().hex[:12]
        self._status = "running"
        self._media = MediaStore()
        self._sent_media: set[str] = set()
        shown = []
        for image in images:
            try:
                key, _, width, height = self._media.add(image.data)
            except Exception:  # noqa: BLE001 - an unreadable input is named, not drawn
                key, width, height = "", image.width, image.height
            shown.append({"name": image.name, "variable": f"image_clue_{len(shown)}",
                          "key": key, "width": width, "height": height})
            # The static copy's sizes, made while the session runs rather than at its end.
            _WORKER.submit(_quietly, MediaStore.prepare, image.data, INPUT_SIZES)
        for number, video in enumerate(videos):  # each clip's sampled frames, as a strip
            for frame in video.frames:
                try:
                    key, _, width, height = self._media.add(frame.image.data)
                except Exception:  # noqa: BLE001 - as for an input image
                    key, width, height = "", frame.image.width, frame.image.height
                shown.append({"name": f"{frame.seconds:.2f} s (frame {frame.index})",
                              "variable": f"video_clue_{number}", "key": key, "width": width,
                              "height": height})
        super().__init__(
            header={"question": question, "model": model, "title": title, "images": shown,
                    "notice": notice, "uid": self.uid,
                    "fork_of": None if fork_of is None else {"turn": fork_of}}, **kwargs)
        self.running = False
        #: The session's number in ``%pyvision kernels`` (set by its handle).
        self.session_id = 0
        self._lock = threading.RLock()
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._transcript: Transcript | None = None
        self._turn_states: list[dict[str, Any]] = []
        self._outputs_cache: dict[int, tuple[list[Any], int, list[dict[str, Any]]]] = {}
        self._streams: dict[int, ReplyStream] = {}
        self._outputs_tail: asyncio.Future[None] | None = None
        self._edits = EditLog(self._turn_code)
        self._busy: dict[int, bool] = {}
        self._messages: dict[int, tuple[str, bool]] = {}
        self._inherited = fork_of or 0
        self._status, self._answer, self._error = "running", None, None
        self._usage = Usage()
        self._started: float | None = None
        self._ended: float | None = None
        self._phase, self._phase_turn, self._phase_started = "idle", None, 0.0
        self._live_tokens = 0
        self.sent_messages = 0
        self.on_msg(self._on_msg)
        self._push_state()

    def __repr__(self) -> str:
        # The one line a notebook keeps as text/plain next to the widget: it outlives the
        # kernel, so it says how to get the view back rather than how the session went.
        return ("pyvision session view: the live view needs this notebook's kernel; run the "
                "cell again, or `%pyvision load` this notebook (its saved copy is below)")

    # -- callbacks ---------------------------------------------------------------

    def on_run(self, callback: Callable[[int, str], Any], remove: bool = False) -> None:
        """Call ``callback(index, code)`` when a turn's Run is clicked."""
        self._set_handler("run", callback, remove)

    def on_fork(self, callback: Callable[[int, str], Any], remove: bool = False) -> None:
        """Call ``callback(index, code)`` when a turn's Fork is clicked."""
        self._set_handler("fork", callback, remove)

    def on_stop(self, callback: Callable[[], Any], remove: bool = False) -> None:
        """Call ``callback()`` when Stop is clicked."""
        self._set_handler("stop", callback, remove)

    def on_copy(self, callback: Callable[[int, str], str], remove: bool = False) -> None:
        """Call ``callback(index, code)`` for Copy to cell; it returns the cell's source."""
        self._set_handler("copy", callback, remove)

    def _set_handler(self, name: str, callback: Callable[..., Any], remove: bool) -> None:
        if remove:
            if self._handlers.get(name) is callback:
                del self._handlers[name]
        else:
            self._handlers[name] = callback

    # -- what the browser says ---------------------------------------------------

    def click(self, action: str, turn: int | None = None, code: str | None = None) -> None:
        """Do what the browser's ``action`` message does (for tests and scripts)."""
        self._on_msg(self, {"action": action, "turn": turn, "code": code}, [])

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        action = content.get("action")
        try:
            index = int(content["turn"]) if content.get("turn") is not None else None
        except (TypeError, ValueError):
            return
        code = content.get("code")
        if action == "hello":
            # A view was drawn (again): it needs every image, and to know a kernel is here.
            self._tell({"type": "alive"})
            self._send_media(everything=True)
        elif action == "stop":
            handler = self._handlers.get("stop")
            if handler is not None and self.running:
                handler()
        elif index is None or not 0 <= index < len(self._turn_states):
            return
        elif action == "edit" and isinstance(code, str):
            self._set_draft(index, code)
        elif action in ("run", "fork") and isinstance(code, str):
            self._start_action(action, index, code)
        elif action == "copy" and isinstance(code, str):
            self._copy(index, code)
        elif action == "copied":
            how = content.get("how")
            self._message(index, _COPIED.get(how, _COPIED["none"]), error=how not in _COPIED
                          or how == "none")

    def _set_draft(self, index: int, code: str) -> None:
        with self._lock:
            self._edits.draft(index, code)
            self._refresh_turn(index)

    def _start_action(self, name: str, index: int, code: str) -> None:
        handler = self._handlers.get(name)
        if self.running or self._busy.get(index):
            self._message(index, "Wait until the session ends." if self.running
                          else "This turn is busy.", error=True)
            return
        if handler is None:
            self._message(index, f"{name.capitalize()} is not available here.", error=True)
            return
        with self.hold_sync():
            self._busy[index] = True
            self._messages[index] = (_BUSY[name], False)
            if name == "run":
                self._set_phase("tool", index)
            self._refresh_turn(index)
        try:
            future = handler(index, code)
        except Exception as exc:  # noqa: BLE001 - shown on the turn, never in another cell
            self._action_done(index, name, exc)
            return
        if not isinstance(future, concurrent.futures.Future):
            self._action_done(index, name, None)
            return
        self.last_action = future
        future.add_done_callback(lambda f: self._action_done(
            index, name, None if f.cancelled() else f.exception(), f.cancelled()))

    def _action_done(self, index: int, name: str, exc: BaseException | None,
                     cancelled: bool = False) -> None:
        if cancelled:
            message, error = f"{name.capitalize()} was cancelled.", True
        elif exc is not None:
            message, error = f"{name.capitalize()} failed: {exc}", True
        elif name == "fork":
            message, error = "Forked: the new session is shown below this turn.", False
        else:
            message, error = "", False
        with self.hold_sync():
            self._busy.pop(index, None)
            self._messages[index] = (message, error)
            if self._phase_turn == index and not self.running:
                self._set_phase("idle", None)
            self._refresh_all_turns()

    def _copy(self, index: int, code: str) -> None:
        handler = self._handlers.get("copy")
        source = code
        if handler is not None:
            try:
                source = handler(index, code)
            except Exception as exc:  # noqa: BLE001
                self._message(index, f"Copy failed: {exc}", error=True)
                return
        self._tell({"type": "insert_cell", "turn": index, "source": source})

    def _message(self, index: int, text: str, error: bool = False) -> None:
        with self._lock:
            self._messages[index] = (text, error)
            self._refresh_turn(index)

    def _tell(self, content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        self.sent_messages += 1
        self.send(content, buffers)

    def _send_media(self, everything: bool = False) -> None:
        """Send the images the browser does not have yet (all of them for a new view).

        Images go as messages, not as state: each goes once, and a saved notebook's
        widget state does not carry them (its static copy does).
        """
        with self._lock:
            keys = [k for k in self._media.data if everything or k not in self._sent_media]
            self._sent_media.update(keys)
            if not keys:
                return
            items = [{"key": k, "mime": self._media.mime(k)} for k in keys]
            buffers = [self._media.data[k] for k in keys]
        self._tell({"type": "media", "items": items}, buffers)

    # -- session events ----------------------------------------------------------

    def attach(self, session: Any) -> None:
        """Follow ``session``'s events."""
        self._transcript = session.transcript
        session.on_turn_start(self.turn_start)
        session.on_text_delta(self.text_delta)
        session.on_code(self._code_event)
        session.on_outputs(self._outputs_event)
        session.on_answer(self.answer_given)
        session.on_status(self.status)

    def turn_start(self, turn: Turn) -> None:
        with self._lock, self.hold_sync():
            self._flush_streams()
            self._streams[turn.index] = ReplyStream(turn.index)
            self._live_tokens = 0
            self._set_phase("model", turn.index)
            self._ensure_turn(turn.index)
            self._turn_states[turn.index] = {**self._turn_state(turn), "streaming": True}
            self.turns = list(self._turn_states)

    def text_delta(self, turn: Turn, delta: str) -> None:
        stream = self._streams.get(turn.index)
        if stream is None:
            return
        wait = stream.add(delta)
        if wait == 0.0:
            self._flush_stream(stream)
        elif stream.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on a loop (a test feeding events): next piece sends
                return
            stream.timer = loop.call_later(wait, self._flush_stream, stream)

    def _flush_stream(self, stream: ReplyStream) -> None:
        if self._streams.get(stream.index) is not stream:
            stream.cancel_timer()
            return
        message = stream.delta()
        if message is not None:
            self._live_tokens = stream.tokens
            self._tell(message)

    def _flush_streams(self) -> None:
        for stream in list(self._streams.values()):
            self._flush_stream(stream)
            stream.cancel_timer()
        self._streams.clear()

    def code(self, turn: Turn) -> None:
        with self._lock, self.hold_sync():
            self._end_stream(turn.index)
            self._take_usage()
            self._set_phase("tool", turn.index)
            self._update_turn(turn)
            self._push_state()

    def _code_event(self, turn: Turn) -> None:
        self.code(turn)
        if turn.code:  # highlighted for the static copy while the tool runs
            _WORKER.submit(_quietly, code_html, turn.code)

    async def _outputs_event(self, turn: Turn) -> None:
        """Reduce the new images in a worker thread, then show the outputs.

        The session does not wait for it: the next model request leaves at once.
        Outputs are shown in the order they came.
        """
        previous = self._outputs_tail
        if previous is not None and previous.done():
            previous = None
        sources = [o.data for o in turn.outputs if o.kind == "image" and o.data]
        missing = [s for s in sources if not self._media.known(s)]
        if previous is None and not missing:
            self.outputs(turn)
            return
        loop = asyncio.get_running_loop()
        work = [loop.run_in_executor(_WORKER, _quietly, MediaStore.prepare, s, OUTPUT_SIZES)
                for s in missing]

        async def show() -> None:
            await asyncio.gather(*([previous] if previous else []), *work,
                                 return_exceptions=True)
            try:
                self.outputs(turn)
            except Exception:  # noqa: BLE001 - a view fault must not end the session
                log.exception("the session view could not show turn %d", turn.index + 1)

        self._outputs_tail = asyncio.ensure_future(show())

    def outputs(self, turn: Turn) -> None:
        with self._lock, self.hold_sync():
            self._end_stream(turn.index)
            # A rerun (the session is not running) keeps what the turn showed before.
            others = self._edits.outputs_shown(turn.index, turn.code, turn.exec_status,
                                               self._outputs_of(turn), rerun=not self.running)
            self._take_usage()
            if self.running:
                self._set_phase("model", turn.index + 1)
            self._update_turn(turn, everything=others)
            self._push_state()

    def answer_given(self, transcript: Transcript) -> None:
        with self._lock, self.hold_sync():
            self._answer = transcript.answer
            last = transcript.turns[-1]
            self._end_stream(last.index)
            self._usage = transcript.usage
            self._update_turn(last)
            self._push_state()

    def status(self, transcript: Transcript) -> None:
        with self._lock, self.hold_sync():
            self._transcript = self._transcript or transcript
            self.running = transcript.status == "running"
            if self.running and self._started is None:
                self._started = time.monotonic()
            if not self.running and self._started is not None and self._ended is None:
                self._ended = time.monotonic()
            self._status, self._answer, self._error = (transcript.status, transcript.answer,
                                                       transcript.error)
            self._usage = transcript.usage
            if not self.running:
                # A reply cut by Stop has no usage from the endpoint: keep its estimate.
                cut = sum(stream.tokens for stream in self._streams.values())
                self._flush_streams()
                self._live_tokens = cut
                self._set_phase("idle", None)
            self._refresh_all_turns()

    def show_transcript(self, transcript: Transcript) -> None:
        """Draw a finished session at once."""
        self._transcript = transcript
        self._started = None
        self.status(transcript)

    def add_fork(self, view: "SessionWidget", turn: int) -> None:
        """Show ``view`` (a fork from ``turn``) directly below that turn."""
        self.forks = [*self.forks, {"turn": turn, "ref": f"anywidget:{view.model_id}"}]

    # -- state -------------------------------------------------------------------

    def _take_usage(self) -> None:
        # The header's token count follows each reply, not only the session's end.
        if self._transcript is not None:
            self._usage = self._transcript.usage

    def _end_stream(self, index: int) -> None:
        stream = self._streams.pop(index, None)
        if stream is not None:
            stream.cancel_timer()
        self._live_tokens = 0

    def _set_phase(self, phase: str, turn: int | None) -> None:
        if (phase, turn) != (self._phase, self._phase_turn):
            self._phase, self._phase_turn = phase, turn
            self._phase_started = time.monotonic()
        self._push_state()

    def _push_state(self) -> None:
        now = time.monotonic()
        elapsed = 0.0 if self._started is None else (self._ended or now) - self._started
        usage = self._usage
        stale = self._edits.first_edited()
        self.state = {
            "status": self._status, "answer": self._answer, "error": self._error,
            "usage": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens,
                      "total": usage.total_tokens,
                      "cached": int(getattr(usage, "cached_tokens", 0) or 0)},
            "elapsed": round(elapsed, 2), "phase": self._phase,
            "phase_elapsed": round(now - self._phase_started, 2) if self._phase != "idle" else 0,
            "phase_turn": self._phase_turn, "live_tokens": self._live_tokens,
            "stale_answer": None if stale is None or self._answer is None else stale + 1,
        }

    def _turn_obj(self, index: int) -> Turn | None:
        turns = self._transcript.turns if self._transcript is not None else []
        return turns[index] if 0 <= index < len(turns) else None

    def _turn_code(self, index: int) -> str | None:
        turn = self._turn_obj(index)
        return turn.code if turn is not None else None

    def _ensure_turn(self, index: int) -> None:
        while len(self._turn_states) <= index:
            self._turn_states.append({"index": len(self._turn_states)})

    def _outputs_of(self, turn: Turn) -> list[dict[str, Any]]:
        """The turn's outputs as the view's dicts, made once per list of outputs."""
        cached = self._outputs_cache.get(turn.index)
        # The list itself is kept (not its id, which a new list could reuse after a rerun).
        if cached is not None and cached[0] is turn.outputs and cached[1] == len(turn.outputs):
            return cached[2]
        outputs = outputs_state(turn.outputs, self._media)
        self._outputs_cache[turn.index] = (turn.outputs, len(turn.outputs), outputs)
        return outputs

    def _turn_state(self, turn: Turn) -> dict[str, Any]:
        outputs = self._outputs_of(turn)
        message, error = self._messages.get(turn.index, ("", False))
        return {
            "index": turn.index, "prose": prose(turn.text, turn.code), "code": turn.code,
            "answer": turn.answer,
            "streaming": False, "exec_status": turn.exec_status, "note": turn.note,
            "seconds": round(turn.exec_seconds, 2), "model_seconds": round(turn.model_seconds, 2),
            "tokens": turn.usage.total_tokens, "outputs": outputs,
            "inherited": turn.index < self._inherited, **self._edits.fields(turn.index),
            "message": message, "message_error": error, "busy": bool(self._busy.get(turn.index)),
        }

    def _update_turn(self, turn: Turn, everything: bool = False) -> None:
        self._ensure_turn(turn.index)
        if everything:
            self._refresh_all_turns()
            return
        self._turn_states[turn.index] = self._turn_state(turn)
        self._sync_turns()

    def _refresh_turn(self, index: int) -> None:
        turn = self._turn_obj(index)
        if turn is None:
            return
        self._ensure_turn(index)
        streaming = self._turn_states[index].get("streaming", False)
        self._turn_states[index] = {**self._turn_state(turn), "streaming": streaming}
        self._sync_turns()

    def _refresh_all_turns(self) -> None:
        turns = self._transcript.turns if self._transcript is not None else []
        for turn in turns:
            self._ensure_turn(turn.index)
            streaming = self.running and self._turn_states[turn.index].get("streaming", False)
            self._turn_states[turn.index] = {**self._turn_state(turn), "streaming": streaming}
        self._sync_turns()

    def _sync_turns(self) -> None:
        self._send_media()  # before the turns that show them
        with self.hold_sync():
            self.turns = list(self._turn_states)
            self._push_state()
