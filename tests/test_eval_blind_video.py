"""The blind video families: ground truth checked from the decoded MP4's pixels, and a
scored run whose tools read the clips as video_clue_0."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from conftest import code_reply

from pyvision_magic.cli import main
from pyvision_magic.eval.blind import VIDEO_FAMILIES, generate_blind_tasks
from pyvision_magic.eval.runner import BASELINE_PROMPT
from pyvision_magic.eval.scoring import score_answer


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    out = tmp_path_factory.mktemp("blind-video")
    return generate_blind_tasks(out, 6, seed=3, families=list(VIDEO_FAMILIES))


def decoded(path) -> tuple[list[np.ndarray], float]:
    """Every frame of the file (BGR), read straight with cv2, and its fps."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def touch_time(frames: list[np.ndarray], fps: float) -> float:
    """When yellow dot pixels first reach the last column."""
    for i, frame in enumerate(frames):
        edge = frame[:, -1].astype(int)  # BGR
        if ((edge[:, 2] > 150) & (edge[:, 1] > 120) & (edge[:, 0] < 100)).any():
            return i / fps
    raise AssertionError("the dot never reaches the edge")


def flash_count(frames: list[np.ndarray]) -> int:
    lit = [float(f[f.shape[0] // 2, f.shape[1] // 2].mean()) > 128 for f in frames]
    return sum(1 for before, now in zip([False] + lit, lit) if now and not before)


def test_video_tasks_are_mp4_clips_with_the_family_question(tasks):
    assert {t.subtask for t in tasks} == set(VIDEO_FAMILIES) and len(tasks) == 12
    for t in tasks:
        assert t.images[0].suffix == ".mp4" and t.images[0].parent.name == "videos"
    answers = {t.answer for t in tasks if t.subtask == "moving_dot"}
    assert len(answers) > 1 and all(re.fullmatch(r"\d\.\d", a) for a in answers)


def test_checker_agrees_with_the_generated_ground_truth(tasks):
    for t in tasks:
        frames, fps = decoded(t.images[0])
        assert len(frames) == t.meta["frames"] and fps == t.meta["fps"]
        if t.subtask == "moving_dot":
            # exact: the frame the generator says, not the one before or after
            assert touch_time(frames, fps) == t.meta["reach_frame"] / fps
            assert f"{touch_time(frames, fps):.1f}" == t.answer
        else:
            assert str(flash_count(frames)) == t.answer


def test_scores_are_exact(tasks):
    dot = next(t for t in tasks if t.subtask == "moving_dot")
    assert score_answer(f"<answer>{dot.answer} s</answer>", dot).correct
    assert not score_answer(f"<answer>{float(dot.answer) + 0.1:.1f}</answer>", dot).correct
    flash = next(t for t in tasks if t.subtask == "flashes")
    assert not score_answer(f"<answer>{int(flash.answer) + 1}</answer>", flash).correct


# The model's tool reads the clip in the kernel; the answer comes from what it printed.
ORACLE = """
import numpy as np
v = video_clue_0
if 'light up' in QUESTION:
    lit = [np.asarray(v.frame(i))[v.height // 2, v.width // 2].mean() > 128 for i in range(len(v))]
    print('RESULT', sum(1 for a, b in zip([False] + lit, lit) if b and not a))
else:
    def touches(i):
        edge = np.asarray(v.frame(i))[:, -1].astype(int)
        return ((edge[:, 0] > 150) & (edge[:, 1] > 120) & (edge[:, 2] < 100)).any()
    print('RESULT', f"{v.time_of(next(i for i in range(len(v)) if touches(i))):.1f}")
"""


def oracle(body: dict) -> object:
    if body["messages"][0]["content"] == BASELINE_PROMPT:  # no tools: one answer
        return "<answer>0</answer>"
    last = body["messages"][-1]
    if isinstance(last["content"], list) and "<interpreter>" in last["content"][0]["text"]:
        found = re.search(r"RESULT (\S+)", last["content"][0]["text"])
        return f"<answer>{found.group(1) if found else 'none'}</answer>"
    question = last["content"][-1]["text"]
    return code_reply(f"QUESTION = {question!r}\n" + ORACLE)


def test_eval_run_with_tools_reading_the_clips_scores_every_answer(chat_server, tasks, tmp_path,
                                                                    monkeypatch, no_openai_env):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    chat_server.default = oracle
    task_file = tasks[0].images[0].parents[1] / "tasks.jsonl"
    code = main(["eval", str(task_file), "--out", str(tmp_path / "r"), "-q", "--concurrency", "2",
                 "--base-url", chat_server.base_url, "--model", "m", "--baseline"])
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    tools = [r for r in records if r["mode"] == "tools"]
    assert len(tools) == len(tasks)
    wrong = [(r["id"], r["prediction"], r["answer"]) for r in tools if not r["correct"]]
    assert wrong == []
    # Without tools the same scoring finds the constant guess wrong (no answer is 0).
    baseline = [r for r in records if r["mode"] == "baseline"]
    assert len(baseline) == len(tasks) and not any(r["correct"] for r in baseline)
    assert {r["status"] for r in baseline} == {"answered"}
    # Both saw sampled frames labelled with their times before the question; only the
    # session with tools is told how to read the clip in code.
    firsts = [r.body["messages"][1]["content"] for r in chat_server.chat_requests
              if r.body["messages"][1]["role"] == "user"]
    assert all(c[0]["text"].startswith("video_clue_0 (") and "8 frames sampled evenly" in c[0]["text"]
               for c in firsts)
    assert any("not available to code" in c[0]["text"] for c in firsts)
    assert any("video_clue_0.frame(i)" in c[0]["text"] for c in firsts)
