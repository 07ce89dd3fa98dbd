"""The ``pyvision`` command: ask, replay and demo from a terminal.

Progress goes to stderr; the final answer is the last line of stdout.
Exit codes: 0 answered, 1 no answer (turn limit or stopped), 2 bad usage or
input, 3 the model endpoint failed, 4 the child kernel failed, 5 pyvision
itself failed (a bug). Every failure is one line on stderr, never a traceback.

What the model and the tools wrote is shown with its control characters made
visible (``^[`` for ESC): a reply or a tool's output must not be able to set
the clipboard (OSC 52), the window title or move the cursor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from collections.abc import Sequence
from importlib import resources
from typing import Any, NoReturn, TextIO

from ._errors import ConfigError, KernelError, ModelError, PyVisionError

EXIT_ANSWERED, EXIT_NO_ANSWER, EXIT_USAGE, EXIT_MODEL, EXIT_KERNEL = 0, 1, 2, 3, 4
EXIT_INTERNAL = 5

DEMO_SESSION = "coins_session.json"

# C0 and C1 controls but newline and tab, DEL, and lone surrogates (unprintable).
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# What JSON leaves raw that a terminal would act on (C1) or could not print.
_UNSAFE_IN_JSON = re.compile(r"[\x7f-\x9f\ud800-\udfff]")


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


def _error_kind(error: BaseException | None) -> tuple[str, int]:
    """How a failure is labelled on stderr, and the exit code it gives."""
    if isinstance(error, KernelError):
        return "kernel error", EXIT_KERNEL
    if isinstance(error, ModelError):
        return "model error", EXIT_MODEL
    if isinstance(error, ConfigError):
        return "error", EXIT_USAGE
    return "internal error", EXIT_INTERNAL


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, not the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _add_run_options(p: argparse.ArgumentParser, *, model: bool) -> None:
    if model:
        p.add_argument("--model", help="model name (default: gpt-4.1 or $PYVISION_MODEL)")
        p.add_argument(
            "--base-url",
            help="OpenAI-compatible endpoint ending in /v1 (default: $OPENAI_BASE_URL, else OpenAI)",
        )
        p.add_argument(
            "--api-key-env",
            default="OPENAI_API_KEY",
            metavar="VAR",
            help="environment variable holding the API key (default: OPENAI_API_KEY)",
        )
        p.add_argument(
            "--max-turns", type=positive_int, default=10, help="most model replies (default: 10)"
        )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=60.0,
        help="seconds one tool may run (default: 60)",
    )
    isolation = p.add_mutually_exclusive_group()
    isolation.add_argument(
        "--sandbox",
        dest="sandbox",
        action="store_const",
        const=True,
        default="auto",
        help="refuse to run the tools outside the bubblewrap sandbox (default: sandboxed "
        "where bubblewrap works, else unsandboxed with a notice; see the README)",
    )
    isolation.add_argument(
        "--no-sandbox",
        dest="sandbox",
        action="store_const",
        const=False,
        help="run the tools without the sandbox: they can use the network and write your files",
    )
    p.add_argument("--save", metavar="PATH", help="write the transcript JSON to PATH")
    p.add_argument(
        "--json", action="store_true", help="print the transcript JSON instead of the answer"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pyvision",
        description="Ask a multimodal model about images; it writes Python tools that run "
        "in a child Jupyter kernel until it can answer.",
        epilog="Exit codes: 0 answered, 1 no answer (turn limit or stopped), 2 bad usage or "
        "input, 3 model endpoint failed, 4 child kernel failed, 5 pyvision itself failed.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    ask = sub.add_parser("ask", help="ask a question about one or more images")
    ask.add_argument(
        "-i",
        "--image",
        action="append",
        required=True,
        metavar="IMAGE",
        help="image file (repeat for several; bound as image_clue_0, image_clue_1, ...)",
    )
    ask.add_argument("question", help="the question")
    _add_run_options(ask, model=True)
    ask.set_defaults(handler=_ask)

    replay = sub.add_parser(
        "replay", help="re-run a saved session: recorded model turns, tools executed for real"
    )
    replay.add_argument("transcript", help="transcript JSON saved with --save")
    _add_run_options(replay, model=False)
    replay.set_defaults(handler=_replay)

    demo = sub.add_parser(
        "demo",
        help="count the coins in a sample photo: asks the model if a key or endpoint is "
        "set, otherwise replays a shipped session",
    )
    _add_run_options(demo, model=True)
    demo.set_defaults(handler=_demo)
    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: Any) -> None:
    """Commands defined next to their feature (evaluation: ``tasks``, ``eval``)."""
    try:
        from .eval.cli import add_eval_commands
    except ImportError:  # the evaluation package is not there yet
        return
    add_eval_commands(sub)


class ConsoleProgress:
    """Writes each turn's progress to a stream (stderr), as the session emits it.

    What the model and the tools wrote passes through :func:`terminal_safe`.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def attach(self, session: Any) -> None:
        session.on_turn_start(self.turn_start)
        session.on_text_delta(self.text_delta)
        session.on_outputs(self.outputs)
        session.on_status(self.status)

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
            summary += f"; images: {terminal_safe(', '.join(images))}"
        self._write(summary + "]\n")
        for out in turn.outputs:
            if out.kind in ("text", "error"):
                lines = terminal_safe(out.text.rstrip("\n")).splitlines()
                shown = lines[:20] + ([f"... ({len(lines) - 20} more lines)"] if len(lines) > 20 else [])
                self._write("".join(f"  │ {line}\n" for line in shown))
        if turn.note:
            self._write(f"  note: {terminal_safe(turn.note)}\n")

    def status(self, transcript: Any) -> None:
        if transcript.status == "running":
            return
        u = transcript.usage
        self._write(
            f"\n── {transcript.status} after {len(transcript.turns)} turns, "
            f"{u.total_tokens} tokens ──\n"
        )


