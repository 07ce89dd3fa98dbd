"""The notebook front end: the built bundle is in the package, and the build hook's checks."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _static(name: str) -> Path:
    path = resources.files("pyvision_magic") / "static" / name
    assert path.is_file(), (f"{name} is missing from the installed package: reinstall it "
                            "(pip install -e .) with Node.js and npm available")
    return Path(str(path))


def _hook():
    spec = importlib.util.spec_from_file_location("pyvision_hatch_build", ROOT / "hatch_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bundle_is_an_es_module_that_exports_render():
    js = _static("session_view.js").read_text(encoding="utf-8")
    css = _static("session_view.css").read_text(encoding="utf-8")
    assert ".pyvision-view" in css and ".pyvision-card" in css
    # An ES module with a default export, and no import of anything but itself.
    assert re.search(r"export\s*\{[^}]*\bas default\b[^}]*\}", js), "no default export"
    assert not re.search(r"""\bimport\s*(?:[\w*{}\s,]+from\s*)?["']""", js), "the bundle imports a module"
    assert not re.search(r"""\bimport\s*\(\s*["']""", js), "the bundle imports a module dynamically"
    assert not re.search(r"""["'`]https?://[^"'`]*\.m?js""", js), "the bundle loads code from the web"
    assert len(js) < 600_000, f"the bundle grew to {len(js)} bytes"


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to import the bundle with")
def test_node_can_import_the_bundle_and_finds_render(tmp_path):
    bundle = _static("session_view.js")
    script = tmp_path / "check.mjs"
    script.write_text(
        f"const m = await import({json.dumps(bundle.as_uri())});\n"
        "console.log(JSON.stringify({render: typeof m.default?.render, "
        "keys: Object.keys(m)}));\n"
    )
    out = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"render": "function",
                                                               "keys": ["default"]}


def test_the_hook_says_in_one_sentence_that_node_is_needed(tmp_path):
    hook = _hook()
    with pytest.raises(hook.FrontEndMissing) as info:
        hook.find_tools(path=str(tmp_path))  # a PATH with neither node nor npm
    assert str(info.value) == (
        "Installing pyvision_magic builds its notebook front end from js/ and needs Node.js 18+ "
        "with npm: install Node.js (e.g. `apt-get install nodejs npm`) and run the install again.")


def test_the_hook_needs_npm_as_well_as_node(tmp_path):
    hook = _hook()
    node = tmp_path / "node"
    node.write_text("#!/bin/sh\n")
    node.chmod(0o755)
    with pytest.raises(hook.FrontEndMissing):
        hook.find_tools(path=str(tmp_path))
    npm = tmp_path / "npm"
    npm.write_text("#!/bin/sh\n")
    npm.chmod(0o755)
    assert hook.find_tools(path=str(tmp_path)) == (str(node), str(npm))


def test_the_build_without_node_stops_with_that_sentence(tmp_path, monkeypatch):
    hook = _hook()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("PYVISION_SKIP_JS_BUILD", raising=False)
    with pytest.raises(hook.FrontEndMissing, match="needs Node.js 18"):
        hook.build_front_end()


def test_npm_ci_runs_when_node_modules_is_missing_or_older_than_the_lock(tmp_path):
    hook = _hook()
    (tmp_path / "package-lock.json").write_text("{}")
    assert hook.needs_npm_ci(tmp_path)
    modules = tmp_path / "node_modules"
    modules.mkdir()
    lock = tmp_path / "package-lock.json"
    os.utime(modules, (1_000, 1_000))
    assert hook.needs_npm_ci(tmp_path)
    os.utime(lock, (500, 500))
    assert not hook.needs_npm_ci(tmp_path)


def test_the_build_hook_is_configured_for_wheels():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["build-system"]["build-backend"] == "hatchling.build"
    wheel = config["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["hooks"]["custom"]["path"] == "hatch_build.py"
    assert "pyvision_magic/static/session_view.js" in wheel["artifacts"]
    lock = json.loads((ROOT / "js" / "package-lock.json").read_text())
    assert lock["lockfileVersion"] >= 2


def _fresh_checkout(tmp_path: Path) -> Path:
    """The project's files as git has them (no node_modules, no built bundle)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    source = tmp_path / "checkout"
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    assert not (source / "js" / "node_modules").exists()
    assert not (source / "pyvision_magic" / "static").exists(), "the bundle is committed"
    return source


def _pip_wheel(source: Path, out: Path, path: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYVISION_SKIP_JS_BUILD"}
    env.update(PATH=path, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                           str(source)], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("npm") is None,
                    reason="needs git (to list the checkout) and npm")
def test_a_wheel_of_a_fresh_checkout_carries_the_bundle_the_hook_built(tmp_path):
    import zipfile

    source = _fresh_checkout(tmp_path)
    built = _pip_wheel(source, tmp_path / "wheel", os.environ["PATH"])
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("pyvision_magic-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        js = archive.read("pyvision_magic/static/session_view.js").decode()
        css = archive.read("pyvision_magic/static/session_view.css").decode()
    assert re.search(r"export\s*\{[^}]*\bas default\b", js) and "cm-editor" in js
    assert ".pyvision-view" in css
    assert (source / "js" / "node_modules" / "@codemirror" / "view").is_dir(), "npm ci ran"
    lock = json.loads((source / "js" / "package-lock.json").read_text())
    assert lock == json.loads((ROOT / "js" / "package-lock.json").read_text()), \
        "the build rewrote the lock file"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the checkout")
def test_building_without_node_fails_with_the_one_sentence(tmp_path):
    source = _fresh_checkout(tmp_path)
    tools = tmp_path / "bin"  # git but no node or npm on PATH
    tools.mkdir()
    built = _pip_wheel(source, tmp_path / "wheel", str(tools))
    assert built.returncode != 0
    assert "needs Node.js 18+ with npm: install Node.js" in built.stdout + built.stderr
    assert not list((tmp_path / "wheel").glob("*.whl"))
