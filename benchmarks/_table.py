"""Printing benchmark rows, shared by ``python -m benchmarks`` and each script run alone."""

from __future__ import annotations

import argparse
from collections.abc import Callable

COLUMNS = ["figure", "ours", "baseline", "ratio", "goal"]


def needs(module: str, figure: str, install: str | None = None) -> dict | None:
    """A row saying ``figure`` was skipped when ``module`` is not installed, else None.

    Some figures need a tool the package itself does not (nbclient to run a notebook):
    on a plain install they are skipped with the command that adds it, not failed.
    """
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return None
    return {"figure": f"{figure}: skipped, needs {module} (pip install {install or module})",
            "ours": None, "baseline": None, "ratio": None, "goal": "", "skipped": True}


def format_rows(rows: list[dict]) -> str:
    """The rows as an aligned text table (floats to 4 significant digits)."""

    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value if value is not None else "")

    table = [[cell(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(COLUMNS)]

    def line(cells: list[str]) -> str:
        return " | ".join(text.ljust(width) for text, width in zip(cells, widths))

    return "\n".join([line(COLUMNS), "-+-".join("-" * w for w in widths), *map(line, table)])


def standalone(run: Callable[[bool], list[dict]], doc: str | None, argv: list[str] | None = None) -> int:
    """Entry point of a benchmark script: ``--quick``, run, print the table."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller, faster version")
    print(format_rows(run(parser.parse_args(argv).quick)))
    return 0
