"""The agent loop: ask the model, run its tools, feed back the results, repeat."""

from __future__ import annotations

import asyncio
import copy
import inspect
import platform
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from jupyter_core.utils import run_sync
from traitlets import Enum, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from ._errors import ConfigError, ModelError, PyVisionError
from ._executor import Executor
from ._history import DEFAULT_IMAGE_HISTORY, IMAGE_HISTORY, history_note
from ._hooks import Callbacks
from ._model import Model
from ._outgoing import ModelImages
from ._parsing import parse_reply
from ._profiles import PROFILES, PromptFacts, make_profile
from ._prompt import output_as_image
from ._records import ExecutionResult, ImageInput, Usage
from ._tool_faults import executor_faults as _executor_faults
from ._tool_faults import one_line as _one_line
from ._tool_faults import without_interrupt as _without_interrupt
from ._transcript import Transcript, Turn
from ._video import VideoInput, check_video_limits, sample_frames
from ._video_session import WrittenVideos, bind_videos, can_bind, video_parts

__all__ = ["Session"]

EVENTS = ("turn_start", "text_delta", "code", "outputs", "answer", "status")


class Session(LoggingConfigurable):
    """One question answered by a model that writes and runs tools.

    The session talks to a :class:`Model` and an :class:`Executor` and records
    everything in :attr:`transcript`. It knows nothing of widgets or terminals:
    views register observers with the ``on_<event>`` methods.

    Parameters
    ----------
    question : str
        What to ask; must not be empty.
    images : sequence of ImageInput
        The question's images, bound in the kernel as ``image_clue_0``, ...
    model : Model
        Who answers.
    executor : Executor
        Where the tools run. The session starts it but never shuts it down:
        the caller owns it (views rerun tools in it after the session ends).
    history : sequence of Turn
        Turns to begin with, as made by :meth:`fork`: their code is run again
        to rebuild the kernel's state, then the model continues after them.
    """

    max_turns = Int(
        10, help="Most model replies in one session; the last one is told to answer now."
    ).tag(config=True)
    timeout = Float(60.0, help="Seconds one tool may run before it is interrupted.").tag(
        config=True
    )
    max_pixels = Int(
        1024 * 1024,
        help="Pixel budget of each photo sent to the model (line art stays lossless).",
    ).tag(config=True)
    image_history = Enum(
        list(IMAGE_HISTORY),
        DEFAULT_IMAGE_HISTORY,
        help="How a tool's image is sent again once the model has seen it in full: 'full' "
        "(unchanged), 'low' (a 512x512 re-encode, low detail where the endpoint honours "
        "it) or 'placeholder' (a note; display(image_clue_N) shows it again). The "
        "question's images always go in full.",
    ).tag(config=True)
    prompt_profile = Unicode(
        "default",
        help="Conversation layout shown to the model: 'default' (instructions in a system "
        f"message) or 'pyvision-format' (the PyVision reference layout); one of {list(PROFILES)}.",
    ).tag(config=True)
    system_prompt_file = Unicode(
        None, allow_none=True,
        help="A text file whose {{placeholders}} template replaces the profile's instructions "
        "(see README, 'Prompt profiles'); None keeps the profile's own.",
    ).tag(config=True)
    video_frames = Int(
        8, help="Frames of each video shown to the model, spread evenly from the first to the "
        "last; together they fit the pixel budget of one image (max_pixels).",
    ).tag(config=True)
    max_video_bytes = Int(
        512 * 2**20, allow_none=True,
        help="Largest video clip accepted, in bytes (it is copied to the kernel's folder); "
        "None means no cap.",
    ).tag(config=True)
    max_video_seconds = Float(
        3600.0, allow_none=True, help="Longest video clip accepted, in seconds; None means no cap.",
    ).tag(config=True)

    def __init__(
        self,
        question: str,
        images: Sequence[ImageInput] = (),
        *,
        model: Model,
        executor: Executor,
        history: Sequence[Turn] = (),
        videos: Sequence[VideoInput] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not question or not question.strip():
            raise ConfigError("The question is empty: write what you want to know about the image.")
        if self.max_turns < 1:
            raise ConfigError(f"max_turns must be at least 1, not {self.max_turns}.")
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {self.timeout}.")
        #: The message builders of :attr:`prompt_profile` (read once: a template file
        #: edited mid-session must not change the prefix of later requests).
        self.profile = make_profile(self.prompt_profile, self.system_prompt_file)
        self.model = model
        self.executor = executor
        self.transcript = Transcript(
            question=question,
            model=model.name,
            images=list(images),
            max_turns=self.max_turns,
            timeout=self.timeout,
            turns=list(history),
            videos=list(videos),
        )
        # -- video (see _video_session) --
        if self.video_frames < 1:
            raise ConfigError(f"video_frames must be at least 1, not {self.video_frames}.")
        for video in videos:
            if video.available:  # a clip that is gone (a loaded transcript) keeps its frames
                check_video_limits(video, max_bytes=self.max_video_bytes,
                                   max_seconds=self.max_video_seconds)
        self._written_videos = WrittenVideos(
            frames=self.video_frames, max_pixels=self.max_pixels,
            max_bytes=self.max_video_bytes, max_seconds=self.max_video_seconds)
        self._history = len(history)
        #: Sent with every request of this session (``Model.complete(cache_key=...)``),
        #: so that an endpoint with a prompt cache keeps the session's prefix in one place.
        self.cache_key = uuid.uuid4().hex
        self._restart_first = False
        self._callbacks = {name: Callbacks() for name in EVENTS}
        #: What the model is sent for images (encoded once; tool images per image_history).
        self._images = ModelImages(model, max_pixels=self.max_pixels,
                                   image_history=self.image_history)
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._model_task: asyncio.Future[Any] | None = None
        self._warming: asyncio.Future[None] | None = None
        self._interrupter: asyncio.Future[None] | None = None
        self._executing = False
        #: The error that ended the session with status ``error``, if any.
        self.error: PyVisionError | None = None

    # -- observers -----------------------------------------------------------

    def on_turn_start(self, callback: Callable[[Turn], Any], remove: bool = False) -> None:
        """Call ``callback(turn)`` when a model reply begins."""
        self._callbacks["turn_start"].register(callback, remove)

    def on_text_delta(self, callback: Callable[[Turn, str], Any], remove: bool = False) -> None:
        """Call ``callback(turn, delta)`` for each streamed piece of the reply."""
        self._callbacks["text_delta"].register(callback, remove)

    def on_code(self, callback: Callable[[Turn], Any], remove: bool = False) -> None:
        """Call ``callback(turn)`` when a reply's code is known, before it runs."""
        self._callbacks["code"].register(callback, remove)

    def on_outputs(self, callback: Callable[[Turn], Any], remove: bool = False) -> None:
        """Call ``callback(turn)`` when a tool has run and its outputs are recorded."""
        self._callbacks["outputs"].register(callback, remove)

    def on_answer(self, callback: Callable[[Transcript], Any], remove: bool = False) -> None:
        """Call ``callback(transcript)`` when the model gives its final answer."""
        self._callbacks["answer"].register(callback, remove)

    def on_status(self, callback: Callable[[Transcript], Any], remove: bool = False) -> None:
        """Call ``callback(transcript)`` when the status changes (running, then how it ended)."""
        self._callbacks["status"].register(callback, remove)

    async def _emit(self, event: str, *args: Any) -> None:
        await self._callbacks[event].fire(*args)

    # -- control -------------------------------------------------------------

    def stop(self) -> None:
        """Ask the session to end soon with status ``stopped``; safe from any thread.

        A model request in flight is abandoned and a running tool interrupted;
        everything recorded so far is kept.
        """
        self._stop_requested = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        if self._model_task is not None and not self._model_task.done():
            self._model_task.cancel()
        if self._executing and (self._interrupter is None or self._interrupter.done()):
            self._interrupter = asyncio.ensure_future(self._interrupt_until_done())

    async def _interrupt_until_done(self) -> None:
        # An interrupt that reaches the kernel just before it starts the code is
        # lost, so keep interrupting until the tool has really ended.
        while self._executing:
            try:
                await self.executor.interrupt()
            except Exception as exc:  # the running execute() reports the fault
                self.log.debug("could not interrupt the tool: %s", _one_line(exc))
                return
            await asyncio.sleep(0.5)

    @property
    def status(self) -> str:
        return self.transcript.status

    # -- the loop ------------------------------------------------------------

    def _image_url(self, image: ImageInput) -> str:
        """Data URL of an image as sent to the model, encoded once per image."""
        return self._images.url(image)

    async def _feedback(self, result: ExecutionResult, last_turn: bool) -> dict[str, Any]:
        images = [output_as_image(o) for o in result.outputs if o.kind == "image" and o.data]
        await self._images.add_tool_images(images)
        return self.profile.feedback(result.outputs, result.note, self._image_url, last_turn)

    async def _prepare_executor(self) -> None:
        with _executor_faults():
            await self.executor.start()
            if self._restart_first:
                await self.executor.restart()
            await self.executor.bind_images(self.transcript.images)
            await bind_videos(self.executor, self.transcript.videos,
                              max_bytes=self.max_video_bytes)

    async def _run_tool(self, turn: Turn, code: str) -> ExecutionResult:
        """Execute ``code`` for ``turn`` and record what it gave.

        Raises
        ------
        PyVisionError
            If the executor itself failed (not the tool); the turn's note says so.
        """
        self._executing = True
        try:
            with _executor_faults():
                await self._written_videos.snapshot(self.executor)
                result = await self.executor.execute(code, timeout=self.timeout)
                result = await self._written_videos.collect(self.executor, result)
                if result.status in ("died", "timeout") and self.transcript.videos:
                    # A restarted kernel got its images back, not its clips.
                    await bind_videos(self.executor, self.transcript.videos,
                                      max_bytes=self.max_video_bytes)
        except PyVisionError as exc:
            turn.code = code
            turn.note = f"The tool could not be run: {_one_line(exc)}"
            raise
        finally:
            self._executing = False
        turn.code = code
        turn.outputs = result.outputs
        turn.exec_status = result.status
        turn.note = result.note
        turn.exec_seconds = result.duration
        if self._stop_requested and result.status in ("error", "timeout"):
            # The user's Stop interrupted the tool: that is not a fault of the tool, and
            # the interrupt's own report (an error, or "KeyboardInterrupt" on stderr when
            # it lands outside the tool's frame) is not the tool's output.
            turn.outputs = _without_interrupt(result.outputs)
            turn.exec_status = "stopped"
            turn.note = "Stopped by the user while the tool was running."
        await self._emit("outputs", turn)
        return result

    # -- user actions --------------------------------------------------------

    async def _async_rerun(self, index: int, code: str) -> Turn:
        """Run ``code`` as turn ``index``'s tool, in the kernel as it is now.

        The turn's code and outputs are replaced; the model is not asked.
        Observers get an ``outputs`` event.
        """
        turn = self._turn(index)
        with _executor_faults():
            await self.executor.start()
        await self._run_tool(turn, code)
        return turn

    rerun = run_sync(_async_rerun)

    def fork(self, index: int, code: str | None = None, *, model: Model | None = None,
             executor: Executor | None = None) -> "Session":
        """A new session that keeps the turns before ``index`` and continues from there.

        Turn ``index`` gets ``code`` (default: its own code) in place of what the
        model wrote; running the new session replays the earlier tools to rebuild
        the kernel's state (restarting the kernel if it is this session's), runs
        the edited tool and lets the model continue. This session is unchanged.
        """
        from ._replay import ReplayModel

        old = self._turn(index)
        code = old.code if code is None else code
        if not code or not code.strip():
            raise ConfigError(f"Turn {index + 1} has no code to fork from; write some code first.")
        history = [copy.deepcopy(turn) for turn in self.transcript.turns[:index]]
        history.append(Turn(index=index, text=_with_code(old, code), code=code, usage=old.usage))
        model = model or self.model
        if isinstance(model, ReplayModel):
            # A replay goes on with the recorded turns after the fork point.
            model = ReplayModel(model.transcript, delay=model.delay, position=index + 1)
        child = Session(
            self.transcript.question,
            self.transcript.images,
            model=model,
            executor=executor or self.executor,
            history=history,
            parent=self.parent,
            max_turns=self.max_turns,
            timeout=self.timeout,
            max_pixels=self.max_pixels,
            image_history=self.image_history,
            prompt_profile=self.prompt_profile,
            system_prompt_file=self.system_prompt_file,
            videos=self.transcript.videos,
            video_frames=self.video_frames,
            max_video_bytes=self.max_video_bytes,
            max_video_seconds=self.max_video_seconds,
        )
        child._restart_first = child.executor is self.executor
        return child

    def _turn(self, index: int) -> Turn:
        turns = self.transcript.turns
        if not 0 <= index < len(turns):
            raise ConfigError(f"There is no turn {index + 1}; this session has {len(turns)}.")
        return turns[index]

    async def _async_run(self) -> Transcript:
        """Run the session to its end and return the transcript."""
        if self.transcript.status != "running" or len(self.transcript.turns) != self._history:
            raise ConfigError("This session has already run; start a new Session to ask again.")
        self._loop = asyncio.get_running_loop()
        await self._emit("status", self.transcript)
        # Start the kernel while the first model request is in flight.
        prepare = asyncio.ensure_future(self._prepare_executor())
        warm_up = getattr(self.model, "warm_up", None)
        if callable(warm_up):  # e.g. the HTTP client's TLS set-up, while images are encoded
            self._warming = asyncio.ensure_future(asyncio.to_thread(warm_up))
        try:
            status = await self._loop_turns(prepare)
        except PyVisionError as exc:
            # The endpoint or the executor failed: keep every turn done so far.
            status, self.error, self.transcript.error = "error", exc, _one_line(exc)
        except Exception as exc:  # a fault of ours: still keep every turn done so far
            self.log.debug("the session failed", exc_info=exc)
            error = PyVisionError(f"pyvision failed unexpectedly ({_one_line(exc, named=True)}).")
            error.__cause__ = exc
            status, self.error, self.transcript.error = "error", error, _one_line(error)
        finally:
            if self._interrupter is not None and not self._interrupter.done():
                # The tool has ended; a loop closed right after the session must not
                # find this task still sleeping between two interrupts.
                self._interrupter.cancel()
                await asyncio.gather(self._interrupter, return_exceptions=True)
            if not prepare.done():
                prepare.cancel()
            # Retrieve a failure of an unused start so asyncio does not warn about it.
            elif not prepare.cancelled() and prepare.exception() is not None:
                self.log.debug("kernel start failed: %s", prepare.exception())
        self.transcript.status = status
        await self._emit("status", self.transcript)
        return self.transcript

    run = run_sync(_async_run)

    async def _loop_turns(self, prepare: asyncio.Future[None]) -> str:
        t = self.transcript
        with _executor_faults():
            libraries = await self.executor.importable_libraries()
            network_access = getattr(self.executor, "network_access", None)
            network = await network_access() if network_access is not None else True
        python = getattr(self.executor, "python_version", None) or platform.python_version()
        last = t.max_turns - 1
        await self._images.encode(t.images)
        facts = PromptFacts(libraries=libraries, python=python, timeout=self.timeout,
                            network=network, notes=history_note(self.image_history))
        for video in t.videos:
            if not video.frames:
                video.frames = await asyncio.to_thread(
                    sample_frames, video, self.video_frames, self.max_pixels)
        messages = self.profile.opening(t.question, t.images, self._image_url, facts, last == 0)
        if t.videos:  # the sampled frames go before the last text of the question's message
            question = messages[-1]
            if isinstance(question["content"], str):
                question["content"] = [{"type": "text", "text": question["content"]}]
            question["content"][-1:-1] = video_parts(t.videos, bound=can_bind(self.executor))
        if self._history:
            await prepare
        for turn in t.turns[: self._history]:
            # A fork: rebuild the kernel's state and the conversation from the kept turns.
            messages.append({"role": "assistant", "content": parse_reply(turn.text).text})
            next_is_last = turn.index + 1 == last
            if turn.code is None:
                messages.append(self.profile.nudge(next_is_last))
                continue
            result = await self._run_tool(turn, turn.code)
            messages.append(await self._feedback(result, next_is_last))
        tool_calls_nudged = False
        for index in range(self._history, t.max_turns):
            if self._stop_requested:
                return "stopped"
            turn = Turn(index=index, text="")
            t.turns.append(turn)
            await self._emit("turn_start", turn)
            # Joined once: `turn.text += delta` copies the whole reply on every delta.
            pieces: list[str] = []

            async def on_delta(delta: str, turn: Turn = turn, pieces: list[str] = pieces) -> None:
                pieces.append(delta)
                await self._emit("text_delta", turn, delta)

            started = time.monotonic()
            # A Model written before cache_key existed still works: it just gets none.
            extra = {"cache_key": self.cache_key} if _accepts(self.model.complete,
                                                               "cache_key") else {}
            sent = await self._images.outgoing(messages)
            self._model_task = asyncio.ensure_future(
                self.model.complete(sent, stop=list(self.profile.stop), on_delta=on_delta,
                                    **extra)
            )
            try:
                reply = await self._model_task
            except asyncio.CancelledError:
                if not self._stop_requested:
                    raise
                turn.note = "Stopped while the model was answering."
                return "stopped"
            except ModelError as exc:
                turn.note = f"The model's reply broke off: {exc}"
                raise
            finally:
                self._model_task = None
                turn.model_seconds = time.monotonic() - started
                turn.text = "".join(pieces)  # what arrived, if the reply broke off
            self._images.mark_seen(sent)
            turn.text = reply.text
            turn.usage = reply.usage
            t.usage = t.usage + reply.usage
            parsed = parse_reply(reply.text)

            if parsed.answer is not None:
                turn.answer = t.answer = parsed.answer
                turn.raw_answer = parsed.raw_answer
                await self._emit("answer", t)
                return "answered"
            if parsed.code is None and reply.refusal:
                # The model declined: asking again wastes turns, and the user must see why.
                turn.note = f"The model refused: {reply.refusal}"
                raise ModelError(f"The model refused to answer: {' '.join(reply.refusal.split())}",
                                 model=t.model)
            messages.append({"role": "assistant", "content": parsed.text})
            next_is_last = index + 1 == last
            if parsed.code is None and reply.tool_calls:
                names = ", ".join(reply.tool_calls)
                if tool_calls_nudged:
                    turn.note = f"The model called functions ({names}) again instead of writing code."
                    raise ModelError(
                        f"The model kept calling functions ({names}) instead of writing Python "
                        "code, even when told not to: try another model.", model=t.model)
                tool_calls_nudged = True
                turn.note = (f"The model called functions ({names}) instead of writing code; "
                             "it was told to write its code in a ```python block.")
                messages.append(self.profile.tool_calls(reply.tool_calls, next_is_last))
                continue
            if parsed.code is None:
                messages.append(self.profile.nudge(next_is_last))
                continue

            turn.code = parsed.code
            await self._emit("code", turn)
            if index != last and not self._stop_requested:
                await prepare  # raises KernelError if the kernel could not start
            # The stop may have come while the kernel was still starting.
            if index == last or self._stop_requested:
                turn.exec_status = "skipped"
                turn.note = (
                    "Not run: the session was stopped."
                    if self._stop_requested
                    else "Not run: this was the last turn."
                )
                await self._emit("outputs", turn)
                break
            result = await self._run_tool(turn, parsed.code)
            if self._stop_requested:
                return "stopped"
            messages.append(await self._feedback(result, next_is_last))
        return "stopped" if self._stop_requested else "max_turns"

    @property
    def usage(self) -> Usage:
        return self.transcript.usage


def _with_code(turn: Turn, code: str) -> str:
    """The turn's reply text with its code replaced by ``code`` (for a fork)."""
    fence = "`" * 3
    block = f"<code>\n{fence}python\n{code}\n{fence}\n</code>"
    if turn.code and turn.code in turn.text:
        head = parse_reply(turn.text).text
        return head.replace(turn.code, code, 1)
    return block


def _accepts(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` takes the keyword ``name`` (or any keyword)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD
                                     for p in parameters.values())