def make_model(args: argparse.Namespace) -> Any:
    """The OpenAIModel the options ask for; ConfigError now if it cannot work."""
    from ._model import OpenAIModel

    kwargs: dict[str, Any] = {"api_key_env": args.api_key_env}
    model = args.model or os.environ.get("PYVISION_MODEL")
    if model:
        kwargs["model"] = model
    if args.base_url:
        kwargs["base_url"] = args.base_url
    m = OpenAIModel(**kwargs)
    m.check()
    return m


async def _run_session(question: str, images: list[Any], model: Any, args: argparse.Namespace,
                       max_turns: int) -> tuple[Any, Any]:
    from .kernel._child import ChildKernel
    from ._session import Session

    kernel = ChildKernel(sandbox=args.sandbox)
    session = Session(question, images, model=model, executor=kernel,
                      max_turns=max_turns, timeout=args.timeout)
    try:
        isolation = await kernel.choose_isolation()
    except Exception:  # noqa: BLE001 - the session reports it (the kernel cannot start)
        isolation = None
    if isolation is not None and not isolation.sandboxed:
        print(f"pyvision: tools run {terminal_safe(isolation.describe())}.", file=sys.stderr)
    if not args.quiet:
        ConsoleProgress(sys.stderr).attach(session)
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            sys.stderr.write("\nstopping (Ctrl-C again to quit now)\n")
            session.stop()
        else:
            raise KeyboardInterrupt

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
        pass
    try:
        transcript = await session._async_run()
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError):
            pass
        # A failed clean-up must not hide how the session ended.
        for what, close in (("child kernel", session.executor.shutdown), ("model client", model.aclose)):
            try:
                await close()
            except Exception as exc:
                sys.stderr.write(f"pyvision: warning: the {what} did not close cleanly "
                                 f"({terminal_safe(_one_line(exc))})\n")
    return session, transcript


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _finish(session: Any, transcript: Any, args: argparse.Namespace) -> int:
    kind, code = _error_kind(session.error)
    if transcript.error:  # shown even with -q: the user must learn why there is no answer
        sys.stderr.write(f"pyvision: {kind}: {terminal_safe(transcript.error)}\n")
    if args.save:
        transcript.save(args.save)
        if not args.quiet:
            sys.stderr.write(f"transcript saved to {args.save}\n")
    if args.json:
        # JSON escapes C0 controls itself; C1 controls and lone surrogates too, here.
        json_text = _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", transcript.to_json())
        sys.stdout.write(json_text + "\n")
    elif transcript.answer is not None:
        sys.stdout.write(terminal_safe(transcript.answer.strip()) + "\n")
    if transcript.status == "answered":
        return EXIT_ANSWERED
    if transcript.status == "error":
        return code
    return EXIT_NO_ANSWER


async def _ask(args: argparse.Namespace) -> int:
    from ._images import load_image

    if not args.question.strip():
        raise ConfigError("The question is empty: write what you want to know about the image.")
    images = [load_image(path) for path in args.image]
    model = make_model(args)
    session, transcript = await _run_session(args.question, images, model, args, args.max_turns)
    return _finish(session, transcript, args)


async def _replay(args: argparse.Namespace, transcript_path: Any = None) -> int:
    from ._replay import ReplayModel
    from ._transcript import Transcript

    saved = Transcript.load(transcript_path or args.transcript)
    if not saved.turns:
        raise ConfigError(f"{args.transcript} has no model turns to replay.")
    model = ReplayModel(saved)
    if not args.quiet:
        sys.stderr.write(f"Replaying a saved session of {terminal_safe(saved.model or 'a model')}; "
                         "the tools run for real here.\n")
    session, transcript = await _run_session(
        saved.question, saved.images, model, args, max(saved.max_turns, len(saved.turns))
    )
    return _finish(session, transcript, args)


async def _demo(args: argparse.Namespace) -> int:
    from ._transcript import Transcript

    ref = resources.files("pyvision_magic") / "data" / DEMO_SESSION
    with resources.as_file(ref) as path:
        live = args.base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get(args.api_key_env)
        if not live:
            args.transcript = str(path)
            return await _replay(args, path)
        saved = Transcript.load(path)
    model = make_model(args)
    session, transcript = await _run_session(saved.question, saved.images, model, args, args.max_turns)
    return _finish(session, transcript, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyvision`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(args.handler(args))
    except PyVisionError as exc:
        kind, code = _error_kind(exc)
        if code == EXIT_INTERNAL:  # the root class itself: a user-facing failure
            kind, code = "error", EXIT_USAGE
        sys.stderr.write(f"pyvision: {kind}: {terminal_safe(' '.join(str(exc).split()))}\n")
        return code
    except KeyboardInterrupt:
        sys.stderr.write("pyvision: interrupted\n")
        return 130
    except Exception as exc:  # a bug: one line, not a traceback, and its own exit code
        sys.stderr.write(f"pyvision: internal error: {terminal_safe(_one_line(exc))} "
                         "(a bug in pyvision; please report it)\n")
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
