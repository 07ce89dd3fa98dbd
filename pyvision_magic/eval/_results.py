"""The results folder: ``results.jsonl`` appended per finished task, transcripts, run settings.

Layout::

    RESULTS_DIR/
      run.json                    settings of the run (model, task file, limits)
      results.jsonl               one line per finished (task id, mode), in finishing order
      transcripts/<mode>/<id>.json
      report.md, report.json, accuracy_by_subtask.png, turns_histogram.png

A line is written, flushed and synced only after the task's transcript is saved,
so an interrupted run loses at most the tasks that were in flight. A torn last
line (the process killed mid-write) is ignored on reading and fenced off with a
newline before the next append. When a (task id, mode) appears twice, the last
line wins.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .._errors import ConfigError

__all__ = ["ResultsStore", "read_results"]

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"


def read_results(path: str | os.PathLike[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The records of a results file (or folder), keyed by (task id, mode); last wins."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    records: dict[tuple[str, str], dict[str, Any]] = {}
    if not path.exists():
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by an interruption
            if isinstance(record, dict) and "id" in record and "mode" in record:
                records[(str(record["id"]), str(record["mode"]))] = record
    return records


def safe_name(task_id: str) -> str:
    """A file name for a task id (ids may hold slashes or spaces)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", task_id).strip("._") or "task"


class ResultsStore:
    """Appends results and saves transcripts in a results folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"Cannot create the results folder {self.folder}: {exc.strerror}.") from exc
        self.path = self.folder / RESULTS_FILE
        self._file: Any = None

    def load(self) -> dict[tuple[str, str], dict[str, Any]]:
        return read_results(self.path)

    def check_settings(self, settings: dict[str, Any], keys: tuple[str, ...] = ("model",)) -> None:
        """Refuse to mix runs: a folder with results of another model needs another --out."""
        run_file = self.folder / RUN_FILE
        if run_file.exists() and self.path.exists() and self.path.stat().st_size:
            try:
                old = json.loads(run_file.read_text(encoding="utf-8"))
            except ValueError:
                old = {}
            for key in keys:
                if key in old and old[key] != settings.get(key):
                    raise ConfigError(
                        f"{self.folder} holds results of {key} {old[key]!r}, not {settings.get(key)!r}; "
                        "use another --out folder, or the same settings to resume."
                    )
        self.write_settings({**self.read_settings(), **settings})

    def read_settings(self) -> dict[str, Any]:
        """The contents of run.json ({} when there is none)."""
        try:
            data = json.loads((self.folder / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_settings(self, settings: dict[str, Any]) -> None:
        tmp = self.folder / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(settings, indent=1), encoding="utf-8")
        os.replace(tmp, self.folder / RUN_FILE)

    def transcript_path(self, mode: str, task_id: str) -> Path:
        folder = self.folder / "transcripts" / mode
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{safe_name(task_id)}.json"

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and make sure it reached the disk."""
        if self._file is None:
            self._file = open(self.path, "a+b")
            self._file.seek(0, os.SEEK_END)
            if self._file.tell():
                self._file.seek(-1, os.SEEK_END)
                if self._file.read(1) != b"\n":  # a torn line from an interrupted run
                    self._file.write(b"\n")
        self._file.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
