"""The ``pyvision`` command's options: the parser class, argument types and shared options.

Kept apart from :mod:`pyvision_magic.cli` (what the commands do) so that
``pyvision eval`` can share the option definitions.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["EXIT_ANSWERED", "EXIT_CODES_HELP", "EXIT_INTERNAL", "EXIT_KERNEL", "EXIT_MODEL",
           "EXIT_NO_ANSWER", "EXIT_USAGE", "OneLineParser", "add_prompt_options",
           "add_run_options", "positive_int", "positive_seconds", "shipped_names"]

EXIT_ANSWERED, EXIT_NO_ANSWER, EXIT_USAGE, EXIT_MODEL, EXIT_KERNEL = 0, 1, 2, 3, 4
EXIT_INTERNAL = 5


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, not the whole usage text.

    An unknown option is reported by the command it was given to, so the line
    points at that command's help (``pyvision ask --help``).
    """

    commands: Any = None  # the subparsers action, once added

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            parser = self.commands.choices.get(command, self) if self.commands else self
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


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


def add_prompt_options(p: argparse.ArgumentParser) -> None:
    """``--prompt-profile`` and ``--system-prompt``, shared by ``ask`` and ``eval``."""
    from ._profiles import PROFILES

    p.add_argument("--prompt-profile", default="default", choices=list(PROFILES),
                   help="conversation layout: 'default' (GPT-4.1/4o, Claude, Gemini) or "
                   "'pyvision-format' (Qwen2.5-VL and PyVision-RL checkpoints; see the README)")
    p.add_argument("--system-prompt", metavar="FILE",
                   help="a template file that replaces the profile's instructions, with "
                   "{{placeholders}} (see the README, 'Prompt profiles')")


def add_run_options(p: argparse.ArgumentParser, *, model: bool) -> None:
    """The options of ``ask``, ``replay`` and ``demo``; ``model`` adds those that pick
    and steer the model (a replay has its recorded one)."""
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
            "--image-history",
            choices=["full", "low", "placeholder"],
            default=None,
            help="how a tool's image goes in later requests once the model has seen it: "
            "full, low (a 512x512 copy; the default) or placeholder (a note)",
        )
        add_prompt_options(p)
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
    p.add_argument(
        "--video-frames",
        type=positive_int,
        default=8,
        metavar="N",
        help="frames of each video shown to the model, spread evenly (default: 8)",
    )
    p.add_argument(
        "--gateway", metavar="URL",
        help="run the tools on the Jupyter Kernel Gateway at URL (token from "
        "$PYVISION_GATEWAY_TOKEN; see docs/remote_kernels.md)",
    )
    p.add_argument("--save", metavar="PATH", help="write the transcript JSON to PATH")
    p.add_argument(
        "--save-images",
        metavar="DIR",
        help="write every image the tools show to DIR (created if needed) as "
        "turnN_image_clue_K.png (.jpg for photos), and print each path",
    )
    p.add_argument(
        "--json", action="store_true", help="print the transcript JSON instead of the answer"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


EXIT_CODES_HELP = ("Exit codes: 0 answered, 1 no answer (turn limit or stopped), 2 bad usage or "
               "input, 3 model endpoint failed, 4 child kernel failed, 5 pyvision itself failed.")


def shipped_names() -> str:
    """The sessions shipped with pyvision, for the help of ``replay``."""
    try:
        from ._transcript import shipped_sessions

        return ", ".join(shipped_sessions())
    except Exception:  # noqa: BLE001 - only help text: never let it break the command
        return "demo, gallery:NAME"
