"""Whole sessions on a real Jupyter Kernel Gateway: ``pyvision eval --gateway``,
``pyvision ask --gateway`` and ``%%pyvision --gateway``, with the loopback chat
server as the model. Each tool prints a variable only the gateway's kernels have,
so the model's next request proves where the tool ran.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from IPython.core.error import UsageError

from conftest import code_reply
from gateway_server import WHERE_VARIABLE, gateway  # noqa: F401 (fixture)
from test_magics import shell  # noqa: F401 (fixture)

from pyvision_magic.cli import main

TOOL = f"import os; print('where', os.environ.get({WHERE_VARIABLE!r}), image_clue_0.size)"


def tool_then_answer(body: dict) -> str:
    """First turn: run the tool; then answer with the task's number, found in the question."""
    if not any(m["role"] == "assistant" for m in body["messages"]):
        return code_reply(TOOL + "; print('kernel', os.getpid())")
    number = re.search(r"Question (\d+):", json.dumps(body["messages"])).group(1)
    return f"<answer>{number}</answer>"


def tool_outputs_seen(server) -> list[str]:
    return [text for request in server.chat_requests for text in
            re.findall(r"where [\w-]+ \(\d+, \d+\)", json.dumps(request.body["messages"]))]


@pytest.fixture
def env(monkeypatch, no_openai_env, gateway):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("PYVISION_GATEWAY_TOKEN", gateway.token)


def test_eval_spreads_tasks_over_gateway_kernels(make_chat_server, env, gateway, image_path, tmp_path):
    server = make_chat_server(default=tool_then_answer)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({
        "id": f"t{i}", "question": f"Question {i}: how many?", "images": [str(image_path)],
        "answer": str(i)}) + "\n" for i in range(12)))
    out = tmp_path / "results"
    before = set(gateway.kernel_ids())
    assert main(["eval", str(tasks), "--out", str(out), "--base-url", server.base_url, "--model",
                 "m", "-q", "--gateway", gateway.url, "--concurrency", "8"]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(f"t{i}" for i in range(12))
    wrong = [{k: r.get(k) for k in ("id", "answer", "prediction", "error", "status")}
             for r in records if not r["correct"]]
    assert not wrong, f"{wrong}\nThe gateway's log:\n{gateway.log_tail()}"
    seen = tool_outputs_seen(server)
    assert len(seen) >= 12 and set(seen) == {"where on-the-gateway (120, 80)"}
    kernels = {pid for request in server.chat_requests
               for pid in re.findall(r"kernel (\d+)", json.dumps(request.body["messages"]))}
    assert len(kernels) >= 2, "the tasks were spread over several gateway kernels"
    assert set(gateway.kernel_ids()) == before  # every kernel of the run was deleted
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["tools"]["accuracy"] == 100.0


def test_ask_runs_the_tools_on_the_gateway(make_chat_server, env, gateway, image_path, capsys):
    server = make_chat_server([code_reply(TOOL), "<answer>7</answer>"])
    assert main(["ask", "-i", str(image_path), "--base-url", server.base_url,
                 "--gateway", gateway.url, "how many?"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == "7"
    assert f"tools run on the gateway at {gateway.url}" in captured.err
    assert tool_outputs_seen(server) == ["where on-the-gateway (120, 80)"]


def test_ask_refuses_sandbox_options_with_a_gateway(capsys, image_path):
    assert main(["ask", "-i", str(image_path), "--gateway", "http://127.0.0.1:9",
                 "--sandbox", "q"]) == 2
    assert "apply to local kernels" in capsys.readouterr().err


def test_magic_cell_runs_the_tools_on_the_gateway(shell, make_chat_server, env, gateway, image_path):
    server = make_chat_server([code_reply(TOOL), "<answer>3</answer>", "<answer>5</answer>"])
    shell.run_cell_magic("pyvision", f"-i {image_path} --gateway {gateway.url} --base-url "
                         f"{server.base_url} -o r", "how many?")
    r = shell.user_ns["r"]
    assert r.answer == "3" and type(r.kernel).__name__ == "GatewayKernel"
    assert r.transcript.turns[0].outputs[0].text == "where on-the-gateway (120, 80)\n"
    assert r.kernel.kernel_id in gateway.kernel_ids()  # kept for Run, until unloaded
    # Run and Fork from the view stay on the gateway.
    assert r.rerun(0, TOOL.replace("'where'", "'rerun'")).outputs[0].text.startswith(
        "rerun on-the-gateway")
    fork = r.fork(0, TOOL.replace("'where'", "'fork'"))
    assert fork.answer == "5" and type(fork.kernel).__name__ == "GatewayKernel"
    assert fork.transcript.turns[0].outputs[0].text == "fork on-the-gateway (120, 80)\n"
    assert fork.kernel.kernel_id != r.kernel.kernel_id


def test_magic_with_a_refused_token_is_a_one_line_usage_error(shell, env, gateway, image_path,
                                                              monkeypatch):
    monkeypatch.setenv("PYVISION_GATEWAY_TOKEN", "wrong")
    with pytest.raises(UsageError, match="refused the token") as caught:
        shell.run_cell_magic("pyvision", f"-i {image_path} --gateway {gateway.url} "
                             "--base-url http://127.0.0.1:9/v1", "how many?")
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="apply to local kernels"):
        shell.run_cell_magic("pyvision", f"-i {image_path} --gateway {gateway.url} --no-sandbox",
                             "how many?")


def test_the_option_is_in_every_help(shell, capsys):
    assert "--gateway URL" in shell.find_cell_magic("pyvision").__doc__
    for command in ("ask", "eval"):
        assert main([command, "--help"]) == 0
        assert "--gateway URL" in capsys.readouterr().out


def test_configured_gateway_fills_the_notebooks_pool(shell, make_chat_server, env, gateway,
                                                     image_path):
    shell.run_line_magic("config", f"PyVision.gateway_url = {gateway.url!r}")
    shell.run_line_magic("config", "PyVision.use_pool = True")
    try:
        _pool_on_the_gateway(shell, make_chat_server, gateway, image_path)
    finally:  # the shell is a process-wide singleton: later tests must not inherit these
        shell.run_line_magic("config", "PyVision.gateway_url = None")
        shell.run_line_magic("config", "PyVision.use_pool = False")


def _pool_on_the_gateway(shell, make_chat_server, gateway, image_path):
    server = make_chat_server([code_reply(TOOL), "<answer>4</answer>"])
    shell.run_cell_magic("pyvision", f"-i {image_path} --base-url {server.base_url} -o r", "q")
    r = shell.user_ns["r"]
    assert r.answer == "4", f"{r.transcript.error}; the gateway's log:\n{gateway.log_tail()}"
    assert type(r.kernel).__name__ == "GatewayKernel"
    assert r.transcript.turns[0].outputs[0].text == "where on-the-gateway (120, 80)\n"
    pool = shell.magics_manager.registry["PyVisionMagics"].workspace._pool
    assert pool.gateway_url == gateway.url
    # The pool starts a spare kernel on the gateway for the next cell.
    deadline = time.monotonic() + 30
    while pool.ready < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pool.ready == 1 and len(gateway.kernel_ids()) >= 2
