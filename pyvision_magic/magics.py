"""The IPython extension: ``%%pyvision`` asks, ``%pyvision`` manages.

``%load_ext pyvision_magic`` registers the magics. Settings are traits of
:class:`PyVision` (``%config PyVision.model = "gpt-4.1"``, or
``c.PyVision.model`` in ``ipython_config.py``), overridable per cell.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, CaselessStrEnum, Float, Int, Unicode, Union
from traitlets.config import LoggingConfigurable

from ._errors import ConfigError, PyVisionError

__all__ = ["PyVision", "PyVisionMagics", "load_ipython_extension", "unload_ipython_extension"]


class PyVision(LoggingConfigurable):
    """Settings of the ``%%pyvision`` magic (config section ``PyVision``)."""

    model = Unicode(
        None, allow_none=True,
        help="Model name. None uses $PYVISION_MODEL, else OpenAIModel's default (gpt-4.1).",
    ).tag(config=True)
    base_url = Unicode(
        None, allow_none=True,
        help="OpenAI-compatible endpoint ending in /v1. None uses $OPENAI_BASE_URL, else OpenAI.",
    ).tag(config=True)
    api_key_env = Unicode(
        "OPENAI_API_KEY", help="Name of the environment variable holding the API key."
    ).tag(config=True)
    max_turns = Int(10, help="Most model replies per session.").tag(config=True)
    timeout = Float(60.0, help="Seconds one tool may run before it is interrupted.").tag(
        config=True
    )
    sandbox = Union(
        [Bool(), CaselessStrEnum(["auto"])],
        default_value="auto",
        help="Run tools in the bubblewrap sandbox: \"auto\" (where it works, else "
        "unsandboxed with a notice), True (refuse to run without it) or False. See "
        "ChildKernel.sandbox.",
    ).tag(config=True)
    gateway_url = Unicode(
        None, allow_none=True,
        help="Run tools on the Jupyter Kernel Gateway at this URL (token from "
        "$PYVISION_GATEWAY_TOKEN; see GatewayKernel); the kernel pool then keeps kernels "
        "started there. None: local child kernels. A cell's --gateway overrides it.",
    ).tag(config=True)
    replay_delay = Float(
        0.005, help="Seconds between streamed words when replaying a saved session."
    ).tag(config=True)
    url_timeout = Float(20.0, help="Seconds to wait for an image URL to download.").tag(
        config=True
    )
    max_url_bytes = Int(20 * 2**20, help="Largest image downloaded from a URL, in bytes.").tag(
        config=True
    )
    use_pool = Bool(
        True, help="Take child kernels from a pool kept warm (c.KernelPool.size kernels)."
    ).tag(config=True)
    prestart = Bool(
        True, help="Start warming the kernel pool when the extension loads."
    ).tag(config=True)
    max_kernels = Int(
        8,
        help="Child kernels kept alive for finished sessions (for Run); beyond it the "
        "oldest is shut down, and its next Run starts a new kernel and replays the turns.",
    ).tag(config=True)


_CELL_MAGIC_CALL = re.compile(r"^get_ipython\(\)\.run_cell_magic\('pyvision', ")
_ASYNC_CALL = "await __import__('pyvision_magic.magics').magics._run_cell_async(get_ipython(), "


def _async_cell_transform(lines: list[str]) -> list[str]:
    """Make a ``%%pyvision`` cell a top-level ``await`` (see :meth:`PyVisionMagics._run_cell_async`).

    An async cell leaves the notebook's loop free while the session runs, so
    ipykernel can handle widget messages (the Stop button) meanwhile.
    """
    if lines and _CELL_MAGIC_CALL.match(lines[0]) and _can_await():
        return [_CELL_MAGIC_CALL.sub(_ASYNC_CALL, lines[0], count=1)] + lines[1:]
    return lines


def _can_await() -> bool:
    """True in a kernel that awaits top-level ``await`` on its own running loop."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None or not shell.autoawait:
        return False
    try:
        from IPython.core.interactiveshell import _asyncio_runner
    except ImportError:
        return False
    return shell.loop_runner is _asyncio_runner


