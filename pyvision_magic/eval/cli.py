"""The ``pyvision tasks`` and ``pyvision eval`` commands.

``pyvision tasks blind --out DIR --n N --seed S``  generate offline blind tasks.
``pyvision tasks convert BENCH SRC --out FILE``    convert a downloaded benchmark.
``pyvision tasks check FILE``                       validate a task file.
``pyvision eval TASKS.jsonl --out DIR [...]``       run, score and report.
``pyvision report DIR``                             rebuild the report of a results folder.

Exit codes of ``eval``: 0 every task finished, 1 the run stopped early (token
budget or Ctrl-C; rerun to resume), 2 bad usage, 3 the endpoint refused the key
or the model. A task whose kernel or endpoint failed is recorded as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from .._console import plural
from .._errors import ConfigError
from ..cli import add_prompt_options, make_model
from ..cli import positive_int as _count
from ..cli import positive_seconds as _seconds

__all__ = ["add_eval_commands", "Progress"]


def add_eval_commands(sub: Any) -> None:
    """Add ``tasks``, ``eval`` and ``report`` to the ``pyvision`` subcommands."""
    from .blind import ALL_FAMILIES, BLIND_FAMILIES, VIDEO_FAMILIES
    from .converters import CONVERTERS

    tasks = sub.add_parser("tasks", help="make task files: offline blind tasks, or convert a benchmark")
    tsub = tasks.add_subparsers(dest="tasks_command", metavar="KIND", parser_class=type(tasks))
    tasks.set_defaults(handler=_tasks_help, tasks_parser=tasks)

    blind = tsub.add_parser("blind", help="generate 'VLMs are blind' style tasks with exact answers")
    blind.add_argument("--out", required=True, metavar="DIR", help="folder for tasks.jsonl and images/")
    blind.add_argument("--n", type=_count, default=10, help="tasks per family (default: 10)")
    blind.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    blind.add_argument("--family", action="append", choices=ALL_FAMILIES, metavar="FAMILY",
                       help=f"only this family (repeatable): {', '.join(BLIND_FAMILIES)}; "
                       f"video clips (only when named): {', '.join(VIDEO_FAMILIES)}")
    blind.set_defaults(handler=_blind)

    convert = tsub.add_parser("convert", help="convert a downloaded benchmark (see docs/evaluation.md)")
    convert.add_argument("benchmark", choices=sorted(CONVERTERS), help="which benchmark")
    convert.add_argument("source", help="the benchmark's local folder")
    convert.add_argument("--out", required=True, metavar="FILE", help="task file to write (.jsonl)")
    convert.add_argument("--limit", type=_count, help="convert only the first N questions")
    convert.set_defaults(handler=_convert)

    check = tsub.add_parser("check", help="validate a task file and count its tasks")
    check.add_argument("file", help="task file (.jsonl)")
    check.set_defaults(handler=_check)

    ev = sub.add_parser("eval", help="run a task file with tools (and --baseline without) and report")
    ev.add_argument("tasks", help="task file (.jsonl)")
    add_prompt_options(ev)
    ev.add_argument("--out", required=True, metavar="DIR",
                    help="results folder; rerunning with the same folder resumes")
    ev.add_argument("--model", help="model name (default: gpt-4.1 or $PYVISION_MODEL)")
    ev.add_argument("--base-url", help="OpenAI-compatible endpoint ending in /v1 (default: $OPENAI_BASE_URL)")
    ev.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                    help="environment variable holding the API key (default: OPENAI_API_KEY)")
    mode = ev.add_mutually_exclusive_group()
    mode.add_argument("--baseline", action="store_true",
                      help="also run the model without tools, for the delta column")
    mode.add_argument("--baseline-only", action="store_true", help="run only without tools (no kernels)")
    ev.add_argument("--concurrency", type=_count, default=4, help="tasks at once (default: 4)")
    ev.add_argument("--max-turns", type=_count, default=10, help="most model replies per task (default: 10)")
    ev.add_argument("--tool-timeout", type=_seconds, default=60.0, help="seconds per tool (default: 60)")
    ev.add_argument("--task-timeout", type=_seconds, default=600.0,
                    help="seconds per task; slower tasks count as wrong (default: 600)")
    ev.add_argument("--token-budget", type=_count, metavar="TOKENS",
                    help="stop once the results folder has used this many tokens in all")
    ev.add_argument("--gateway", metavar="URL",
                    help="run the tools on the Jupyter Kernel Gateway at URL (token from "
                    "$PYVISION_GATEWAY_TOKEN; see docs/remote_kernels.md)")
    ev.add_argument("--retry-errors", action="store_true", help="run again tasks that ended in an error")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(handler=_eval)

    rep = sub.add_parser("report", help="rebuild report.md, report.json and plots of a results folder")
    rep.add_argument("results", metavar="DIR", help="results folder written by 'pyvision eval'")
    rep.set_defaults(handler=_report)


async def _tasks_help(args: argparse.Namespace) -> int:
    args.tasks_parser.print_help(sys.stderr)
    return 2


async def _blind(args: argparse.Namespace) -> int:
    from .blind import generate_blind_tasks

    tasks = generate_blind_tasks(args.out, args.n, args.seed, args.family)
    sys.stderr.write(f"wrote {len(tasks)} tasks to {os.path.join(args.out, 'tasks.jsonl')}\n")
    return 0


async def _convert(args: argparse.Namespace) -> int:
    from .converters import convert

    tasks = convert(args.benchmark, args.source, args.out, limit=args.limit)
    sys.stderr.write(f"wrote {len(tasks)} tasks to {args.out}\n")
    return 0


async def _check(args: argparse.Namespace) -> int:
    from collections import Counter

    from .tasks import load_tasks

    tasks = load_tasks(args.file)
    kinds = Counter(t.answer_type for t in tasks)
    sys.stdout.write(f"{args.file}: {len(tasks)} valid tasks ("
                     + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")\n")
    return 0


class Progress:
    """A progress bar on stderr (tqdm), with the running accuracy per mode."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.right: dict[str, list[int]] = {}

    def start(self, total: int, skipped: int) -> None:
        if skipped:
            self.stream.write(f"resuming: {plural(skipped, 'finished task')} skipped\n")
        try:
            from tqdm import tqdm
        except ImportError:  # a plain counter when tqdm is missing
            self.bar = None
            self.total, self.done = total, 0
            return
        self.bar = tqdm(total=total, file=self.stream, unit="task", dynamic_ncols=True)

    def update(self, record: dict[str, Any]) -> None:
        counts = self.right.setdefault(record["mode"], [0, 0])
        counts[0] += bool(record.get("correct"))
        counts[1] += 1
        text = " ".join(f"{m} {100 * c / n:.0f}%" for m, (c, n) in sorted(self.right.items()))
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        else:
            self.done += 1
            self.stream.write(f"\r{self.done}/{self.total} tasks  {text}")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.right:
            self.stream.write("\n")


