"""``%pyvision`` (the line magic): settings, kernels, load and export."""

from __future__ import annotations

import base64
import json
import os
import shlex
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError

from ._console import plural
from ._errors import ConfigError, PyVisionError
from ._transcript import Transcript

__all__ = ["run_line_magic", "find_saved_sessions", "load_handle"]

_COMMANDS = ("config", "kernels", "restart", "stop", "load", "export", "images", "help")


def run_line_magic(magics: Any, line: str) -> Any:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%pyvision: {exc}.") from None
    command, rest = (words[0], words[1:]) if words else ("config", [])
    if command not in _COMMANDS:
        raise UsageError(
            f"%pyvision: unknown command {command!r}; use one of {', '.join(_COMMANDS)} "
            "(see %pyvision?)."
        )
    try:
        return globals()[f"_{command}"](magics, rest)
    except PyVisionError as exc:
        raise UsageError(str(exc)) from None


def _help(magics: Any, rest: list[str]) -> None:
    print(magics.pyvision.__doc__)


def _config(magics: Any, rest: list[str]) -> None:
    s = magics.settings
    env_model = os.environ.get("PYVISION_MODEL")
    model = s.model or env_model or "gpt-4.1"
    model_from = "config" if s.model else ("$PYVISION_MODEL" if env_model else "default")
    env_url = os.environ.get("OPENAI_BASE_URL")
    url = s.base_url or env_url or "https://api.openai.com/v1"
    url_from = "config" if s.base_url else ("$OPENAI_BASE_URL" if env_url else "default")
    key = "set" if os.environ.get(s.api_key_env) else "not set"
    rows = [
        ("model", f"{model}  ({model_from})"),
        ("base_url", f"{url}  ({url_from})"),
        ("api_key_env", f"{s.api_key_env}  (the variable is {key})"),
    ]
    rows += [(name, repr(getattr(s, name))) for name in
             ("max_turns", "timeout", "sandbox", "replay_delay", "url_timeout",
              "max_url_bytes", "use_pool", "prestart", "max_kernels")]
    width = max(len(name) for name, _ in rows)
    print("PyVision settings (change with %config PyVision.<name> = value):")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")


def _images(magics: Any, rest: list[str]) -> list[Any]:
    """``%pyvision images N [TURN]``: session N's images as its tools saw them.

    The inputs (``image_clue_0``, ...) and then the images the turns before
    TURN (1-based; default: all turns) bound, as PIL images. Copy to cell
    starts its cells with this.
    """
    import io

    from PIL import Image

    if not 1 <= len(rest) <= 2 or not all(word.isdigit() for word in rest):
        raise ConfigError("%pyvision images takes a session number and optionally a turn "
                          "number: %pyvision images 1 3.")
    t = magics.workspace.get(int(rest[0])).transcript
    before = int(rest[1]) - 1 if len(rest) == 2 else len(t.turns)
    blobs = [image.data for image in t.images]
    for turn in t.turns[:max(before, 0)]:
        blobs += [base64.b64decode(o.data) for o in turn.outputs
                  if o.kind == "image" and o.variable and o.data]
    images = []
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
            images.append(image.copy())
    return images


def _kernels(magics: Any, rest: list[str]) -> None:
    handles = magics.workspace.handles
    if not handles:
        print("No pyvision sessions yet.")
        return
    for h in handles:
        kernel = h.kernel
        pid = getattr(kernel, "pid", None) if kernel is not None else None
        state = f"kernel pid {pid}" if pid else "no kernel"
        fork = f" (fork of {h.fork_of[0].id} at turn {h.fork_of[1] + 1})" if h.fork_of else ""
        question = h.transcript.question.replace("\n", " ")
        question = question if len(question) <= 50 else question[:47] + "..."
        print(f"  {h.id:>3}  {h.status:<9} {plural(len(h.transcript.turns), 'turn'):>8}  {state:<16}"
              f" {question}{fork}")


def _handles(magics: Any, rest: list[str], command: str) -> list[Any]:
    if len(rest) != 1:
        raise ConfigError(f"%pyvision {command} takes one session number (or 'all').")
    if rest[0] == "all":
        return list(magics.workspace.handles)
    try:
        return [magics.workspace.get(int(rest[0]))]
    except ValueError:
        raise ConfigError(f"%pyvision {command}: {rest[0]!r} is not a session number; "
                          "`%pyvision kernels` lists them.") from None


def _restart(magics: Any, rest: list[str]) -> None:
    for h in _handles(magics, rest, "restart"):
        if h.running:
            raise ConfigError(f"Session {h.id} is running; stop it first.")
        h.restart_kernel()
        print(f"Session {h.id}: kernel restarted; the tools' variables are gone.")


def _stop(magics: Any, rest: list[str]) -> None:
    for h in _handles(magics, rest, "stop"):
        if h.running:
            h.stop()
        h.shutdown_kernel()
        print(f"Session {h.id}: kernel shut down.")


