"""Run a task file through a model, with tools and without, concurrently and resumably.

Modes
-----
``tools``
    A :class:`~pyvision_magic.Session`: the model writes tools that run in a
    child kernel until it answers.
``baseline``
    The same model without tools: one request with the question and images,
    asking for the final answer in ``<answer>``; no kernel.

One kernel per concurrent session is started at the beginning (a few at a time,
so the first are ready soon) and reset between tasks (see ``_kernels``). While
a worker's kernel is still starting, it runs baseline tasks if there are any.
Results go to a :class:`~._results.ResultsStore` as each task finishes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from jupyter_core.utils import run_sync
from traitlets import Bool, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from .._console import plural
from .._errors import ConfigError, ModelAuthError, ModelError, ModelNotFoundError
from .._model import DeltaCallback, Model, ModelReply
from .._records import Usage
from ._results import ResultsStore
from .scoring import score_answer
from .tasks import Task, prompt_text
from .taxonomy import classify_tool

__all__ = ["EvalRunner", "RunSummary", "MODES", "BASELINE_PROMPT"]

MODES = ("tools", "baseline")

BASELINE_PROMPT = (
    "You answer questions about images. Look at the image(s) carefully and think step by "
    "step if it helps. Then give the final answer inside <answer>...</answer>, short and "
    "exact (a letter for multiple choice, a number for counting)."
)


def _tokens_of(records: Any) -> int:
    return sum(int((r.get("tokens") or {}).get("total_tokens", 0)) for r in records)


class BudgetSpent(Exception):
    """Internal: the token budget ran out before a request was sent."""


@dataclass
class RunSummary:
    """What a run did.

    ``records`` holds every finished (task id, mode) in the results folder,
    including those of earlier, interrupted runs; ``ran`` counts this run's.
    ``stopped`` is None when every task finished, else ``"budget"``,
    ``"interrupted"`` or ``"model"`` (the endpoint refused every request),
    with ``message`` saying what to do.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    remaining: int = 0
    tokens: int = 0
    seconds: float = 0.0
    stopped: str | None = None
    message: str = ""


class _MeteredModel(Model):
    """Counts the tokens of every reply and refuses requests once the budget is spent."""

    def __init__(self, inner: Model, runner: "EvalRunner") -> None:
        self.inner = inner
        self.runner = runner

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    async def complete(self, messages: Sequence[dict[str, Any]], *, stop: Sequence[str] | None = None,
                       on_delta: DeltaCallback | None = None, cache_key: str | None = None) -> ModelReply:
        if self.runner._stop_reason is not None:
            raise BudgetSpent()
        reply = await self.inner.complete(messages, stop=stop, on_delta=on_delta, cache_key=cache_key)
        self.runner._count(reply.usage)
        return reply


