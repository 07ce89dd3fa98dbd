"""Converters from local copies of public benchmarks to the task format.

Nothing is downloaded: point a converter at the folder you downloaded (see
docs/evaluation.md for where each comes from and the layout expected). Images
stored inside data files are written to ``images/`` beside the output file;
image files already on disk are referenced where they are.

Data files may be Parquet (as on the Hugging Face Hub; reading them needs
``pyarrow``), JSON Lines or JSON (a list of rows, or an object of rows).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .tasks import LETTERS, Task, task_from_dict, write_tasks

__all__ = ["CONVERTERS", "convert"]

_MAGIC = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif", b"RIFF": ".webp", b"BM": ".bmp"}


def _read_rows(source: Path, pattern: str = "*") -> Iterator[tuple[Path, dict[str, Any]]]:
    """(file, row) for every row of the data files under ``source`` matching ``pattern``."""
    if source.is_file():
        files = [source]
    else:
        files = sorted(p for p in source.rglob(pattern) if p.suffix in (".parquet", ".jsonl", ".json"))
    if not files:
        raise ConfigError(f"No data files (.parquet, .jsonl, .json) matching {pattern!r} under {source}; "
                          "check the folder against docs/evaluation.md.")
    for path in files:
        if path.suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise ConfigError(f"Reading {path.name} needs pyarrow: pip install 'pyvision_magic[eval]' "
                                  "(or pip install pyarrow).") from exc
            for row in pq.read_table(path).to_pylist():
                yield path, row
        elif path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield path, json.loads(line)
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data.values() if isinstance(data, dict) else data
            for row in rows:
                if isinstance(row, dict):
                    yield path, row


class _Writer:
    """Collects tasks; writes embedded images to ``images/`` beside the output."""

    def __init__(self, out: Path, benchmark: str) -> None:
        self.out = Path(out)
        self.base = self.out.resolve().parent
        self.images = self.base / "images"
        self.benchmark = benchmark
        self.tasks: list[Task] = []

    def image(self, value: Any, where: Path, name: str) -> Path | None:
        """A path for an image cell: bytes (or {"bytes", "path"}) are written out."""
        if value is None:
            return None
        if isinstance(value, dict):
            data, rel = value.get("bytes"), value.get("path")
            if data:
                value = data
            elif rel:
                value = rel
            else:
                return None
        if isinstance(value, (bytes, bytearray)):
            ext = next((e for magic, e in _MAGIC.items() if bytes(value[:4]).startswith(magic)), ".png")
            self.images.mkdir(parents=True, exist_ok=True)
            path = self.images / (re.sub(r"[^\w.-]+", "_", name) + ext)
            path.write_bytes(bytes(value))
            return path
        path = Path(str(value))
        return path if path.is_absolute() else (where / path).resolve()

    def add(self, where: str, **fields: Any) -> None:
        fields.setdefault("benchmark", self.benchmark)
        fields["images"] = [str(p) for p in fields["images"] if p is not None]
        self.tasks.append(task_from_dict(fields, self.base, where=where))


def _shuffled(options: list[str], key: str) -> tuple[list[str], str]:
    """Options in an order fixed by ``key``, and the letter of the first (correct) one."""
    order = sorted(range(len(options)), key=lambda i: hashlib.sha1(f"{key}:{i}".encode()).hexdigest())
    return [options[i] for i in order], LETTERS[order.index(0)]


def vstar(source: Path, w: _Writer, limit: int | None) -> None:
    """V* Bench (craigwu/vstar_bench): ``test_questions.jsonl`` or per-image JSON files."""
    questions = source / "test_questions.jsonl"
    if questions.exists():
        for _, row in _read_rows(questions):
            text = row["text"]
            options = re.findall(r"\(([A-Z])\)\s*(.+?)(?=\s*\([A-Z]\)|\n|$)", text)
            question = re.split(r"\s*\(A\)", text)[0].strip()
            w.add(f"{questions}, question {row['question_id']}", id=str(row["question_id"]), question=question,
                  images=[w.image(row["image"], source, "")], answer=row["label"],
                  choices=[o.strip() for _, o in options], answer_type="choice",
                  subtask=row.get("category", ""))
            if limit and len(w.tasks) >= limit:
                return
        return
    for folder in ("direct_attributes", "relative_position"):
        for meta in sorted((source / folder).glob("*.json")):
            row = json.loads(meta.read_text(encoding="utf-8"))
            image = next((p for p in meta.parent.glob(meta.stem + ".*") if p.suffix != ".json"), None)
            choices, answer = _shuffled([str(o) for o in row["options"]], meta.stem)
            w.add(str(meta), id=f"{folder}/{meta.stem}", question=row["question"], images=[image],
                  answer=answer, choices=choices, answer_type="choice", subtask=folder)
            if limit and len(w.tasks) >= limit:
                return
    if not w.tasks:
        raise ConfigError(f"{source} has neither test_questions.jsonl nor direct_attributes/*.json; "
                          "download craigwu/vstar_bench (see docs/evaluation.md).")


def vlms_are_blind(source: Path, w: _Writer, limit: int | None) -> None:
    """VLMsAreBlind (XAI/vlmsareblind, or its -mini): rows of image, prompt, groundtruth, task."""
    for n, (path, row) in enumerate(_read_rows(source)):
        task_id = str(row.get("id") or row.get("image_id") or n)
        answer = str(row["groundtruth"]).strip().strip("{}")
        w.add(f"{path}, row {n}", id=task_id, question=row["prompt"],
              images=[w.image(row["image"], path.parent, f"blind_{task_id}")], answer=answer,
              subtask=str(row.get("task") or ""))
        if limit and len(w.tasks) >= limit:
            return


def mathvista(source: Path, w: _Writer, limit: int | None) -> None:
    """MathVista testmini (AI4Math/MathVista): ``testmini.json`` (or parquet rows) and ``images/``."""
    candidates = [source / "testmini.json", source / "data" / "testmini.json"]
    data_file = next((p for p in candidates if p.exists()), None)
    rows = _read_rows(data_file) if data_file else _read_rows(source, "testmini*")
    for path, row in rows:
        base = path.parent.parent if path.parent.name == "data" and not (path.parent / "images").exists() else path.parent
        image = w.image(row.get("decoded_image") or row.get("image"), base, f"mathvista_{row['pid']}")
        meta = row.get("metadata") or {}
        question = row["question"] + (f" (Unit: {row['unit']})" if row.get("unit") else "")
        fields: dict[str, Any] = dict(id=str(row["pid"]), question=question, images=[image],
                                      subtask=meta.get("task", ""), meta={"skills": meta.get("skills", [])})
        if row.get("question_type") == "multi_choice" and row.get("choices"):
            choices = [str(c) for c in row["choices"]]
            fields.update(choices=choices, answer_type="choice",
                          answer=LETTERS[choices.index(str(row["answer"]))])
        elif row.get("answer_type") == "integer":
            fields.update(answer=str(row["answer"]), answer_type="integer")
        elif row.get("answer_type") == "float":
            precision = int(row.get("precision") or 0)
            fields.update(answer=str(row["answer"]), answer_type="number", tolerance=0.5 * 10.0 ** -precision)
        else:
            fields.update(answer=str(row["answer"]), answer_type="text")
        w.add(f"{path}, pid {row['pid']}", **fields)
        if limit and len(w.tasks) >= limit:
            return


def mmmu(source: Path, w: _Writer, limit: int | None) -> None:
    """MMMU validation (MMMU/MMMU): ``<Subject>/validation-*.parquet`` with image_1..image_7."""
    for path, row in _read_rows(source, "validation*"):
        images = [w.image(row.get(f"image_{k}"), path.parent, f"{row['id']}_{k}") for k in range(1, 8)]
        options = row.get("options") or "[]"
        options = ast.literal_eval(options) if isinstance(options, str) else list(options)
        subject = "_".join(str(row["id"]).split("_")[1:-1])
        fields: dict[str, Any] = dict(id=row["id"], question=row["question"], images=images,
                                      subtask=subject, meta={"subfield": row.get("subfield", "")})
        answer = str(row["answer"]).strip()
        if row.get("question_type") == "multiple-choice" and options:
            if answer not in LETTERS[: len(options)]:
                continue  # a few questions list several right letters; no single ground truth
            fields.update(choices=[str(o) for o in options], answer=answer, answer_type="choice")
        else:
            fields.update(answer=answer)
        w.add(f"{path}, id {row['id']}", **fields)
        if limit and len(w.tasks) >= limit:
            return


def visual_puzzles(source: Path, w: _Writer, limit: int | None) -> None:
    """VisualPuzzles (neulab/VisualPuzzles): rows of id, category, image, question, options, answer."""
    for n, (path, row) in enumerate(_read_rows(source)):
        task_id = str(row.get("id", n))
        options = row.get("options") or []
        if isinstance(options, str):
            options = ast.literal_eval(options)
        fields: dict[str, Any] = dict(id=task_id, question=row["question"],
                                      images=[w.image(row["image"], path.parent, f"puzzle_{task_id}")],
                                      answer=str(row["answer"]).strip(), subtask=str(row.get("category", "")))
        if options:
            fields.update(choices=[str(o) for o in options], answer_type="choice")
        w.add(f"{path}, row {n}", **fields)
        if limit and len(w.tasks) >= limit:
            return


#: benchmark name -> (converter, benchmark label in reports)
CONVERTERS: dict[str, tuple[Callable[[Path, _Writer, int | None], None], str]] = {
    "vstar": (vstar, "V*"),
    "vlmsareblind": (vlms_are_blind, "VLMsAreBlind"),
    "mathvista": (mathvista, "MathVista"),
    "mmmu": (mmmu, "MMMU"),
    "visualpuzzles": (visual_puzzles, "VisualPuzzles"),
}


def convert(benchmark: str, source: str | Path, out: str | Path, *, limit: int | None = None) -> list[Task]:
    """Convert the local copy ``source`` of ``benchmark`` into the task file ``out``."""
    if benchmark not in CONVERTERS:
        raise ConfigError(f"Unknown benchmark {benchmark!r}; choose from {', '.join(sorted(CONVERTERS))}.")
    source = Path(source)
    if not source.exists():
        raise ConfigError(f"{source} does not exist; download the benchmark first (see docs/evaluation.md).")
    function, label = CONVERTERS[benchmark]
    writer = _Writer(Path(out), label)
    try:
        function(source, writer, limit)
    except (KeyError, ValueError, SyntaxError) as exc:
        raise ConfigError(f"{source} does not look like {label} ({type(exc).__name__}: {exc}); "
                          "check its layout against docs/evaluation.md.") from exc
    if not writer.tasks:
        raise ConfigError(f"No {label} questions found under {source}; check the layout in docs/evaluation.md.")
    write_tasks(writer.tasks, out)
    return writer.tasks