async def _eval(args: argparse.Namespace) -> int:
    from .report import write_report
    from .runner import EvalRunner
    from .tasks import load_tasks

    tasks = load_tasks(args.tasks)
    modes = ["baseline"] if args.baseline_only else ["tools"] + (["baseline"] if args.baseline else [])
    model = make_model(args)
    runner = EvalRunner(
        tasks, model, args.out, modes=modes, progress=None if args.quiet else Progress(),
        concurrency=args.concurrency, max_turns=args.max_turns, tool_timeout=args.tool_timeout,
        task_timeout=args.task_timeout, token_budget=args.token_budget, retry_errors=args.retry_errors,
        prompt_profile=args.prompt_profile, system_prompt_file=args.system_prompt,
        gateway_url=args.gateway,
    )
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt
        sys.stderr.write("\nstopping: finished tasks are saved (Ctrl-C again to quit now)\n")
        runner.stop("interrupted")

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
        pass
    try:
        summary = await runner._async_run()
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError):
            pass
        await model.aclose()
    report = write_report(summary.records, args.out, model=model.name)
    if not args.quiet:
        overall = report["overall"]
        line = ", ".join(f"{m} {overall[m]['accuracy']:.1f} %" for m in report["modes"])
        if "delta" in report:
            line += f" (delta {report['delta']:+.1f} points)"
        sys.stderr.write(f"accuracy: {line}; report in {os.path.join(args.out, 'report.md')}\n")
    if summary.stopped:
        sys.stderr.write(f"pyvision: {summary.message}\n")
        return 1
    return 0


async def _report(args: argparse.Namespace) -> int:
    from ._results import ResultsStore, read_results
    from .report import render_markdown, write_report

    records = list(read_results(args.results).values())
    if not records:
        raise ConfigError(f"{args.results} has no results.jsonl with results; run 'pyvision eval' first.")
    model = ResultsStore(args.results).read_settings().get("model", "")
    sys.stdout.write(render_markdown(write_report(records, args.results, model=model)))
    return 0
