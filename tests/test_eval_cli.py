"""`pyvision tasks`, `pyvision eval` usage errors and `pyvision report`."""

from __future__ import annotations

import json

import pytest

from pyvision_magic.cli import main


def test_tasks_blind_check_and_report(tmp_path, capsys):
    assert main(["tasks", "blind", "--out", str(tmp_path / "b"), "--n", "1", "--seed", "3",
                 "--family", "grid", "--family", "subway"]) == 0
    assert "wrote 2 tasks" in capsys.readouterr().err
    assert main(["tasks", "check", str(tmp_path / "b" / "tasks.jsonl")]) == 0
    assert "2 valid tasks (2 integer)" in capsys.readouterr().out

    results = tmp_path / "r"
    results.mkdir()
    rows = [{"id": "a", "mode": "tools", "benchmark": "x", "subtask": "s", "status": "answered", "correct": True,
             "turns": 3, "tokens": {"total_tokens": 10}, "seconds": 1.0,
             "tools": [{"primary": "basic"}, {"primary": "sketching"}]},
            {"id": "a", "mode": "baseline", "benchmark": "x", "subtask": "s", "status": "answered",
             "correct": False, "turns": 1, "tokens": {"total_tokens": 4}, "seconds": 0.5}]
    (results / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn')
    assert main(["report", str(results)]) == 0
    out = capsys.readouterr().out
    assert "| x | **all** | 1 | 0.0 | 1 | 100.0 | +100.0 | 3.00 |" in out
    assert "| x | 0 (0 %) | 0 (0 %) | 0 (0 %) | 0 (0 %) | 0 (0 %) | 0 |" not in out
    assert "| x | 1 (50 %) | 0 (0 %) | 1 (50 %) | 0 (0 %) | 0 (0 %) | 2 |" in out


@pytest.mark.parametrize("argv, message", [
    (["eval", "missing.jsonl", "--out", "r", "--base-url", "http://127.0.0.1:9/v1"], "Task file not found"),
    (["tasks", "blind", "--out", "x", "--n", "0"], "--n: must be at least 1"),
    (["tasks", "blind", "--out", "x", "--family", "hexagons"], "invalid choice: 'hexagons'"),
    (["eval", "t.jsonl", "--out", "r", "--concurrency", "0"], "--concurrency: must be at least 1"),
    (["eval", "t.jsonl", "--out", "r", "--baseline", "--baseline-only"], "not allowed with argument"),
    (["tasks", "convert", "mmmu", "nowhere", "--out", "o.jsonl"], "does not exist; download the benchmark"),
    (["report", "nowhere"], "has no results.jsonl"),
])
def test_usage_errors_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch, no_openai_env):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_eval_without_a_key_says_what_to_set(tmp_path, capsys, no_openai_env):
    assert main(["tasks", "blind", "--out", str(tmp_path), "--n", "1", "--family", "grid"]) == 0
    assert main(["eval", str(tmp_path / "tasks.jsonl"), "--out", str(tmp_path / "r")]) == 2
    assert "No API key: set $OPENAI_API_KEY" in capsys.readouterr().err


def test_results_of_another_model_are_not_mixed(chat_server, tmp_path, capsys, monkeypatch, no_openai_env):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    chat_server.default = "<answer>1</answer>"
    assert main(["tasks", "blind", "--out", str(tmp_path), "--n", "1", "--family", "grid"]) == 0
    args = ["eval", str(tmp_path / "tasks.jsonl"), "--out", str(tmp_path / "r"), "--baseline-only", "-q",
            "--base-url", chat_server.base_url]
    assert main(args + ["--model", "one"]) == 0
    assert main(args + ["--model", "two"]) == 2
    assert "holds results of model 'one', not 'two'" in capsys.readouterr().err


def test_eval_with_the_pyvision_format_profile(chat_server, tmp_path, monkeypatch, capsys,
                                               no_openai_env):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    chat_server.default = "<answer>\\boxed{'1'}</answer>"
    assert main(["tasks", "blind", "--out", str(tmp_path), "--n", "1", "--family", "grid"]) == 0
    bad = tmp_path / "bad.txt"
    bad.write_text("{{nope}}")
    args = ["eval", str(tmp_path / "tasks.jsonl"), "--out", str(tmp_path / "r"), "-q",
            "--base-url", chat_server.base_url, "--prompt-profile", "pyvision-format"]
    assert main(args + ["--system-prompt", str(bad)]) == 2
    assert not chat_server.chat_requests, "a bad template stops the run before any request"
    assert main(args) == 0
    [message] = chat_server.chat_requests[0].body["messages"]
    assert message["role"] == "user" and message["content"][0]["text"] == "<image_clue_0>"
    [row] = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert (row["prediction"], row["extracted"]) == ("1", "1")
    assert main(args[:-1] + ["default"]) == 2, "one folder holds the results of one profile"
    assert "holds results of prompt_profile 'pyvision-format', not 'default'" in capsys.readouterr().err
