"""The report's paired comparison of the two modes, task by task."""

from __future__ import annotations

import math

from pyvision_magic.eval.report import build_report, mcnemar_p, render_markdown


def _records(outcomes: dict[str, tuple[bool | None, bool | None]], bench: str = "b") -> list[dict]:
    """``{task id: (tools right, baseline right)}``; None leaves that mode unrecorded."""
    records = []
    for task, (tools, baseline) in outcomes.items():
        for mode, right in (("tools", tools), ("baseline", baseline)):
            if right is not None:
                records.append({"id": task, "mode": mode, "correct": right, "benchmark": bench,
                                "status": "answered", "turns": 2})
    return records


def test_paired_counts_delta_and_exact_p_value():
    outcomes = {f"t{i}": (True, False) for i in range(6)}          # tools only: 6
    outcomes |= {"u0": (False, True)}                                # baseline only: 1
    outcomes |= {"both0": (True, True), "both1": (True, True)}       # both: 2
    outcomes |= {"none0": (False, False)}                            # neither: 1
    outcomes |= {"tools-only-run": (True, None), "base-only-run": (None, False)}  # not pairs
    report = build_report(_records(outcomes))
    paired = report["paired"]["overall"]
    assert paired == {"pairs": 10, "both_right": 2, "tools_only": 6, "baseline_only": 1,
                      "neither": 1, "delta": 50.0, "p_value": 0.125}
    # 7 discordant pairs split 6:1: P = 2 * (C(7,0) + C(7,1)) / 2^7.
    assert math.isclose(mcnemar_p(6, 1), 2 * (1 + 7) / 128)
    # The unpaired accuracy counts every recorded task; the paired one only pairs.
    assert report["overall"]["tools"]["n"] == 11 and report["overall"]["baseline"]["n"] == 11
    markdown = render_markdown(report)
    assert "## Paired comparison" in markdown and "| **all** | 10 | 2 | 6 | 1 | 1 | +50.0 | 0.125 |" in markdown


def test_paired_per_benchmark_and_edge_cases():
    records = _records({"a": (True, True), "b": (False, False)}, bench="same")
    records += _records({"c": (True, False)}, bench="one-sided")
    paired = build_report(records)["paired"]
    assert paired["benchmarks"]["same"]["p_value"] == 1.0  # no discordant pair: no evidence
    assert paired["benchmarks"]["same"]["delta"] == 0.0
    assert paired["benchmarks"]["one-sided"] == {"pairs": 1, "both_right": 0, "tools_only": 1,
                                                 "baseline_only": 0, "neither": 0, "delta": 100.0,
                                                 "p_value": 1.0}
    assert mcnemar_p(10, 0) == 2 / 1024 and mcnemar_p(5, 5) == 1.0


def test_no_paired_section_with_one_mode():
    report = build_report(_records({"a": (True, None), "b": (False, None)}))
    assert "paired" not in report and "Paired comparison" not in render_markdown(report)


def test_cached_tokens_are_summed_and_reported():
    records = _records({"a": (True, True), "b": (False, True)})
    usage = {"prompt_tokens": 900, "completion_tokens": 100, "total_tokens": 1000}
    for r, cached in zip(records, (512, 0, 256, None)):
        # The last is a record written before cached tokens were counted.
        r["tokens"] = usage if cached is None else {**usage, "cached_tokens": cached}
    report = build_report(records)
    assert report["overall"]["tools"]["cached_tokens"] == 768
    assert report["overall"]["baseline"]["cached_tokens"] == 0
    assert report["overall"]["tools"]["total_tokens"] == 2000
    assert "Tokens: baseline 2000, tools 2000 (768 cached)." in render_markdown(report)