class EvalRunner(LoggingConfigurable):
    """Runs tasks in one or both modes and appends a record per finished task.

    Parameters
    ----------
    tasks : sequence of Task
        What to ask.
    model : Model
        Who answers; shared by all sessions. Its connections are released at the
        end of each run, on the loop that opened them (it reconnects if used
        again): left to the garbage collector, they would be closed behind the
        loop's back, and a later connection that gets the same descriptor
        number could wait forever (CPython issue 88968).
    out_dir : path
        The results folder; finished (task id, mode) pairs found there are skipped.
    modes : sequence of str
        ``"tools"``, ``"baseline"`` or both.
    progress : object, optional
        Told ``start(total, skipped)`` once the unfinished tasks are known,
        ``update(record)`` as each record is written and ``close()`` at the end
        (see ``cli.Progress``).
    """

    concurrency = Int(4, help="Tasks run at once; one child kernel is kept per slot.").tag(config=True)
    task_timeout = Float(
        600.0, help="Seconds one task may take in all; past it the task is recorded as 'timeout'."
    ).tag(config=True)
    tool_timeout = Float(60.0, help="Seconds one tool may run.").tag(config=True)
    max_turns = Int(10, help="Most model replies per task with tools.").tag(config=True)
    token_budget = Int(
        None, allow_none=True,
        help="Total tokens (prompt + completion) the results folder may use, counting earlier "
        "runs; when reached the run stops cleanly. None means no limit.",
    ).tag(config=True)
    kernel_starts = Int(
        None, allow_none=True,
        help="Kernels started at the same time at the beginning. None: all of them when "
        "kernels are forked from a template (about 0.1 s of CPU each), else the CPU count "
        "(about 0.7 s each).",
    ).tag(config=True)
    retry_errors = Bool(False, help="Run again the tasks recorded with status 'error'.").tag(config=True)
    prompt_profile = Unicode("default", help="Session.prompt_profile of every task with tools.").tag(
        config=True)
    system_prompt_file = Unicode(
        None, allow_none=True, help="Session.system_prompt_file of every task with tools."
    ).tag(config=True)
    gateway_url = Unicode(
        None, allow_none=True,
        help="Run the tools on kernels of this Jupyter Kernel Gateway (one per slot, configured "
        "like any GatewayKernel). None: local child kernels.",
    ).tag(config=True)
    stop_grace = Float(3.0, help="Seconds a stopped session gets to wind down before it is cancelled.")

    def __init__(self, tasks: Sequence[Task], model: Model, out_dir: str | os.PathLike[str], *,
                 modes: Sequence[str] = ("tools",), progress: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, not {self.concurrency}.")
        from .._profiles import make_profile

        make_profile(self.prompt_profile, self.system_prompt_file)  # a bad template fails here
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ConfigError(f"Unknown mode {bad[0] if bad else None!r}; use 'tools' and/or 'baseline'.")
        self.tasks = list(tasks)
        self.model = _MeteredModel(model, self)
        self.modes = list(dict.fromkeys(modes))
        self.store = ResultsStore(out_dir)
        self.progress = progress
        self._tokens = 0
        self._stop_reason: str | None = None
        self._fatal: ModelError | None = None
        self._active: dict[int, Any] = {}  # worker -> Session or baseline task in flight
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- control ---------------------------------------------------------------

    def stop(self, reason: str = "interrupted") -> None:
        """Stop starting tasks and stop those in flight (they are not recorded); thread-safe."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stop_reason = self._stop_reason or reason
            return
        loop.call_soon_threadsafe(self._stop_now, reason)

    def _stop_now(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        for active in list(self._active.values()):
            if isinstance(active, asyncio.Future):
                active.cancel()
            else:
                active.stop()

    def _count(self, usage: Usage) -> None:
        self._tokens += usage.total_tokens
        if self.token_budget is not None and self._tokens >= self.token_budget:
            self._stop_now("budget")

    # -- the run -----------------------------------------------------------------

    async def _async_run(self) -> RunSummary:
        """Run every unfinished (task, mode) and return the summary."""
        started = time.monotonic()
        self._loop = asyncio.get_running_loop()
        # Results of two prompt profiles in one folder would be averaged as one run.
        self.store.check_settings({"model": self.model.name, "modes": self.modes,
                                   "max_turns": self.max_turns, "tool_timeout": self.tool_timeout,
                                   "task_timeout": self.task_timeout,
                                   "prompt_profile": self.prompt_profile},
                                  keys=("model", "prompt_profile"))
        done = self.store.load()
        # Tokens spent on tasks stopped in flight are not in any record: run.json keeps them.
        recorded = _tokens_of(done.values())
        self._tokens = recorded + int(self.store.read_settings().get("unrecorded_tokens", 0))
        if self.retry_errors:
            done = {k: r for k, r in done.items() if r.get("status") != "error"}
        queues = {mode: deque(t for t in self.tasks if (t.id, mode) not in done) for mode in self.modes}
        todo = sum(len(q) for q in queues.values())
        summary = RunSummary(skipped=len(self.tasks) * len(self.modes) - todo)
        if self.token_budget is not None and self._tokens >= self.token_budget and todo:
            self._stop_reason = "budget"
        kernels: list[Any] = []
        if self.progress is not None:
            self.progress.start(todo, summary.skipped)
        try:
            if self._stop_reason is None and todo:
                kernels = self._make_kernels(min(self.concurrency, len(queues.get("tools", ()))))
                workers = max(len(kernels), min(self.concurrency, todo))
                await asyncio.gather(*(
                    self._worker(i, kernels[i] if i < len(kernels) else None, queues, summary)
                    for i in range(workers)
                ))
        finally:
            for kernel in kernels:
                kernel.warmup.cancel()
            await asyncio.gather(*(k.warmup for k in kernels), return_exceptions=True)
            await asyncio.gather(*(k.close() for k in kernels), return_exceptions=True)
            try:
                await self.model.inner.aclose()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the run's outcome
                self.log.debug("closing the model's connections: %s", exc)
            self.store.close()
            unrecorded = self._tokens - _tokens_of(self.store.load().values())
            self.store.write_settings({**self.store.read_settings(), "unrecorded_tokens": max(unrecorded, 0)})
            if self.progress is not None:
                self.progress.close()
        if self._fatal is not None:
            raise self._fatal
        summary.records = [r for r in self.store.load().values()
                           if r.get("mode") in self.modes and r.get("id") in {t.id for t in self.tasks}]
        summary.remaining = sum(len(q) for q in queues.values())
        summary.tokens = self._tokens
        summary.seconds = time.monotonic() - started
        summary.stopped = self._stop_reason if summary.remaining else None
        if summary.stopped == "budget":
            summary.message = (f"Token budget of {self.token_budget} reached ({self._tokens} used); "
                               f"{plural(summary.remaining, 'task')} not run: rerun with a larger --token-budget "
                               "to finish them.")
        elif summary.stopped:
            summary.message = f"Stopped; {plural(summary.remaining, 'task')} not run: rerun the same command to finish."
        return summary

    run = run_sync(_async_run)

    def _make_kernels(self, n: int) -> list[Any]:
        from ..kernel._child import ChildKernel
        from ._kernels import ReusedKernel, SharedLibraries

        libraries = SharedLibraries()
        if self.gateway_url:
            from ..kernel._gateway import GatewayKernel

            kernels = [ReusedKernel(GatewayKernel(parent=self, url=self.gateway_url,
                                                  timeout=self.tool_timeout), libraries)
                       for _ in range(n)]
        else:
            kernels = [ReusedKernel(ChildKernel(parent=self, timeout=self.tool_timeout), libraries)
                       for _ in range(n)]
        # A few at a time: on a small machine, sixteen simultaneous starts would
        # all finish late; staggered, the first kernels are ready in seconds.
        default = n if kernels and kernels[0].kernel.forked else os.cpu_count() or 2
        gate = asyncio.Semaphore(self.kernel_starts or default)

        async def start(kernel: Any) -> None:
            async with gate:
                try:
                    await kernel.start()
                except Exception as exc:  # the session that uses it reports the failure
                    self.log.debug("kernel start failed: %s", exc)

        for kernel in kernels:
            kernel.warmup = asyncio.ensure_future(start(kernel))
        return kernels

    async def _worker(self, index: int, kernel: Any, queues: dict[str, deque[Task]],
                      summary: RunSummary) -> None:
        tools, baseline = queues.get("tools", deque()), queues.get("baseline", deque())
        while self._stop_reason is None:
            kernel_ready = kernel is not None and kernel.is_ready
            if baseline and (not tools or kernel is None or not kernel_ready):
                mode, task = "baseline", baseline.popleft()
            elif tools and kernel is not None:
                mode, task = "tools", tools.popleft()
            else:
                break
            try:
                record = await (self._run_tools(index, task, kernel) if mode == "tools"
                                else self._run_baseline(index, task))
            except (BudgetSpent, asyncio.CancelledError):
                record = None
                if self._stop_reason is None:
                    raise
            if record is None:  # stopped in flight: not recorded, so a resume runs it
                queues[mode].appendleft(task)
                break
            self.store.append(record)
            summary.ran += 1
            if self.progress is not None:
                self.progress.update(record)
            if mode == "tools" and self._stop_reason is None and tools:
                await kernel.prepare_next()

    def _fatal_error(self, error: Any) -> bool:
        """An endpoint that refuses the key or the model would fail every task: stop the run."""
        if isinstance(error, (ModelAuthError, ModelNotFoundError)):
            if self._fatal is None:
                self._fatal = error
            self._stop_now("model")
            return True
        return False

    async def _run_tools(self, index: int, task: Task, kernel: Any) -> dict[str, Any] | None:
        from .._session import Session
        from .._video import load_media, split_media

        started = time.monotonic()
        try:
            images, videos = split_media([load_media(p) for p in task.images])
            session = Session(prompt_text(task), images, model=self.model, executor=kernel,
                              parent=self, max_turns=self.max_turns, timeout=self.tool_timeout,
                              videos=videos, prompt_profile=self.prompt_profile,
                              system_prompt_file=self.system_prompt_file)
        except ConfigError as exc:
            return self._record(task, "tools", started, status="error", error=str(exc))
        self._active[index] = session
        status = None
        try:
            run = asyncio.ensure_future(session._async_run())
            finished, _ = await asyncio.wait({run}, timeout=self.task_timeout)
            if not finished:
                status = "timeout"
                kernel.needs_restart = True
                session.stop()
                finished, _ = await asyncio.wait({run}, timeout=self.stop_grace)
                if not finished:
                    run.cancel()
                    await asyncio.gather(run, return_exceptions=True)
            else:
                run.result()
        finally:
            self._active.pop(index, None)
        if self._stop_reason is not None and status is None and session.status == "stopped":
            kernel.needs_restart = True
            return None
        if isinstance(session.error, (ModelError,)) and self._fatal_error(session.error):
            return None
        if session.error is not None and not isinstance(session.error, ModelError):
            kernel.needs_restart = True  # the kernel failed: start afresh for the next task
        transcript = session.transcript
        path = self.store.transcript_path("tools", task.id)
        transcript.save(path)
        tools = [classify_tool(t.code) for t in transcript.turns if t.code]
        return self._record(
            task, "tools", started, status=status or transcript.status, answer=transcript.answer,
            turns=len(transcript.turns), usage=transcript.usage, error=transcript.error,
            transcript=path, tools=[{"primary": c.primary, "categories": sorted(c.categories)} for c in tools],
        )

    async def _run_baseline(self, index: int, task: Task) -> dict[str, Any] | None:
        from .._images import DEFAULT_MAX_PIXELS, encode_for_model, to_data_url
        from .._parsing import parse_reply
        from .._video import load_media, sample_frames, split_media
        from .._video_session import video_parts
        from .._prompt import question_message
        from .._transcript import Transcript, Turn

        started = time.monotonic()
        try:
            images, videos = split_media([load_media(p) for p in task.images])
            for video in videos:  # without tools, the sampled frames are all it sees
                video.frames = await asyncio.to_thread(sample_frames, video, 8, DEFAULT_MAX_PIXELS)
        except ConfigError as exc:
            return self._record(task, "baseline", started, status="error", error=str(exc))

        def url(im: Any) -> str:
            return to_data_url(*encode_for_model(im))

        message = question_message(prompt_text(task), images, url)
        message["content"][-1:-1] = video_parts(videos, bound=False)
        messages = [{"role": "system", "content": BASELINE_PROMPT}, message]
        transcript = Transcript(question=prompt_text(task), model=self.model.name, images=images,
                                max_turns=1, timeout=self.task_timeout, videos=videos)
        request = asyncio.ensure_future(asyncio.wait_for(self.model.complete(messages), self.task_timeout))
        self._active[index] = request
        try:
            reply = await request
        except asyncio.TimeoutError:
            transcript.status, transcript.error = "timeout", f"No reply within {self.task_timeout:g} s."
        except ModelError as exc:
            if self._fatal_error(exc):
                return None
            transcript.status, transcript.error = "error", str(exc)
        else:
            answer = parse_reply(reply.text).answer or reply.text.strip() or None
            transcript.turns.append(Turn(index=0, text=reply.text, answer=answer, usage=reply.usage,
                                         model_seconds=time.monotonic() - started))
            transcript.answer, transcript.usage = answer, reply.usage
            transcript.status = "answered" if answer else "max_turns"
        finally:
            self._active.pop(index, None)
        path = self.store.transcript_path("baseline", task.id)
        transcript.save(path)
        return self._record(task, "baseline", started, status=transcript.status, answer=transcript.answer,
                            turns=len(transcript.turns), usage=transcript.usage, error=transcript.error,
                            transcript=path)

    def _record(self, task: Task, mode: str, started: float, *, status: str, answer: str | None = None,
                turns: int = 0, usage: Usage | None = None, error: str | None = None,
                transcript: Any = None, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        score = score_answer(answer, task) if status not in ("timeout", "error") else None
        usage = usage or Usage()
        return {
            "id": task.id,
            "mode": mode,
            "benchmark": task.benchmark,
            "subtask": task.subtask,
            "answer_type": task.answer_type,
            "status": status,
            "prediction": answer,
            "extracted": score.extracted if score else None,
            "answer": task.answer,
            "correct": bool(score and score.correct),
            "turns": turns,
            "tokens": usage.to_dict(),
            "seconds": round(time.monotonic() - started, 3),
            "error": error,
            "tools": tools or [],
            "transcript": os.path.relpath(transcript, self.store.folder) if transcript else None,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