def _parse_line(magic: Any, line: str) -> Any:
    """Parse a magic's options with shell quoting: ``--replay "my file.json"``.

    ``parse_argstring`` splits in non-POSIX mode, which keeps the quotes in the
    value; paths with spaces then cannot be given at all.
    """
    from IPython.utils._process_common import arg_split

    return magic.parser.parse_args(arg_split(line, posix=True))


def _prompt_settings(settings: Any, args: Any) -> dict[str, Any]:
    """Session's prompt profile and template from the options, else from c.Session.

    The profile is built once here so that a bad name or template file is
    reported before a kernel is taken for the session.
    """
    from ._profiles import make_profile

    configured = settings.config.get("Session", {})
    prompt = {
        "prompt_profile": args.prompt_profile or configured.get("prompt_profile", "default"),
        "system_prompt_file": (os.path.expanduser(args.system_prompt) if args.system_prompt
                               else configured.get("system_prompt_file")),
    }
    make_profile(prompt["prompt_profile"], prompt["system_prompt_file"])
    return prompt


def _run_cell_async(shell: Any, line: str, cell: str) -> Any:
    magics = shell.magics_manager.registry.get("PyVisionMagics")
    if magics is None:
        raise UsageError("The pyvision extension is not loaded; run %load_ext pyvision_magic.")
    return magics.run_cell_async(line, cell)


