"""`pyvision eval` end to end: loopback chat server, real openai client, real child kernels.

The server's step is a function of the request: it finds the task by the
question in the conversation, and the mode by the system prompt, so answers
stay scripted whatever order the concurrent sessions ask in.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chat_server import HTTPError, Reply
from conftest import code_reply

from pyvision_magic.cli import main
from pyvision_magic.eval.runner import BASELINE_PROMPT

ROOT = Path(__file__).resolve().parents[1]

# id -> (answer, tools reply, baseline reply); "FAIL" is an endpoint failure.
SCRIPT = {
    "t0": ("2", "<answer>2</answer>", "<answer>3</answer>"),
    "t1": ("5", "I count 4.\n<answer>4</answer>", "<answer>5</answer>"),
    "t2": ("7", "<answer>\\boxed{7}</answer>", "<answer>six</answer>"),
    "t3": ("1", "FAIL", "<answer>1</answer>"),
    "t4": ("C", "The answer is (C).\n<answer>C</answer>", "<answer>A</answer>"),
    "t5": ("0", "<answer>1</answer>", "<answer>2</answer>"),
}


def write_tasks(folder: Path, image: Path, ids=SCRIPT) -> Path:
    lines = []
    for i, task_id in enumerate(ids):
        answer = SCRIPT[task_id][0] if task_id in SCRIPT else "1"
        task = {"id": task_id, "question": f"Question {task_id}: how many?", "images": [str(image)],
                "answer": answer, "benchmark": "demo", "subtask": "even" if i % 2 == 0 else "odd"}
        if answer == "C":
            task.update(choices=["one", "two", "three"], question=f"Question {task_id}: which?")
        lines.append(json.dumps(task))
    path = folder / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def task_of(body) -> str:
    first_user = next(m for m in body["messages"] if m["role"] == "user")
    text = " ".join(p.get("text", "") for p in first_user["content"])
    return re.search(r"Question (\w+):", text).group(1)


def is_baseline(body) -> bool:
    return body["messages"][0]["content"] == BASELINE_PROMPT


def scripted(delay: float = 0.0, tokens: int | None = None):
    """The server step: tools tasks run one tool, then answer; baseline answers at once."""

    def reply(text):
        if text == "FAIL":
            return HTTPError(500, "upstream exploded", headers={"x-should-retry": "false"})
        return Reply(text, delay=delay, prompt_tokens=tokens and tokens - 10,
                     completion_tokens=tokens and 10)

    def step(body):
        task = task_of(body)
        _, tools, baseline = SCRIPT.get(task, ("1", "<answer>1</answer>", "<answer>1</answer>"))
        if is_baseline(body):
            return reply(baseline)
        turns = sum(m["role"] == "assistant" for m in body["messages"])
        if turns == 0 and tools != "FAIL":
            return reply(code_reply("print('size', image_clue_0.size)"))
        return reply(tools)

    return step


@pytest.fixture
def env(monkeypatch, no_openai_env):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")


def eval_args(server, tasks, out, *extra):
    return ["eval", str(tasks), "--out", str(out), "--base-url", server.base_url, "--model", "test-model",
            "-q", *extra]


def records(out: Path) -> list[dict]:
    """The complete lines of results.jsonl (a line torn by a kill is not a result)."""
    found = []
    for line in (out / "results.jsonl").read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            pass
    return found


def test_tools_and_baseline_give_exact_accuracy_and_report(make_chat_server, env, image_path, tmp_path, capsys):
    server = make_chat_server(default=scripted())
    tasks, out = write_tasks(tmp_path, image_path), tmp_path / "results"
    assert main(eval_args(server, tasks, out, "--baseline", "--concurrency", "3")) == 0

    lines = records(out)
    assert len(lines) == 12 and len({(r["id"], r["mode"]) for r in lines}) == 12
    by = {(r["id"], r["mode"]): r for r in lines}
    assert [by[(t, "tools")]["correct"] for t in SCRIPT] == [True, False, True, False, True, False]
    assert [by[(t, "baseline")]["correct"] for t in SCRIPT] == [False, True, False, True, False, False]
    failed = by[("t3", "tools")]
    assert failed["status"] == "error" and "HTTP 500" in failed["error"]
    assert by[("t0", "tools")]["turns"] == 2 and by[("t0", "baseline")]["turns"] == 1
    assert by[("t4", "tools")]["extracted"] == "C"
    assert by[("t0", "tools")]["tools"] == [{"primary": "other", "categories": ["other"]}]
    for r in lines:
        assert (out / r["transcript"]).exists()

    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["tools"]["accuracy"] == 50.0
    assert report["overall"]["baseline"]["accuracy"] == 33.33
    assert report["delta"] == 16.67
    assert report["overall"]["tools"]["errors"] == 1
    rows = {(r["benchmark"], r["subtask"]): r for r in report["rows"]}
    assert rows[("demo", "even")]["tools"]["accuracy"] == 100.0  # t0 t2 t4
    assert rows[("demo", "odd")]["baseline"]["accuracy"] == pytest.approx(100 * 2 / 3, abs=0.01)  # t1 t3
    assert report["turns_histogram"] == {"1": 1, "2": 5}
    assert report["taxonomy"]["demo"]["other"] == 5
    md = (out / "report.md").read_text()
    assert "| demo | **all** | 6 | 33.3 | 6 | 50.0 | +16.7 |" in md
    assert (out / "accuracy_by_subtask.png").stat().st_size > 1000
    assert (out / "turns_histogram.png").stat().st_size > 1000
    # Each tools task asked the model with the same system prompt (shared library list).
    systems = {r.body["messages"][0]["content"] for r in server.chat_requests if not is_baseline(r.body)}
    assert len(systems) == 1


def printed(out: Path, record: dict) -> str:
    transcript = json.loads((out / record["transcript"]).read_text())
    return "".join(o.get("text", "") for o in transcript["turns"][0]["outputs"])


def test_kernels_are_reset_between_tasks_and_restarted_after_a_timeout(make_chat_server, env, image_path, tmp_path):
    check = "import os\nprint('leak' if 'secret' in globals() else 'clean', os.getcwd() != '/tmp', 'pid', os.getpid())"
    codes = {
        "a": "secret = 42\nimport os\nos.chdir('/tmp')\nopen('left.txt', 'w').close()\nprint('pid', os.getpid())",
        "c": check,
        "b": "import time\ntime.sleep(60)",
        "d": check,
    }

    def step(body):
        task = task_of(body)
        if sum(m["role"] == "assistant" for m in body["messages"]) == 0:
            return code_reply(codes[task])
        feedback = json.dumps(body["messages"][-1]["content"])
        return "<answer>1</answer>" if "clean True" in feedback or task == "a" else "<answer>0</answer>"

    server = make_chat_server(default=step)
    tasks, out = write_tasks(tmp_path, image_path, ids=list(codes)), tmp_path / "results"
    assert main(eval_args(server, tasks, out, "--concurrency", "1", "--task-timeout", "4")) == 0
    by = {r["id"]: r for r in records(out)}
    assert by["b"]["status"] == "timeout" and not by["b"]["correct"]
    # c ran in a's kernel, reset: same process, clean namespace and directory.
    assert by["c"]["correct"] and by["d"]["correct"], (by["c"], by["d"])
    pid = {k: printed(out, by[k]).split("pid ")[1].split()[0] for k in "acd"}
    assert pid["a"] == pid["c"], "the kernel is reused between tasks"
    assert pid["d"] != pid["a"], "a kernel whose task timed out is restarted"


def test_token_budget_stops_cleanly_and_resume_finishes(make_chat_server, env, image_path, tmp_path, capsys):
    server = make_chat_server(default=scripted(tokens=100))
    tasks, out = write_tasks(tmp_path, image_path, ids=["t0", "t1", "t2", "t4", "t5"]), tmp_path / "results"
    args = eval_args(server, tasks, out, "--concurrency", "1")
    assert main(args + ["--token-budget", "450"]) == 1
    err = capsys.readouterr().err
    assert "Token budget of 450 reached (500 used); 3 tasks not run" in err
    assert [r["id"] for r in records(out)] == ["t0", "t1"]
    # The folder's budget is spent: the same command runs nothing more.
    before = len(server.chat_requests)
    assert main(args + ["--token-budget", "450"]) == 1
    assert len(server.chat_requests) == before
    assert main(args + ["--token-budget", "5000"]) == 0
    assert sorted(r["id"] for r in records(out)) == ["t0", "t1", "t2", "t4", "t5"]
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["tools"]["n"] == 5 and report["overall"]["tools"]["total_tokens"] == 1000


def test_auth_failure_stops_the_run_with_one_line(make_chat_server, env, image_path, tmp_path, capsys):
    server = make_chat_server(default=HTTPError(401, "bad key"))
    tasks, out = write_tasks(tmp_path, image_path), tmp_path / "results"
    assert main(eval_args(server, tasks, out, "--baseline", "--concurrency", "2")) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused the API key" in err[0]
    assert not (out / "results.jsonl").exists() or records(out) == []
    assert len(server.chat_requests) <= 2  # one per worker, then the run stopped


def run_cli(server, tasks, out, *extra):
    env = {**os.environ, "OPENAI_API_KEY": "test-key", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "pyvision_magic", *eval_args(server, tasks, out, *extra)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_records(out: Path, n: int, proc, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if (out / "results.jsonl").exists() and len(records(out)) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} results after {limit} s")


def test_resume_after_ctrl_c_and_after_a_kill_without_duplicates_or_losses(make_chat_server, image_path, tmp_path,
                                                                          env):
    ids = [f"r{i}" for i in range(10)]
    server = make_chat_server(default=scripted(delay=0.3))
    tasks, out = write_tasks(tmp_path, image_path, ids=ids), tmp_path / "results"

    proc = run_cli(server, tasks, out, "--concurrency", "2")
    wait_for_records(out, 2, proc)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: in-flight tasks are stopped, not recorded
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "rerun the same command to finish" in err
    first = records(out)
    assert 2 <= len(first) < 10

    proc = run_cli(server, tasks, out, "--concurrency", "2", "--baseline")
    wait_for_records(out, len(first) + 3, proc)
    proc.kill()  # no chance to clean up: whatever was written must survive
    proc.communicate(timeout=30)
    second = records(out)
    assert second[: len(first)] == first

    assert main(eval_args(server, tasks, out, "--concurrency", "2", "--baseline")) == 0
    final = records(out)
    keys = [(r["id"], r["mode"]) for r in final]
    assert len(keys) == len(set(keys)) == 20, "every (task, mode) exactly once"
    assert final[: len(second)] == second
    assert all(r["correct"] for r in final)  # scripted() answers 1 = the answer of unknown ids


def test_one_model_for_several_runs_is_released_after_each(make_chat_server, env, image_path, tmp_path):
    """From Python: the runner releases the model's connections at the end of each run.

    Left to the garbage collector on the run loop, which outlives the run, they would
    be closed behind the loop's back (CPython issue 88968); the model reconnects.
    """
    from pyvision_magic._model import OpenAIModel
    from pyvision_magic.eval.runner import EvalRunner
    from pyvision_magic.eval.tasks import load_tasks

    server = make_chat_server(default=scripted())
    tasks = load_tasks(write_tasks(tmp_path, image_path, ids=["t0", "t1", "t4"]))
    model = OpenAIModel(base_url=server.base_url, model="test-model")
    for run in range(2):
        summary = EvalRunner(tasks, model, tmp_path / f"out{run}", modes=["baseline"],
                             concurrency=3).run()
        assert summary.ran == 3 and model._client is None
        assert sorted((r["id"], r["correct"]) for r in summary.records) == [
            ("t0", False), ("t1", True), ("t4", False)]
    assert len(server.chat_requests) == 6
