"""The ``pyvision`` command: ask, replay and demo from a terminal.

Progress goes to stderr; the final answer is the last line of stdout.
Exit codes: 0 answered, 1 no answer (turn limit or stopped), 2 bad usage or
input, 3 the model endpoint failed, 4 the child kernel failed, 5 pyvision
itself failed (a bug). Every failure is one line on stderr, never a traceback.

What the model and the tools wrote is shown with its control characters made
visible (see :mod:`pyvision_magic._console`, which also draws the progress).
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
from typing import Any

from ._cli_options import (
    EXIT_ANSWERED,
    EXIT_CODES_HELP,
    EXIT_INTERNAL,
    EXIT_KERNEL,
    EXIT_MODEL,
    EXIT_NO_ANSWER,
    EXIT_USAGE,
    OneLineParser,
    add_run_options,
    shipped_names,
)
# `pyvision eval` (eval/cli.py) takes these from here.
from ._cli_options import add_prompt_options, positive_int, positive_seconds  # noqa: F401
from ._console import ConsoleProgress, ImageSaver, terminal_safe
from ._errors import ConfigError, KernelError, ModelError, PyVisionError
from ._tool_faults import one_line

__all__ = ["ConsoleProgress", "build_parser", "main", "make_model", "terminal_safe"]

DEMO_SESSION = "coins_session.json"

# What JSON leaves raw that a terminal would act on (C1) or could not print.
_UNSAFE_IN_JSON = re.compile(r"[\x7f-\x9f\ud800-\udfff]")


def _error_kind(error: BaseException | None) -> tuple[str, int]:
    """How a failure is labelled on stderr, and the exit code it gives."""
    if isinstance(error, KernelError):
        return "kernel error", EXIT_KERNEL
    if isinstance(error, ModelError):
        return "model error", EXIT_MODEL
    if isinstance(error, ConfigError):
        return "error", EXIT_USAGE
    return "internal error", EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="pyvision",
        description="Ask a multimodal model about images; it writes Python tools that run "
        "in a child Jupyter kernel until it can answer.",
        epilog=EXIT_CODES_HELP,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    parser.commands = sub
    ask = sub.add_parser(
        "ask",
        help="ask a question about one or more images",
        description="Ask the model a question about one or more images. The model writes "
        "Python tools that run in a child Jupyter kernel, turn after turn, until it answers. "
        "Progress goes to stderr; the answer is the last line of stdout.",
        epilog=EXIT_CODES_HELP,
    )
    ask.add_argument(
        "-i",
        "--image",
        action="append",
        required=True,
        metavar="IMAGE",
        help="image or video file (repeat for several; bound as image_clue_0, ... and "
        "video_clue_0, ...)",
    )
    ask.add_argument("question", help="the question")
    add_run_options(ask, model=True)
    ask.set_defaults(handler=_ask)

    replay = sub.add_parser(
        "replay",
        help="re-run a saved session: recorded model turns, tools executed for real",
        description="Re-run a saved session without a model: the recorded model turns are "
        "played back and their tools run for real in a child kernel here.",
        epilog=EXIT_CODES_HELP,
    )
    replay.add_argument(
        "transcript",
        help="transcript JSON saved with --save, or a session shipped with pyvision: "
        f"{shipped_names()}",
    )
    add_run_options(replay, model=False)
    replay.set_defaults(handler=_replay)

    demo = sub.add_parser(
        "demo",
        help="count the coins in a sample photo: asks the model if a key or endpoint is "
        "set, otherwise replays a shipped session",
        description="Count the coins in a sample photo. With no API key and no endpoint set "
        "it replays a shipped session offline: the recorded model turns, with their tools "
        "run for real in a child kernel here. With $OPENAI_API_KEY, $OPENAI_BASE_URL or "
        "--base-url set it asks your model the same question, live.",
        epilog=EXIT_CODES_HELP,
    )
    add_run_options(demo, model=True)
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


def _warn(text: str) -> None:
    sys.stderr.write(f"pyvision: warning: {terminal_safe(text)}\n")
    sys.stderr.flush()


def _image_folder(args: argparse.Namespace) -> Any:
    """The --save-images folder, created and checked before the session starts."""
    return ImageSaver.prepare(args.save_images) if args.save_images else None


async def _run_session(question: str, images: list[Any], model: Any, args: argparse.Namespace,
                       max_turns: int, image_folder: Any = None,
                       videos: Sequence[Any] = ()) -> tuple[Any, Any]:
    from ._model import OpenAIModel
    from ._session import Session
    from .kernel._child import ChildKernel

    progress = None if args.quiet else ConsoleProgress(sys.stderr)
    if progress is not None:
        progress.header(question, images)
        if videos:  # the clips' facts (video_clue_N)
            from ._video_session import describe_videos

            sys.stderr.write("".join(terminal_safe(line) + "\n"
                                     for line in describe_videos(videos, args.video_frames)))
    history = getattr(args, "image_history", None)
    if getattr(args, "gateway", None):
        from .kernel._gateway import GatewayKernel

        kernel: Any = GatewayKernel(url=args.gateway)
        if not args.quiet:
            print(f"pyvision: tools run on the gateway at {terminal_safe(args.gateway)}.",
                  file=sys.stderr)
    else:
        kernel = ChildKernel(sandbox=args.sandbox)
    session = Session(question, images, model=model, executor=kernel,
                      max_turns=max_turns, timeout=args.timeout, videos=videos,
                      video_frames=args.video_frames,
                      prompt_profile=getattr(args, "prompt_profile", "default"),
                      system_prompt_file=getattr(args, "system_prompt", None),
                      **({"image_history": history} if history else {}))
    try:
        isolation = await kernel.choose_isolation()
    except Exception:  # noqa: BLE001 - the session reports it (the kernel cannot start)
        isolation = None
    if isolation is not None and not isolation.sandboxed:
        print(f"pyvision: tools run {terminal_safe(isolation.describe())}.", file=sys.stderr)
    if progress is not None:
        progress.attach(session)
        if isinstance(model, OpenAIModel):
            model.on_retry = progress.retry
    if image_folder is not None:  # after the progress, so paths follow their turn's outputs
        report = progress.image_saved if progress is not None else None
        ImageSaver(image_folder, report=report, warn=_warn).attach(session)
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
            except Exception as exc:  # noqa: BLE001 - any failure to close is only a warning
                _warn(f"the {what} did not close cleanly "
                      f"({one_line(exc, named=True)})")
    return session, transcript


def _finish(session: Any, transcript: Any, args: argparse.Namespace) -> int:
    kind, code = _error_kind(session.error)
    if transcript.error:  # shown even with -q: the user must learn why there is no answer
        sys.stderr.write(f"pyvision: {kind}: {terminal_safe(transcript.error)}\n")
    if args.save:
        transcript.save(args.save)
        if not args.quiet:
            sys.stderr.write(f"transcript saved to {terminal_safe(args.save)}\n")
    if args.json:
        # JSON escapes C0 controls itself; C1 controls and lone surrogates too, here.
        json_text = _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", transcript.to_json())
        sys.stdout.write(json_text + "\n")
    elif transcript.answer is not None:
        sys.stdout.write(terminal_safe(transcript.answer.strip()) + "\n")
    sys.stdout.flush()
    if transcript.status == "answered":
        return EXIT_ANSWERED
    if transcript.status == "error":
        return code
    return EXIT_NO_ANSWER


async def _ask(args: argparse.Namespace) -> int:
    from ._profiles import make_profile
    from ._video import load_media, split_media

    if not args.question.strip():
        raise ConfigError("The question is empty: write what you want to know about the image.")
    make_profile(args.prompt_profile, args.system_prompt)  # a bad template: before any work
    # FFmpeg inside OpenCV would print its own lines for a bad clip; ours says what to do.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    images, videos = split_media([load_media(path) for path in args.image])
    folder = _image_folder(args)
    try:
        model = make_model(args)
    except ConfigError as exc:  # no key: point at the one command that needs none
        raise ConfigError(f"{exc} Or run 'pyvision demo' to watch a recorded session "
                          "offline.") from None
    session, transcript = await _run_session(args.question, images, model, args, args.max_turns,
                                             folder, videos)
    return _finish(session, transcript, args)


async def _replay(args: argparse.Namespace, saved: Any = None) -> int:
    from ._replay import ReplayModel, recorded_model
    from ._transcript import Transcript

    if saved is None:
        saved = Transcript.load(args.transcript)
        if not saved.turns:
            raise ConfigError(f"{args.transcript} has no model turns to replay.")
    folder = _image_folder(args)
    model = ReplayModel(saved)
    if not args.quiet:
        label = terminal_safe(recorded_model(saved) or "a model")
        sys.stderr.write(f"Replaying a saved session of {label}; the tools run for real here.\n")
    session, transcript = await _run_session(
        saved.question, saved.images, model, args, max(saved.max_turns, len(saved.turns)), folder,
        saved.videos,
    )
    return _finish(session, transcript, args)


def _live_reasons(args: argparse.Namespace) -> list[str]:
    """What makes the demo ask a live model instead of replaying, as the user undoes it."""
    reasons = ["leave out --base-url"] if args.base_url else []
    variables = [name for name in ("OPENAI_BASE_URL", args.api_key_env) if os.environ.get(name)]
    if variables:
        reasons.append("unset " + " and ".join(variables))
    return reasons


def _next_steps(args: argparse.Namespace, live: bool) -> str:
    steps = (['pyvision ask -i YOUR_IMAGE "your question" asks about your own image'] if live
             else [f"set {args.api_key_env} (or pass --base-url URL) to ask your own model"])
    if not args.save_images:
        steps.append("add --save-images DIR to look at the images the tools made")
    if not args.save:
        steps.append("add --save run.json to keep a session")
    steps.append("in Jupyter, %load_ext pyvision_magic then a %%pyvision -i IMAGE cell with "
                 "your question (walk-through: notebooks/quickstart.ipynb in the source)")
    return "Next: " + "; ".join(steps) + ".\n"


async def _demo(args: argparse.Namespace) -> int:
    from ._transcript import Transcript

    with resources.as_file(resources.files("pyvision_magic") / "data" / DEMO_SESSION) as path:
        saved = Transcript.load(path)
    reasons = _live_reasons(args)
    if not reasons:
        code = await _replay(args, saved)
    else:
        model = make_model(args)
        if not args.quiet:
            sys.stderr.write(
                f"Asking {terminal_safe(model.model)} at {terminal_safe(model.endpoint)}: the "
                f"shipped demo question, live ({' and '.join(reasons)} for the offline replay).\n"
            )
        folder = _image_folder(args)
        session, transcript = await _run_session(saved.question, saved.images, model, args,
                                                 args.max_turns, folder)
        code = _finish(session, transcript, args)
    if not args.quiet and code in (EXIT_ANSWERED, EXIT_NO_ANSWER):
        sys.stderr.write(_next_steps(args, live=bool(reasons)))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyvision`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "gateway", None) and getattr(args, "sandbox", "auto") != "auto":
            parser.error("--sandbox and --no-sandbox apply to local kernels; drop them with "
                         "--gateway (the gateway decides how tools are confined)")
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
        sys.stderr.write(f"pyvision: internal error: {terminal_safe(one_line(exc, named=True))} "
                         "(a bug in pyvision; please report it)\n")
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
