"""Build the notebook front end (``js/`` -> ``pyvision_magic/static/``) while building a wheel.

Why a small hook of our own rather than hatch-jupyter-builder: it stops with one
sentence that says what to install when Node.js is missing, and it installs the
JavaScript dependencies with ``npm ci``, which follows ``js/package-lock.json``
exactly and never rewrites it.

Runs for standard and editable wheels. ``npm ci`` only when ``js/node_modules`` is
missing or older than the lock file; then ``npm run build``. With
``PYVISION_SKIP_JS_BUILD=1`` an existing bundle is used as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # imported outside a build (the tests check the functions below)
    BuildHookInterface = object  # type: ignore[assignment,misc]

ROOT = Path(__file__).resolve().parent
JS = ROOT / "js"
STATIC = ROOT / "pyvision_magic" / "static"
BUNDLE = [STATIC / "session_view.js", STATIC / "session_view.css"]

NO_NODE = ("Installing pyvision_magic builds its notebook front end from js/ and needs Node.js 18+ "
           "with npm: install Node.js (e.g. `apt-get install nodejs npm`) and run the install again.")


class FrontEndMissing(RuntimeError):
    """Node.js or npm is not installed, so the front end cannot be built."""


def find_tools(path: str | None = None) -> tuple[str, str]:
    """Paths of ``node`` and ``npm`` on ``path`` (default: ``$PATH``); raise ``FrontEndMissing``."""
    node = shutil.which("node", path=path)
    npm = shutil.which("npm", path=path)
    if not node or not npm:
        raise FrontEndMissing(NO_NODE)
    return node, npm


def needs_npm_ci(js: Path = JS) -> bool:
    """True when ``node_modules`` is missing or older than ``package-lock.json``."""
    modules, lock = js / "node_modules", js / "package-lock.json"
    return not modules.is_dir() or modules.stat().st_mtime < lock.stat().st_mtime


def build_front_end() -> None:
    """``npm ci`` if needed, then ``npm run build``; skipped with PYVISION_SKIP_JS_BUILD=1."""
    if os.environ.get("PYVISION_SKIP_JS_BUILD") == "1" and all(p.is_file() for p in BUNDLE):
        return
    _, npm = find_tools()
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(npm).parent), os.environ.get("PATH", "")]))
    if needs_npm_ci():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, env=env, check=True)
        # npm ci leaves node_modules with an old mtime on some file systems.
        os.utime(JS / "node_modules")
    subprocess.run([npm, "run", "build"], cwd=JS, env=env, check=True)
    missing = [str(p.relative_to(ROOT)) for p in BUNDLE if not p.is_file()]
    if missing:
        raise FrontEndMissing(f"npm run build did not write {', '.join(missing)}.")


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        build_front_end()