@magics_class
class PyVisionMagics(Magics):
    """``%%pyvision`` and ``%pyvision``; see the magic's help (``%%pyvision?``)."""

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.settings = PyVision(parent=shell)
        from ._handle import Workspace

        self.workspace = Workspace(self.settings, make_model=self._configured_model)

    # -- the cell --------------------------------------------------------------

    @magic_arguments()
    @argument("-i", "--image", action="append", default=[], metavar="IMAGE",
              help="a variable (PIL image, numpy array, matplotlib Figure, bytes, or a list "
              "of them; a (T, H, W, 3) array is a video), an image or video file path, or an "
              "http(s) URL; repeat for several (videos are bound as video_clue_0, ...)")
    @argument("--bgr", action="store_true", help="numpy arrays are in OpenCV's BGR order")
    @argument("--video-frames", type=int, metavar="N",
              help="frames of each video shown to the model (default: Session.video_frames, 8)")
    @argument("--model", help="model name (default: PyVision.model, $PYVISION_MODEL, gpt-4.1)")
    @argument("--base-url", help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)")
    @argument("--api-key-env", metavar="VAR", help="variable holding the API key")
    @argument("--max-turns", type=int, help="most model replies (default: 10)")
    @argument("--timeout", type=float, help="seconds one tool may run (default: 60)")
    @argument("--image-history", choices=["full", "low", "placeholder"],
              help="how a tool's image goes in later requests once seen: full, low "
              "(default) or placeholder")
    @argument("--save", metavar="PATH", help="write the transcript JSON to PATH at the end")
    @argument("--prompt-profile", metavar="NAME",
              help="conversation layout: default (GPT-4.1/4o, Claude, Gemini) or "
              "pyvision-format (Qwen2.5-VL, PyVision-RL); default: c.Session.prompt_profile")
    @argument("--system-prompt", metavar="FILE",
              help="a template file replacing the profile's instructions (see the README, "
              "Prompt profiles)")
    @argument("--sandbox", action="store_true",
              help="refuse to run the tools outside the sandbox (default: sandboxed where "
              "bubblewrap works, else unsandboxed with a notice)")
    @argument("--no-sandbox", action="store_true",
              help="run the tools without the sandbox (see the README, Security model)")
    @argument("--gateway", metavar="URL",
              help="run the tools on the Jupyter Kernel Gateway at URL (default: "
              "PyVision.gateway_url; token from $PYVISION_GATEWAY_TOKEN)")
    @argument("-o", "--output", metavar="NAME",
              help="store the session (answer, status, transcript, kernel) in variable NAME")
    @argument("--replay", metavar="FILE",
              help="replay a saved transcript: recorded model turns, tools run for real")
    @line_cell_magic
    def pyvision(self, line: str, cell: str | None = None) -> Any:
        """Ask a multimodal model about images; it writes tools that run in a child kernel.

        Cell magic: the cell's body is the question, taken as written (no
        ``{}`` or ``$`` expansion). Example::

            %%pyvision -i photo.jpg -o result
            How many coins are on the tray?

        With ``--replay FILE`` the question and images come from the saved
        session. Interrupting the cell (or the view's Stop button) ends the
        session with status ``stopped`` and keeps every turn.

        Line magic::

            %pyvision [config]             show the effective settings
            %pyvision kernels              list the sessions and their child kernels
            %pyvision restart N            restart session N's kernel
            %pyvision stop N|all           shut down session N's kernel (or all)
            %pyvision load SOURCE [-o NAME]
                                           show a saved session: a transcript .json, a
                                           notebook .ipynb, or a variable
            %pyvision export PATH [SOURCE] write a session as a plain notebook (default:
                                           the last session)
            %pyvision images N [TURN]      session N's images as its tools had them
                                           before TURN (what Copy to cell loads)
        """
        if cell is None:
            from ._line_magic import run_line_magic

            return run_line_magic(self, line)
        # run_cell_magic has already expanded $names in the line.
        run = self._start_cell(line, cell)
        if run is None:
            return None
        handle, args = run
        runner = self.workspace.runner
        try:
            runner.wait(runner.submit(handle._async_run()), on_interrupt=handle.stop)
        finally:
            self._finish_cell(handle, args)
        return None

    async def run_cell_async(self, line: str, cell: str) -> None:
        """The cell magic as a coroutine, awaited by an async cell (see the transformer)."""
        # IPython expands $names in a magic's line before calling it; the async
        # path bypasses run_cell_magic, so expand here (the question is never expanded).
        run = self._start_cell(self.shell.var_expand(line, depth=0), cell)
        if run is None:
            return None
        handle, args = run
        runner = self.workspace.runner
        try:
            await runner.wait_async(runner.submit(handle._async_run()), on_interrupt=handle.stop)
        finally:
            self._finish_cell(handle, args)
        return None

    def _start_cell(self, line: str, cell: str) -> tuple[Any, Any] | None:
        try:
            args = _parse_line(self.pyvision, line)
            handle = self._new_session(args, cell)
        except PyVisionError as exc:
            raise UsageError(str(exc)) from None
        self.workspace.add(handle)
        if args.output:
            self.shell.user_ns[args.output] = handle
        from ._display import show_handle

        show_handle(self.shell, handle)
        return handle, args

    def _finish_cell(self, handle: Any, args: Any) -> None:
        from ._display import refresh_static

        refresh_static(handle)
        if args.save:
            try:
                handle.transcript.save(args.save)
            except PyVisionError as exc:
                raise UsageError(str(exc)) from None

    def _new_session(self, args: Any, cell: str) -> Any:
        from ._handle import SessionHandle
        from ._session import Session

        s = self.settings
        max_turns = args.max_turns if args.max_turns is not None else s.max_turns
        timeout = args.timeout if args.timeout is not None else s.timeout
        if max_turns < 1:
            raise ConfigError(f"--max-turns must be at least 1, not {max_turns}.")
        if timeout <= 0:
            raise ConfigError(f"--timeout must be more than 0 seconds, not {timeout:g}.")
        if args.output and not args.output.isidentifier():
            raise ConfigError(f"-o needs a Python variable name, not {args.output!r}.")
        if args.sandbox and args.no_sandbox:
            raise ConfigError("--sandbox and --no-sandbox contradict each other; give one.")
        sandbox = True if args.sandbox else False if args.no_sandbox else s.sandbox
        prompt = _prompt_settings(s, args)
        if args.gateway and (args.sandbox or args.no_sandbox):
            raise ConfigError("--sandbox and --no-sandbox apply to local kernels; drop them with "
                              "--gateway (the gateway decides how tools are confined).")
        if args.replay:
            from ._replay import ReplayModel
            from ._transcript import Transcript

            if args.image:
                raise ConfigError("--replay takes the images from the saved session; drop -i.")
            saved = Transcript.load(os.path.expanduser(args.replay))
            if not saved.turns:
                raise ConfigError(f"{args.replay} has no model turns to replay.")
            question, images, videos = saved.question, saved.images, saved.videos
            model: Any = ReplayModel(saved, delay=s.replay_delay)
            max_turns = max(saved.max_turns, len(saved.turns))
        else:
            from ._image_sources import resolve_images

            question = cell.strip()
            if not question:
                raise ConfigError("The question is empty: write it in the cell, below %%pyvision.")
            if not args.image:
                raise ConfigError("No image: add -i with a variable, a file path or a URL.")
            from ._video import split_media

            images, videos = split_media(resolve_images(
                args.image, self.shell.user_ns, bgr=args.bgr, url_timeout=s.url_timeout,
                max_url_bytes=s.max_url_bytes))
            model = self._make_model(args.model, args.base_url, args.api_key_env)
        self.workspace.remember_model(model)
        kernel = self.workspace.runner.wait(
            self.workspace.runner.submit(
                self.workspace.new_kernel(sandbox=sandbox, gateway=args.gateway))
        )
        video_options = {} if args.video_frames is None else {"video_frames": args.video_frames}
        session = Session(question, images, model=model, executor=kernel, parent=s,
                          max_turns=max_turns, timeout=timeout, videos=videos, **video_options,
                          **prompt,
                          **({"image_history": args.image_history} if args.image_history else {}))
        if videos:  # sampled now, so that the view's header shows them from the start
            from ._video import sample_frames

            for video in videos:
                if not video.frames:
                    video.frames = sample_frames(video, session.video_frames, session.max_pixels)
        view = None
        if getattr(self.shell, "kernel", None) is not None and not self.workspace.static_only():
            from .ui import SessionWidget

            view = SessionWidget(question, images, session.transcript.model, videos=videos,
                                 notice=self.workspace.isolation_notice(kernel))
        else:  # a terminal (or no front end): progress as text
            self.workspace.tell_isolation(kernel)
            from .cli import ConsoleProgress

            ConsoleProgress(sys.stderr).attach(session)
        return SessionHandle(self.workspace, session, view, kernel=kernel)

    def _make_model(self, name: str | None = None, base_url: str | None = None,
                    api_key_env: str | None = None) -> Any:
        from ._model import OpenAIModel

        s = self.settings
        kwargs: dict[str, Any] = {"api_key_env": api_key_env or s.api_key_env}
        name = name or s.model or os.environ.get("PYVISION_MODEL")
        if name:
            kwargs["model"] = name
        if base_url or s.base_url:
            kwargs["base_url"] = base_url or s.base_url
        model = OpenAIModel(parent=s, **kwargs)
        model.check()
        return model

    def _configured_model(self) -> Any:
        """A live model if an endpoint or key is configured, else None (forks of loaded sessions)."""
        try:
            return self._make_model()
        except ConfigError:
            return None


