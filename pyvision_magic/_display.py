"""What a ``%%pyvision`` cell outputs: the live view, and a static copy for later.

The cell shows two outputs. The first is the widget view. The second is the
static HTML rendering, whose output metadata carries the compact transcript
(``{"pyvision": {"transcript": ..., "forks": [...]}}``) for ``%pyvision load``.
The live view hides the static copy with CSS scoped to this session, so a
running notebook shows the session once, while a notebook opened without a
kernel or widget state shows the static copy. A notebook saved while the
session's widgets are live also keeps the static copy, because the hiding
style lives only in the live widget.
"""

from __future__ import annotations

from typing import Any

from ._render import compact_transcript, render_html, render_text

__all__ = ["show_handle", "refresh_static", "static_bundle", "METADATA_KEY"]

METADATA_KEY = "pyvision"


def _forks(handle: Any) -> list[tuple[int, Any]]:
    found = []
    for fork in handle.forks:
        found.append((fork.fork_of[1], fork.transcript))
        found.extend(_forks(fork))
    return found


def static_bundle(handle: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """(mime bundle, metadata) of the static rendering of ``handle`` and its forks."""
    uid = handle.view.uid if handle.view is not None else ""
    forks = _forks(handle)
    data = {
        "text/html": render_html(handle.transcript, forks=forks, uid=uid),
        "text/plain": render_text(handle.transcript),
    }
    metadata = {
        METADATA_KEY: {
            "version": 1,
            "transcript": compact_transcript(handle.transcript),
            "forks": [{"from_turn": index, "transcript": compact_transcript(t)}
                      for index, t in forks],
        }
    }
    return data, metadata


def show_handle(shell: Any, handle: Any) -> None:
    """Display the view (if any) and a placeholder for the static copy (filled at the end).

    In a terminal (no kernel) nothing is displayed; the end prints a summary.
    """
    from IPython.display import display

    handle.on_change = refresh_static
    if getattr(shell, "kernel", None) is None:
        return
    if handle.view is not None:
        display(handle.view)
    uid = handle.view.uid if handle.view is not None else ""
    placeholder = {
        "text/html": f"<div class='pyvision-static pyvision-static-{uid}'>pyvision session "
        "running…</div>",
        "text/plain": "pyvision session running…",
    }
    handle.static_display = display(placeholder, raw=True, display_id=True)


def refresh_static(handle: Any) -> None:
    """Put the session as it is now into its static output (and print it in a terminal)."""
    display_handle = getattr(handle, "static_display", None)
    if display_handle is None:
        if handle.fork_of is None:
            print(render_text(handle.transcript))
        return
    data, metadata = static_bundle(handle)
    display_handle.update(data, raw=True, metadata=metadata)
