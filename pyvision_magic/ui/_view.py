"""The live view of one session: header, turn cards, answer, forks."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w

from .._records import ImageInput
from .._transcript import Transcript, Turn
from ._answer import AnswerBox
from ._copy import copy_to_cell_script
from ._header import SessionHeader
from ._styles import style_html
from ._turn import TurnCard

__all__ = ["SessionView", "copy_to_cell_script"]

_BUSY = {"run": "Running…", "fork": "Forking: replaying the earlier turns…"}


class SessionView(w.VBox):
    """Everything a session shows, updated from its events.

    Use :meth:`attach` to follow a :class:`~pyvision_magic.Session`, or
    :meth:`show_transcript` for a finished one. Clicks go to the callbacks
    given with :meth:`on_run`, :meth:`on_fork` and :meth:`on_stop`; Run and
    Fork callbacks take ``(turn_index, code)`` and may return a
    :class:`concurrent.futures.Future`, during which the card's buttons are
    disabled and after which its error, if any, is shown on the card.
    """

    def __init__(self, question: str, images: Sequence[ImageInput], model: str, *,
                 uid: str | None = None, title: str = "", **kwargs: Any) -> None:
        self.uid = uid or uuid.uuid4().hex[:12]
        self.style = w.HTML(style_html(self.uid))
        self.caption = w.HTML(f"<b>{title}</b>" if title else "")
        self.header = SessionHeader(question, images, model)
        self.cards_box = w.VBox()
        self.answer = AnswerBox()
        self.forks_box = w.VBox()
        self.bridge = w.HTML()
        super().__init__([self.style, self.caption, self.header, self.cards_box, self.answer,
                          self.forks_box, self.bridge], **kwargs)
        self.add_class("pyvision-view")
        self.cards: list[TurnCard] = []
        self.forks: list[SessionView] = []
        self.running = False
        self._handlers: dict[str, Callable[..., Any]] = {}
        self.header.stop_button.on_click(lambda _: self._stop())

    # -- callbacks ---------------------------------------------------------------

    def on_run(self, callback: Callable[[int, str], Any], remove: bool = False) -> None:
        """Call ``callback(index, code)`` when a card's Run is clicked."""
        self._set_handler("run", callback, remove)

    def on_fork(self, callback: Callable[[int, str], Any], remove: bool = False) -> None:
        """Call ``callback(index, code)`` when a card's Fork is clicked."""
        self._set_handler("fork", callback, remove)

    def on_stop(self, callback: Callable[[], Any], remove: bool = False) -> None:
        """Call ``callback()`` when Stop is clicked."""
        self._set_handler("stop", callback, remove)

    def _set_handler(self, name: str, callback: Callable[..., Any], remove: bool) -> None:
        if remove:
            if self._handlers.get(name) is callback:
                del self._handlers[name]
        else:
            self._handlers[name] = callback

    def _stop(self) -> None:
        handler = self._handlers.get("stop")
        if handler is not None and self.running:
            self.header.stop_button.disabled = True
            self.header.stop_button.description = "Stopping…"
            handler()

    # -- session events --------------------------------------------------------

    def attach(self, session: Any) -> None:
        """Follow ``session``'s events."""
        session.on_turn_start(self.turn_start)
        session.on_text_delta(self.text_delta)
        session.on_code(self.code)
        session.on_outputs(self.outputs)
        session.on_answer(self.answer_given)
        session.on_status(self.status)

    def card(self, index: int) -> TurnCard:
        """The card of turn ``index``, made if needed."""
        while len(self.cards) <= index:
            card = TurnCard(len(self.cards))
            for name in ("run", "fork", "copy"):
                card.on_action(name, lambda c, n=name: self._card_action(c, n))
            card.allow_actions(not self.running)
            self.cards.append(card)
            self.cards_box.children = tuple(self.cards)
        return self.cards[index]

    def turn_start(self, turn: Turn) -> None:
        if turn.index > 0 and turn.index - 1 < len(self.cards):
            self.cards[turn.index - 1].set_text(self.cards[turn.index - 1]._raw)
        self.card(turn.index)
        self.header.update(turns=turn.index + 1)

    def text_delta(self, turn: Turn, delta: str) -> None:
        self.card(turn.index).append_text(delta)

    def code(self, turn: Turn) -> None:
        card = self.card(turn.index)
        card.set_text(turn.text, turn.code)
        card.set_code(turn.code)

    def outputs(self, turn: Turn) -> None:
        card = self.card(turn.index)
        if card.code.layout.display == "none":  # a replayed turn (fork history)
            card.set_text(turn.text, turn.code)
            card.set_code(turn.code)
        card.set_outputs(turn.outputs, turn.exec_status, turn.note, turn.exec_seconds)

    def answer_given(self, transcript: Transcript) -> None:
        last = transcript.turns[-1]
        self.card(last.index).set_text(last.text, last.code)

    def status(self, transcript: Transcript) -> None:
        self.running = transcript.status == "running"
        for turn in transcript.turns:  # flush text still waiting for a redraw
            card = self.card(turn.index)
            card.set_text(turn.text, turn.code)
            if turn.note and not card.note.value:
                card.set_outputs(turn.outputs, turn.exec_status, turn.note, turn.exec_seconds)
        self.header.update(status=transcript.status, turns=len(transcript.turns),
                           usage=transcript.usage)
        if not self.running:
            self.header.stop_button.description = "Stop"
        self.answer.show(transcript.status, transcript.answer, transcript.error)
        for card in self.cards:
            card.allow_actions(not self.running)

    def tick(self) -> None:
        """Redraw the elapsed time (called every second while running)."""
        self.header.refresh()

    def show_transcript(self, transcript: Transcript) -> None:
        """Draw a finished session at once."""
        for turn in transcript.turns:
            card = self.card(turn.index)
            card.set_text(turn.text, turn.code)
            card.set_code(turn.code)
            if turn.exec_status is not None or turn.outputs:
                card.set_outputs(turn.outputs, turn.exec_status, turn.note, turn.exec_seconds)
        self.header.started = None
        self.status(transcript)

    def add_fork(self, view: "SessionView") -> None:
        """Show a fork's view below this session's answer."""
        view.add_class("pyvision-fork")
        self.forks.append(view)
        self.forks_box.children = tuple(self.forks)

    # -- card buttons ----------------------------------------------------------

    def _card_action(self, card: TurnCard, name: str) -> None:
        code = card.code.value
        if name == "copy":
            # The page overwrites this line with the outcome, if it runs scripts.
            card.show_message("Sent to the notebook page: it inserts a new cell below, or copies "
                              "the code to the clipboard.")
            self.copy_to_cell(code, card)
            return
        handler = self._handlers.get(name)
        if handler is None:
            card.show_message(f"{name.capitalize()} is not available here.", error=True)
            return
        card.set_busy(_BUSY[name])
        future = handler(card.index, code)
        if not isinstance(future, concurrent.futures.Future):
            card.set_done()
            return
        card.last_action = future  # type: ignore[attr-defined]
        future.add_done_callback(lambda f: _action_done(card, name, f))

    def copy_to_cell(self, code: str, card: TurnCard | None = None) -> None:
        """Insert ``code`` as a new cell below this output, in the browser.

        The page says on ``card``'s message line whether it worked.
        """
        target = f".{card.message_class}" if card is not None else ""
        self.bridge.value = copy_to_cell_script(code, target)


def _action_done(card: TurnCard, name: str, future: concurrent.futures.Future) -> None:
    if future.cancelled():
        card.set_done(f"{name.capitalize()} was cancelled.", error=True)
        return
    exc = future.exception()
    if exc is not None:
        card.set_done(f"{name.capitalize()} failed: {exc}", error=True)
        return
    card.set_done("Forked: the new session is below the answer." if name == "fork" else "")