_loaded: dict[int, PyVisionMagics] = {}


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (``%load_ext pyvision_magic``)."""
    if id(ipython) in _loaded:
        return
    magics = PyVisionMagics(ipython)
    ipython.register_magics(magics)
    if magics.settings not in ipython.configurables:
        ipython.configurables.append(magics.settings)
    if _async_cell_transform not in ipython.input_transformers_post:
        ipython.input_transformers_post.append(_async_cell_transform)
    _loaded[id(ipython)] = magics
    atexit.register(magics.workspace.close)
    if magics.settings.prestart and magics.settings.use_pool and getattr(ipython, "kernel", None):
        magics.workspace.prestart()


def unload_ipython_extension(ipython: Any) -> None:
    """Stop the sessions and shut down every child kernel (``%unload_ext pyvision_magic``)."""
    magics = _loaded.pop(id(ipython), None)
    if _async_cell_transform in ipython.input_transformers_post:
        ipython.input_transformers_post.remove(_async_cell_transform)
    if magics is None:
        return
    magics.workspace.close()
    atexit.unregister(magics.workspace.close)
    if magics.settings in ipython.configurables:
        ipython.configurables.remove(magics.settings)
    registry = ipython.magics_manager.registry
    registry.pop("PyVisionMagics", None)
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("pyvision", None)
