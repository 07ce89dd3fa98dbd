"""Faults of the executor, the model object and observers end a session as ``error``.

The model side is real (the loopback chat server and the openai client). Faults
such as a full disk at a kernel restart are hard to cause on demand, so most
tests inject them into a real :class:`ChildKernel` subclass; one causes a
restart failure for real.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import code_reply

from pyvision_magic import OpenAIModel, Transcript, load_image
from pyvision_magic._errors import KernelError, ModelError, PyVisionError
from pyvision_magic._executor import Executor
from pyvision_magic.kernel._child import ChildKernel
from pyvision_magic._model import Model, ModelReply
from pyvision_magic._records import ExecutionResult, ImageInput
from pyvision_magic._session import Session


class FaultyKernel(ChildKernel):
    """A real child kernel whose ``faults[method][n]`` is raised at call ``n`` (0-based)."""

    def __init__(self, faults: dict[str, dict[int, BaseException]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.faults = faults
        self.calls: dict[str, int] = {}

    def _maybe_fail(self, method: str) -> None:
        n = self.calls.get(method, 0)
        self.calls[method] = n + 1
        fault = self.faults.get(method, {}).get(n)
        if fault is not None:
            raise fault

    async def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        self._maybe_fail("execute")
        return await super().execute(code, timeout=timeout)

    async def bind_images(self, images: Sequence[ImageInput]) -> list[str]:
        self._maybe_fail("bind_images")
        return await super().bind_images(images)

    async def importable_libraries(self) -> list[str]:
        self._maybe_fail("importable_libraries")
        return await super().importable_libraries()


def run(server: Any, image_path: Any, executor: Executor, model: Model | None = None,
        observe: Any = None) -> tuple[Session, list[str]]:
    """Run a session to its end; returns it and the statuses its observers saw."""
    statuses: list[str] = []

    async def go() -> Session:
        used = model or OpenAIModel(base_url=server.base_url, model="test-model")
        session = Session("How many squares?", [load_image(image_path)], model=used,
                          executor=executor)
        session.on_status(lambda t: statuses.append(t.status))
        if observe is not None:
            observe(session)
        try:
            await asyncio.wait_for(session._async_run(), 60)
        finally:
            await executor.shutdown()
            await used.aclose()
        return session

    return asyncio.run(go()), statuses


def assert_one_line_error(session: Session, *fragments: str) -> None:
    t = session.transcript
    assert t.status == "error"
    assert t.error and "\n" not in t.error and len(t.error) <= 500
    for fragment in fragments:
        assert fragment in t.error


@pytest.mark.parametrize(
    "fault,fragments",
    [
        (OSError(errno.ENOSPC, "No space left on device"), ["OSError", "No space left on device"]),
        (RuntimeError("boom\n  with a second line"), ["RuntimeError: boom with a second line"]),
    ],
    ids=["enospc", "runtime-error"],
)
def test_an_executor_fault_during_a_tool_ends_with_error_and_keeps_the_turns(
        chat_server, image_path, no_openai_env, tmp_path, fault, fragments):
    chat_server.script = [code_reply("print('first tool')"), code_reply("print('second tool')"),
                          "<answer>never reached</answer>"]
    session, statuses = run(chat_server, image_path, FaultyKernel({"execute": {1: fault}}))
    assert_one_line_error(session, "child kernel failed", *fragments)
    assert isinstance(session.error, KernelError) and session.error.__cause__ is fault
    assert statuses == ["running", "error"]
    first, second = session.transcript.turns
    assert first.exec_status == "ok" and first.outputs[0].text == "first tool\n"
    assert second.code == "print('second tool')" and second.exec_status is None
    assert second.note.startswith("The tool could not be run:")
    # What was done is kept, and saves like any other session.
    saved = Transcript.load(session.transcript.save(tmp_path / "t.json"))
    assert saved.status == "error" and len(saved.turns) == 2 and saved.error == session.transcript.error


def test_a_fault_while_binding_the_images_ends_with_error(chat_server, image_path, no_openai_env):
    chat_server.script = [code_reply("print(1)")]
    fault = OSError(errno.ENOSPC, "No space left on device")
    session, statuses = run(chat_server, image_path, FaultyKernel({"bind_images": {0: fault}}))
    assert_one_line_error(session, "No space left on device")
    assert isinstance(session.error, KernelError) and statuses[-1] == "error"
    (turn,) = session.transcript.turns
    assert turn.code == "print(1)" and turn.exec_status is None


def test_a_fault_before_the_first_request_ends_with_error(chat_server, image_path, no_openai_env):
    chat_server.script = ["<answer>unused</answer>"]
    fault = PermissionError(errno.EACCES, "Permission denied")
    session, _ = run(chat_server, image_path, FaultyKernel({"importable_libraries": {0: fault}}))
    assert_one_line_error(session, "PermissionError", "Permission denied")
    assert session.transcript.turns == [] and chat_server.chat_requests == []


class BrokenModel(Model):
    """Answers with code once, then fails the way a bug would (not a ModelError)."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, messages: Sequence[dict[str, Any]], *, stop: Any = None,
                       on_delta: Any = None, cache_key: Any = None) -> ModelReply:
        self.calls += 1
        if self.calls == 1:
            return ModelReply(code_reply("print('ran')"))
        raise ValueError("unexpected field 'choices'")


