"""The report of a run: accuracy per benchmark and sub-task, with tools and without.

:func:`build_report` turns result records into a JSON-ready dict;
:func:`write_report` saves it as ``report.json`` and ``report.md`` with two plots
(``accuracy_by_subtask.png``, ``turns_histogram.png``) in the results folder.

Per row (a benchmark, and each of its sub-tasks) and mode:
``n`` tasks recorded, ``correct``, ``accuracy`` (errors and timeouts count as
wrong), ``mean_turns``, ``mean_tokens`` (prompt + completion per task),
``total_tokens``, ``cached_tokens`` (the part of the prompt tokens the endpoint
read from its prompt cache, in all; 0 where it reports none), ``mean_seconds``, ``errors``, ``timeouts``; ``delta`` is tools minus baseline
accuracy, in points, when both modes ran.

``paired`` (when both modes ran) compares the two answers of each task that
has both, overall and per benchmark: how many tasks both modes got right, only
tools, only the baseline, neither; the delta over those tasks; and the exact
two-sided McNemar p-value (a binomial test on the tasks where the modes
disagree), i.e. how likely a split at least this lopsided is if tools made no
difference.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .taxonomy import CATEGORIES

__all__ = ["build_report", "write_report", "render_markdown"]

ALL = ""  # the sub-task name of a benchmark's total row


def _stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    correct = sum(bool(r.get("correct")) for r in records)
    tokens = [int((r.get("tokens") or {}).get("total_tokens", 0)) for r in records]
    # Records written before cached tokens were counted lack them: they count 0.
    cached = [int((r.get("tokens") or {}).get("cached_tokens") or 0) for r in records]

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 3) if values else 0.0

    return {
        "n": n,
        "correct": correct,
        "accuracy": round(100.0 * correct / n, 2) if n else 0.0,
        "mean_turns": mean([float(r.get("turns") or 0) for r in records]),
        "mean_tokens": mean([float(t) for t in tokens]),
        "total_tokens": sum(tokens),
        "cached_tokens": sum(cached),
        "mean_seconds": mean([float(r.get("seconds") or 0) for r in records]),
        "errors": sum(r.get("status") == "error" for r in records),
        "timeouts": sum(r.get("status") == "timeout" for r in records),
    }


def _tokens(mode: str, stats: dict[str, Any]) -> str:
    cached = stats.get("cached_tokens") or 0
    return f"{mode} {stats['total_tokens']}" + (f" ({cached} cached)" if cached else "")


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value for ``only_a`` and ``only_b`` discordant pairs."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _paired(records: list[dict[str, Any]]) -> dict[str, Any]:
    right: dict[str, dict[str, bool]] = defaultdict(dict)
    for r in records:
        right[r["id"]][r["mode"]] = bool(r.get("correct"))
    pairs = [v for v in right.values() if len(v) == 2]
    both = sum(v["tools"] and v["baseline"] for v in pairs)
    tools_only = sum(v["tools"] and not v["baseline"] for v in pairs)
    baseline_only = sum(v["baseline"] and not v["tools"] for v in pairs)
    return {
        "pairs": len(pairs),
        "both_right": both,
        "tools_only": tools_only,
        "baseline_only": baseline_only,
        "neither": len(pairs) - both - tools_only - baseline_only,
        "delta": round(100.0 * (tools_only - baseline_only) / len(pairs), 2) if pairs else 0.0,
        "p_value": round(mcnemar_p(tools_only, baseline_only), 4),
    }


def build_report(records: Iterable[dict[str, Any]], *, model: str = "") -> dict[str, Any]:
    """Summarise result records (one per task id and mode) into the report dict."""
    records = list(records)
    modes = [m for m in ("baseline", "tools") if any(r.get("mode") == m for r in records)]
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        bench = r.get("benchmark") or "tasks"
        groups[(bench, ALL)][r["mode"]].append(r)
        if r.get("subtask"):
            groups[(bench, r["subtask"])][r["mode"]].append(r)
    overall = {m: _stats([r for r in records if r["mode"] == m]) for m in modes}
    rows = []
    for (bench, subtask) in sorted(groups, key=lambda k: (k[0], k[1] != ALL, k[1])):
        row: dict[str, Any] = {"benchmark": bench, "subtask": subtask}
        for mode in modes:
            row[mode] = _stats(groups[(bench, subtask)].get(mode, []))
        if len(modes) == 2:
            row["delta"] = round(row["tools"]["accuracy"] - row["baseline"]["accuracy"], 2)
        rows.append(row)
    taxonomy: dict[str, dict[str, int]] = {}
    turns: Counter[int] = Counter()
    for r in records:
        if r["mode"] != "tools":
            continue
        turns[int(r.get("turns") or 0)] += 1
        counts = taxonomy.setdefault(r.get("benchmark") or "tasks", {c: 0 for c in CATEGORIES})
        for tool in r.get("tools") or []:
            counts[tool.get("primary", "other")] = counts.get(tool.get("primary", "other"), 0) + 1
    report: dict[str, Any] = {
        "model": model,
        "modes": modes,
        "overall": overall,
        "rows": rows,
        "taxonomy": taxonomy,
        "turns_histogram": {str(k): turns[k] for k in sorted(turns)},
    }
    if len(modes) == 2:
        report["delta"] = round(overall["tools"]["accuracy"] - overall["baseline"]["accuracy"], 2)
        by_bench: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            by_bench[r.get("benchmark") or "tasks"].append(r)
        report["paired"] = {"overall": _paired(records),
                            "benchmarks": {b: _paired(rs) for b, rs in sorted(by_bench.items())}}
    return report


def _pct(value: float) -> str:
    return f"{value:.1f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    modes = report["modes"]
    title = f"# Evaluation of {report['model']}" if report.get("model") else "# Evaluation"
    lines = [title, ""]
    if not modes:
        return "\n".join(lines + ["No results yet.", ""])
    head = ["Benchmark", "Sub-task"]
    for mode in modes:
        head += [f"n ({mode})", f"Accuracy ({mode}) %"]
    if len(modes) == 2:
        head.append("Δ points")
    if "tools" in modes:
        head += ["Mean turns (tools)"]
    head += [f"Tokens/task ({m})" for m in modes] + [f"Time/task s ({m})" for m in modes]
    head += ["Errors", "Timeouts"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        cells = [row["benchmark"] if row["subtask"] == ALL else "", row["subtask"] or "**all**"]
        for mode in modes:
            cells += [str(row[mode]["n"]), _pct(row[mode]["accuracy"])]
        if len(modes) == 2:
            cells.append(f"{row['delta']:+.1f}")
        if "tools" in modes:
            cells.append(f"{row['tools']['mean_turns']:.2f}")
        cells += [f"{row[m]['mean_tokens']:.0f}" for m in modes]
        cells += [f"{row[m]['mean_seconds']:.2f}" for m in modes]
        cells += [str(sum(row[m]["errors"] for m in modes)), str(sum(row[m]["timeouts"] for m in modes))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    overall = report["overall"]
    summary = ", ".join(f"{m} {_pct(overall[m]['accuracy'])} % of {overall[m]['n']}" for m in modes)
    lines.append(f"Overall accuracy: {summary}" + (f"; delta {report['delta']:+.1f} points." if "delta" in report else "."))
    lines.append("Tokens: " + ", ".join(_tokens(m, overall[m]) for m in modes) + ".")
    if report.get("paired"):
        lines += ["", "## Paired comparison (tasks answered in both modes)", "",
                  "| Benchmark | Tasks | Both right | Tools only | Baseline only | Neither | Δ points "
                  "| McNemar p |", "|" + "---|" * 8]
        paired = report["paired"]
        for name, p in [*paired["benchmarks"].items(), ("**all**", paired["overall"])]:
            lines.append(f"| {name} | {p['pairs']} | {p['both_right']} | {p['tools_only']} | "
                         f"{p['baseline_only']} | {p['neither']} | {p['delta']:+.1f} | {p['p_value']:.3g} |")
        lines += ["", "McNemar p: the chance of a split between *tools only* and *baseline only* at "
                  "least this uneven if tools made no difference (exact binomial test)."]
    if report["taxonomy"]:
        lines += ["", "## Tools written, by category (primary category of each tool)", ""]
        cats = list(CATEGORIES)
        lines += ["| Benchmark | " + " | ".join(cats) + " | total |", "|" + "---|" * (len(cats) + 2)]
        for bench, counts in sorted(report["taxonomy"].items()):
            total = sum(counts.values())
            cells = [f"{counts.get(c, 0)} ({100 * counts.get(c, 0) / total:.0f} %)" if total else "0" for c in cats]
            lines.append(f"| {bench} | " + " | ".join(cells) + f" | {total} |")
    if report["turns_histogram"]:
        lines += ["", "## Turns per task (tools)", "",
                  "| Turns | " + " | ".join(report["turns_histogram"]) + " |",
                  "|" + "---|" * (len(report["turns_histogram"]) + 1),
                  "| Tasks | " + " | ".join(str(v) for v in report["turns_histogram"].values()) + " |"]
    lines += ["", "Plots: accuracy_by_subtask.png, turns_histogram.png.", ""]
    return "\n".join(lines)


def _plots(report: dict[str, Any], folder: Path) -> list[Path]:
    # A Figure with its own Agg canvas: no pyplot, so a notebook's backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    rows = [r for r in report["rows"] if r["subtask"] != ALL] or report["rows"]
    modes = report["modes"]
    if rows and modes:
        labels = [r["subtask"] or r["benchmark"] for r in rows]
        fig = Figure(figsize=(max(6, 0.9 * len(rows) + 2), 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        width = 0.8 / len(modes)
        for k, mode in enumerate(modes):
            xs = [i + (k - (len(modes) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, [r[mode]["accuracy"] for r in rows], width, label=mode)
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title("Accuracy by sub-task" + (f" ({report['model']})" if report.get("model") else ""))
        ax.legend()
        fig.tight_layout()
        path = folder / "accuracy_by_subtask.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    hist = report["turns_histogram"]
    if hist:
        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.bar([int(k) for k in hist], list(hist.values()), color="tab:orange")
        ax.set_xlabel("model turns per task (with tools)")
        ax.set_ylabel("tasks")
        ax.set_xticks([int(k) for k in hist])
        ax.set_title("Turns per task")
        fig.tight_layout()
        path = folder / "turns_histogram.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


def write_report(records: Iterable[dict[str, Any]], folder: str | os.PathLike[str], *,
                 model: str = "", plots: bool = True) -> dict[str, Any]:
    """Build the report and save ``report.json``, ``report.md`` and the plots in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = build_report(records, model=model)
    if plots:
        report["plots"] = [p.name for p in _plots(report, folder)]
    (folder / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report
