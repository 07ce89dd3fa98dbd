"""Run every benchmark, print one table and write it as JSON.

    python -m benchmarks [--quick] [--only NAME ...] [--json PATH]

Each module in this folder exposes ``run(quick) -> list[dict]`` with rows
``{"figure", "ours", "baseline", "ratio", "goal"}``; baselines are measured in the
same run, because absolute timings on shared machines are noise. A benchmark that
fails is reported as a row with its error, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from _table import format_rows  # noqa: E402

#: In the order of the figures in the README's performance section.
BENCHMARKS = [
    "load_time",
    "session_overhead",
    "session_view",
    "kernel_overhead",
    "kernel_libraries",
    "image_bytes",
    "tokens",
    "video_input",
    "tool_images",
    "eval_throughput",
    "gateway",
    "notebook_size",
    "memory",
    "real_replies",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small versions (a smoke test)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "latest.json"),
                        help="where to write the rows (default: benchmarks/results/latest.json)")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    failed = False
    for name in args.only or BENCHMARKS:
        started = time.perf_counter()
        try:
            module = importlib.import_module(name)
            for row in module.run(args.quick):
                rows.append({"benchmark": name, **row})
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            rows.append({"benchmark": name, "figure": f"{name}: not available yet"})
        except Exception as exc:  # report and go on: one broken figure must not hide the others
            failed = True
            traceback.print_exc()
            rows.append({"benchmark": name, "figure": f"{name} FAILED: {exc}"})
        print(f"[{name}: {time.perf_counter() - started:.1f} s]", file=sys.stderr)
    print(format_rows(rows))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"quick": args.quick, "python": platform.python_version(), "cpus": os.cpu_count(),
                   "rows": rows}, f, indent=1)
    print(f"written to {args.json}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