def _option(rest: list[str], flag: str) -> str | None:
    if flag in rest:
        i = rest.index(flag)
        if i + 1 >= len(rest):
            raise ConfigError(f"{flag} needs a value.")
        value = rest[i + 1]
        del rest[i : i + 2]
        return value
    return None


def find_saved_sessions(notebook: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``pyvision`` metadata of every saved session in a notebook, in order."""
    found = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) or []:
            meta = (output.get("metadata") or {}).get("pyvision")
            if isinstance(meta, dict) and "transcript" in meta:
                found.append(meta)
    return found


def _sources(magics: Any, source: str) -> list[dict[str, Any]]:
    """Saved sessions named by ``source``: a variable, a .ipynb or a transcript .json."""
    ns = magics.shell.user_ns
    if source.isidentifier() and source in ns:
        value = ns[source]
        if hasattr(value, "transcript") and hasattr(value, "forks"):
            return [{"transcript": value.transcript.to_dict(), "forks": []}]
        if isinstance(value, Transcript):
            return [{"transcript": value.to_dict(), "forks": []}]
        if isinstance(value, dict):
            return [value if "transcript" in value else {"transcript": value, "forks": []}]
        raise ConfigError(f"{source} is a {type(value).__name__}, not a pyvision session.")
    path = Path(os.path.expanduser(source))
    if path.suffix == ".ipynb":
        try:
            notebook = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"Notebook not found: {source}. Check the path.") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"Cannot read the notebook {source}: {exc}.") from None
        found = find_saved_sessions(notebook)
        if not found:
            raise ConfigError(f"{source} has no saved pyvision sessions.")
        return found
    if not path.exists() and source.isidentifier():
        raise ConfigError(f"There is no variable or file named {source!r}.")
    return [{"transcript": Transcript.load(path).to_dict(), "forks": []}]


def load_handle(magics: Any, saved: dict[str, Any], *, with_view: bool = True,
                fork_of: int | None = None) -> Any:
    """A handle (with its view and forks) for a saved session; no kernel until Run."""
    from ._handle import SessionHandle
    from ._replay import ReplayModel
    from ._session import Session

    try:
        t = Transcript.from_dict(saved["transcript"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"Not a valid pyvision session: {exc}.") from None
    session = Session(t.question, t.images, model=ReplayModel(t), executor=None,  # type: ignore[arg-type]
                      history=t.turns, parent=magics.settings,
                      max_turns=max(t.max_turns, len(t.turns), 1), timeout=t.timeout,
                      videos=t.videos)
    st = session.transcript
    st.status, st.answer, st.error, st.usage, st.created = (t.status, t.answer, t.error,
                                                          t.usage, t.created)
    st.model = t.model
    view = None
    if with_view and getattr(magics.shell, "kernel", None) is not None \
            and not magics.workspace.static_only():
        from .ui import SessionWidget

        title = f"Fork from turn {fork_of + 1}" if fork_of is not None else ""
        view = SessionWidget(t.question, t.images, t.model, title=title, fork_of=fork_of,
                             videos=t.videos)
    handle = SessionHandle(magics.workspace, session, view)
    if view is not None:
        view.show_transcript(st)
    magics.workspace.add(handle)
    for fork in saved.get("forks") or []:
        turn = int(fork.get("from_turn", 0))
        child = load_handle(magics, {"transcript": fork["transcript"]}, with_view=with_view,
                            fork_of=turn)
        child.fork_of = (handle, turn)
        handle.forks.append(child)
        if view is not None and child.view is not None:
            view.add_fork(child.view, turn)
    return handle


def _load(magics: Any, rest: list[str]) -> Any:
    from ._display import show_handle

    name = _option(rest, "-o")
    if len(rest) != 1:
        raise ConfigError("%pyvision load takes one source: a .json transcript, an .ipynb "
                          "notebook, or a variable.")
    handles = [load_handle(magics, saved) for saved in _sources(magics, rest[0])]
    for handle in handles:
        show_handle(magics.shell, handle)
        from ._display import refresh_static

        refresh_static(handle)
    if name:
        magics.shell.user_ns[name] = handles[0] if len(handles) == 1 else handles
    return None


def _export(magics: Any, rest: list[str]) -> None:
    from ._export import write_notebook

    if not rest or len(rest) > 2:
        raise ConfigError("%pyvision export takes a PATH.ipynb and optionally a source "
                          "(a variable, a transcript .json or a notebook).")
    path = rest[0]
    if len(rest) == 2:
        saved = _sources(magics, rest[1])[0]
        transcript = Transcript.from_dict(saved["transcript"])
    else:
        if not magics.workspace.handles:
            raise ConfigError("There is no session to export yet; run %%pyvision first.")
        transcript = magics.workspace.handles[-1].transcript
    written = write_notebook(transcript, path)
    print(f"Exported to {written} (images in {written.stem}_images/).")
