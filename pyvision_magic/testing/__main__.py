"""``python -m pyvision_magic.testing``: serve recorded sessions as a chat endpoint.

For a class without network or API keys: every student's conversation gets the
recorded model replies in order (see ``docs/offline_class.md``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .._errors import PyVisionError
from ._replay import Replay
from ._server import ChatServer

PROG = "python -m pyvision_magic.testing"


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535)")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Serve recorded pyvision sessions as an OpenAI-compatible chat endpoint, so a class "
            "can run %%pyvision or `pyvision ask` offline. Each conversation gets the recorded "
            "model replies in order, whatever the question; many students can work at once."
        ),
        epilog=f"example: {PROG} --replay demo --port 8000",
    )
    parser.add_argument(
        "--replay", action="append", required=True, metavar="SESSION",
        help="a saved transcript (.json), 'demo', or 'gallery:NAME'; repeat to serve several "
             "sessions (a request gets the one whose recorded question it asks, else the first)",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; "
                             "0.0.0.0 serves other machines too)")
    parser.add_argument("--port", type=_port, default=8000, help="TCP port (default: 8000; 0 picks a free one)")
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                        help="pause between streamed pieces of a reply, so it arrives as from a "
                             "live model (default: 0)")
    parser.add_argument("--images", metavar="DIR",
                        help="also write the recorded sessions' images into DIR, to hand out to "
                             "the students (the recorded tools expect those images)")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per request")
    return parser


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _write_images(sources: Sequence[str], folder: str) -> list[Path]:
    """Write the question images of each recorded session into ``folder``."""
    from .._transcript import Transcript

    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for source in sources:
        for image in Transcript.load(source).images:
            path = out / Path(image.name).name
            if path in written:  # two sessions with an image of the same name
                path = out / f"{len(written)}_{path.name}"
            path.write_bytes(image.data)
            written.append(path)
    return written


def _banner(server: ChatServer, replay: Replay, images: list[Path], host: str) -> str:
    """What the teacher needs: the URL, how students point pyvision at it, the questions."""
    url = server.base_url
    sessions = ", ".join(f"{s.name} ({len(s.replies)} replies)" for s in replay.sessions)
    lines = [
        f"Serving {sessions} at {url}",
        "Point pyvision at it (any API key works, or none):",
        f"  terminal:  OPENAI_BASE_URL={url} pyvision ask ...",
        f"  notebook:  %config PyVision.base_url = \"{url}\"",
    ]
    if host in ("", "0.0.0.0"):
        lines.append("  On other machines use this machine's address in place of 127.0.0.1.")
    for session in replay.sessions:
        lines.append(f"Recorded question ({session.name}): {session.question}")
    if images:
        lines.append("Images for the students: " + ", ".join(str(p) for p in images))
    lines.append("Each conversation gets the recorded replies, whatever the question. Ctrl-C stops.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .._transcript import Transcript

    for source in args.replay:
        try:
            Transcript.load(source)
        except PyVisionError as exc:
            return _fail(f"--replay {source}: {exc} Sessions shipped with pyvision: 'demo', "
                         "'gallery:NAME'.", 2)
    replay = Replay(*args.replay, chunk_delay=max(0.0, args.delay))
    images: list[Path] = []
    if args.images:
        try:
            images = _write_images(args.replay, args.images)
        except OSError as exc:
            return _fail(f"--images: cannot write to {args.images}: {exc.strerror or exc}.", 2)

    def answer(request: dict):
        session, turn = replay.locate(request)
        if not args.quiet:
            shown = f"reply {turn + 1}/{len(session.replies)}" if turn < len(session.replies) else "past the end"
            print(f"{time.strftime('%H:%M:%S')}  {session.name}: {shown}", flush=True)
        return replay.step_for(session, turn)

    # Ctrl-C and `kill` both stop cleanly, even when started from a shell that made
    # background jobs ignore SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # keep_requests=False: a server running all lesson long must not keep every image sent.
    server = ChatServer(default=answer, host=args.host, port=args.port, keep_requests=False)
    try:
        try:
            server.start()
        except OSError as exc:
            return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
                         "choose another --port.", 1)
        print(_banner(server, replay, images, args.host), flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        print("Stopped.", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
