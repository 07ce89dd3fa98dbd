"""The notebook view of a session: one anywidget per session (``SessionWidget``).

It only shows what a session's events say and reports the user's actions to
callbacks; it never runs anything itself, so it can be built and driven in
tests without a browser (``widget.click("run", turn=0, code=...)``).
"""

from ._widget import SessionWidget, bundle_problem

__all__ = ["SessionWidget", "bundle_problem"]