def test_an_unexpected_fault_of_the_model_object_ends_with_error(chat_server, image_path,
                                                                 no_openai_env):
    session, statuses = run(chat_server, image_path, ChildKernel(), model=BrokenModel())
    assert_one_line_error(session, "pyvision failed unexpectedly",
                          "ValueError: unexpected field 'choices'")
    assert type(session.error) is PyVisionError
    assert not isinstance(session.error, (KernelError, ModelError))
    assert statuses == ["running", "error"]
    assert session.transcript.turns[0].outputs[0].text == "ran\n"


def test_a_failing_observer_does_not_end_the_session(chat_server, image_path, no_openai_env):
    chat_server.script = [code_reply("print(2 + 2)"), "<answer>4</answer>"]

    def observe(session: Session) -> None:
        def fail(*args: Any) -> None:
            raise RuntimeError("a broken view")
        for register in (session.on_turn_start, session.on_text_delta, session.on_code,
                         session.on_outputs, session.on_answer, session.on_status):
            register(fail)

    session, _ = run(chat_server, image_path, ChildKernel(), observe=observe)
    assert session.transcript.status == "answered" and session.transcript.answer == "4"


def test_a_rerun_with_a_failing_executor_raises_one_kernel_error(chat_server, image_path,
                                                                 no_openai_env):
    chat_server.script = [code_reply("print('x')"), "<answer>x</answer>"]
    fault = OSError(errno.ENOSPC, "No space left on device")
    kernel = FaultyKernel({"execute": {1: fault}})

    async def go() -> tuple[Session, BaseException]:
        model = OpenAIModel(base_url=chat_server.base_url, model="test-model")
        session = Session("Q?", [load_image(image_path)], model=model, executor=kernel)
        try:
            await session._async_run()
            with pytest.raises(KernelError) as caught:
                await session._async_rerun(0, "print('again')")
        finally:
            await kernel.shutdown()
            await model.aclose()
        return session, caught.value

    session, error = asyncio.run(go())
    assert "No space left on device" in str(error) and error.__cause__ is fault
    assert session.transcript.turns[0].note.startswith("The tool could not be run:")


# -- what must still escape: the caller's own interruptions --------------------------


class StuckExecutor(Executor):
    """An executor whose tool never ends, or raises what the test gives it."""

    def __init__(self, raise_in_execute: BaseException | None = None) -> None:
        self.raise_in_execute = raise_in_execute
        self.executing = asyncio.Event()

    async def start(self) -> None:
        pass

    async def bind_images(self, images: Sequence[ImageInput]) -> list[str]:
        return [f"image_clue_{i}" for i in range(len(images))]

    async def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        self.executing.set()
        if self.raise_in_execute is not None:
            raise self.raise_in_execute
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    async def interrupt(self) -> None:
        pass

    async def restart(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def test_cancelling_the_run_still_cancels_it(chat_server, image_path, no_openai_env):
    chat_server.script = [code_reply("while True: pass")]
    executor = StuckExecutor()

    async def go() -> Session:
        model = OpenAIModel(base_url=chat_server.base_url, model="test-model")
        session = Session("Q?", [load_image(image_path)], model=model, executor=executor)
        task = asyncio.ensure_future(session._async_run())
        await asyncio.wait_for(executor.executing.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await model.aclose()
        return session

    session = asyncio.run(go())
    assert session.transcript.status == "running" and session.error is None


def test_keyboard_interrupt_in_a_tool_is_not_turned_into_an_error(chat_server, image_path,
                                                                  no_openai_env):
    chat_server.script = [code_reply("print(1)")]
    executor = StuckExecutor(raise_in_execute=KeyboardInterrupt())
    session_box: list[Session] = []

    async def go() -> None:
        model = OpenAIModel(base_url=chat_server.base_url, model="test-model")
        session = Session("Q?", [load_image(image_path)], model=model, executor=executor)
        session_box.append(session)
        try:
            await session._async_run()
        finally:
            await model.aclose()

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(go())
    assert session_box[0].transcript.status == "running" and session_box[0].error is None


# -- a real restart failure ---------------------------------------------------------


def test_a_restart_that_fails_for_real_ends_the_session_cleanly(chat_server, image_path,
                                                                no_openai_env):
    # The tool puts a folder where the parent rewrites the input image at a restart,
    # then kills its kernel: the restart cannot write the image back.
    sabotage = ("import os\nos.remove('inputs/image_clue_0.png')\n"
                "os.mkdir('inputs/image_clue_0.png')\nos.kill(os.getpid(), 9)")
    chat_server.script = [code_reply(sabotage), code_reply("print('after')"), "<answer>done</answer>"]
    session, statuses = run(chat_server, image_path, ChildKernel())
    t = session.transcript
    assert statuses[-1] == t.status != "running"
    first = t.turns[0]
    assert first.code == sabotage
    if t.status == "error":  # the restart failure ends the session, as one line
        assert_one_line_error(session, "IsADirectoryError")
        assert isinstance(session.error, KernelError)
        assert first.note.startswith("The tool could not be run:")
    else:  # or the executor reports it as the tool's death and the session goes on
        assert first.exec_status == "died" and t.status == "answered"
