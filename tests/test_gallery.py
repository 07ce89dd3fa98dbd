"""The tool gallery's shipped sessions (pyvision_magic/data/gallery/*.json).

Each is a hand-written session (tests/gallery_sessions_source.py) recorded
through a real session and child kernel. Here every one is replayed again in a
real child kernel: its tools must run without error, print the facts its
reasoning quotes, and the session must reach its expected answer.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

import gallery_sessions_source as source
from pyvision_magic import Transcript

MAX_FILE_BYTES = 400_000
SESSIONS = source.SESSIONS
IDS = [s.name for s in SESSIONS]


def missing_requirements(session: source.GallerySession) -> str | None:
    """Why the session's tools cannot run here, or None."""
    for module in session.needs:
        if importlib.util.find_spec(module) is None:
            return f"the Python package {module} is not installed"
    if "pytesseract" in session.needs and shutil.which("tesseract") is None:
        return "the tesseract program is not installed (apt-get install tesseract-ocr)"
    return None


def skip_unless_runnable(session: source.GallerySession) -> None:
    reason = missing_requirements(session)
    if reason is None:
        return
    if os.environ.get("CI"):
        # CI installs what the gallery needs; a skip there would hide a missing install step.
        pytest.fail(f"{session.name} cannot run: {reason}")
    pytest.skip(f"{session.name} needs what is missing here: {reason}")


def test_every_category_of_the_paper_has_a_session() -> None:
    assert [s.category for s in SESSIONS] == [
        "Basic image processing",
        "Advanced image processing",
        "Visual prompting and sketching",
        "Numerical and statistical analysis",
        "Long-tail tools",
    ]
    assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("session", SESSIONS, ids=IDS)
def test_shipped_file_is_the_recorded_source(session: source.GallerySession) -> None:
    assert session.path.stat().st_size < MAX_FILE_BYTES
    shipped = Transcript.load(session.path)
    assert shipped.model == source.MODEL_LABEL
    assert "written by the pyvision_magic developers" in shipped.model
    assert shipped.question == session.question
    assert [t.text for t in shipped.turns] == session.turns
    assert 2 <= sum(1 for t in shipped.turns if t.code) <= 4
    assert [im.name for im in shipped.images] == [name for name, _, _ in session.make_images()]
    assert source.check(session, shipped) == []


@pytest.mark.parametrize("session", SESSIONS, ids=IDS)
def test_replay_runs_the_tools_and_reaches_the_answer(session: source.GallerySession) -> None:
    skip_unless_runnable(session)
    shipped = Transcript.load(session.path)
    replayed = asyncio.run(source.run_session(session, shipped))
    assert source.check(session, replayed) == []
    for old, new in zip(shipped.turns, replayed.turns):
        # Same number of images shown, bound to the same image_clue_N names.
        assert [o.variable for o in new.outputs if o.kind == "image"] == [
            o.variable for o in old.outputs if o.kind == "image"
        ]


def test_cli_replays_a_gallery_session(no_openai_env: None) -> None:
    session = source.by_name("long_tail_differences")
    proc = subprocess.run(
        [sys.executable, "-m", "pyvision_magic", "replay", str(session.path), "-q"],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == session.answer
