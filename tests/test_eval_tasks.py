"""The task file format, its validation messages, and the benchmark converters on tiny local copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyvision_magic import ConfigError
from pyvision_magic.eval.converters import convert
from pyvision_magic.eval.tasks import Task, load_tasks, prompt_text, write_tasks


def write(path: Path, *rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def folder(tmp_path, image_path):
    (tmp_path / "imgs").mkdir()
    image_path.rename(tmp_path / "imgs" / "a.png")
    return tmp_path


def test_load_resolves_images_and_infers_answer_types(folder):
    path = write(folder / "bench.jsonl",
                 {"id": 1, "question": "How many?", "images": ["imgs/a.png"], "answer": 3},
                 {"id": "b", "question": "Ratio?", "images": "imgs/a.png", "answer": "0.5"},
                 {"id": "c", "question": "Colour?", "images": ["imgs/a.png"], "answer": "red"},
                 {"id": "d", "question": "Which?", "images": ["imgs/a.png"], "answer": "blue",
                  "choices": ["red", "blue"], "subtask": "colour", "meta": {"src": 1}})
    tasks = load_tasks(path)
    assert [t.answer_type for t in tasks] == ["integer", "number", "text", "choice"]
    assert tasks[0].id == "1" and tasks[0].images == [(folder / "imgs" / "a.png").resolve()]
    assert tasks[3].answer == "B" and tasks[3].benchmark == "bench" and tasks[3].meta == {"src": 1}
    out = write_tasks(tasks, folder / "copy" / "tasks.jsonl")
    again = load_tasks(out)
    assert [t.to_dict() for t in again] == [t.to_dict() for t in tasks]
    assert json.loads(out.read_text().splitlines()[0])["images"] == ["../imgs/a.png"]


@pytest.mark.parametrize("row, message", [
    ('{"id": 1,', "line 1: not valid JSON"),
    ('[1, 2]', "expected a JSON object"),
    ({"id": "x", "question": "q", "images": []}, "missing field 'answer'"),
    ({"id": "x", "question": "q", "images": [], "answer": "1", "colour": 1}, "unknown field 'colour'"),
    ({"id": "x", "question": " ", "images": [], "answer": "1"}, "'question' must be a non-empty string"),
    ({"id": "x", "question": "q", "images": ["nope.png"], "answer": "1"}, "image 'nope.png' not found"),
    ({"id": "x", "question": "q", "images": [], "answer": "E", "choices": ["a", "b"]},
     "answer 'E' is neither a letter A-B nor one of the choices"),
    ({"id": "x", "question": "q", "images": [], "answer": "1.5", "answer_type": "integer"}, "not a whole number"),
    ({"id": "x", "question": "q", "images": [], "answer": "1", "answer_type": "float"}, "'answer_type' must be one of"),
    ({"id": "x", "question": "q", "images": [], "answer": "1", "tolerance": -1}, "'tolerance' must be"),
])
def test_bad_lines_are_one_sentence_config_errors(tmp_path, row, message):
    path = write(tmp_path / "t.jsonl", row)
    with pytest.raises(ConfigError, match=message) as info:
        load_tasks(path)
    assert str(info.value).startswith(f"{path}, line 1: ") and "\n" not in str(info.value)


def test_duplicate_ids_missing_and_empty_files(tmp_path):
    row = {"id": "x", "question": "q", "images": [], "answer": "1"}
    with pytest.raises(ConfigError, match="line 2: id 'x' is already used on line 1"):
        load_tasks(write(tmp_path / "t.jsonl", row, row))
    with pytest.raises(ConfigError, match="Task file not found"):
        load_tasks(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="has no tasks"):
        load_tasks(write(tmp_path / "e.jsonl", ""))


def test_prompt_text_adds_options_and_a_format_hint():
    t = Task("1", "What colour is the car?", [], "B", "choice", ["red", "blue"])
    assert prompt_text(t) == ("What colour is the car?\n\nOptions:\n(A) red\n(B) blue\n\n"
                              "Answer with the letter of the correct option.")
    n = Task("2", "How many? Answer with a whole number.", [], "3", "integer")
    assert prompt_text(n) == "How many? Answer with a whole number."


# -- converters on tiny local copies laid out like the real downloads ----------------------


def test_vstar_from_test_questions(folder):
    src = folder / "vstar"
    (src / "direct_attributes").mkdir(parents=True)
    (folder / "imgs" / "a.png").rename(src / "direct_attributes" / "sa_1.png")
    write(src / "test_questions.jsonl", {
        "image": "direct_attributes/sa_1.png", "question_id": 0, "category": "direct_attributes", "label": "B",
        "text": "What is the color of the cup?\n(A) red\n(B) white\n(C) blue\n(D) black\n"
                "Answer with the option's letter from the given choices directly."})
    [task] = convert("vstar", src, folder / "out" / "vstar.jsonl")
    assert task.question == "What is the color of the cup?"
    assert task.choices == ["red", "white", "blue", "black"] and task.answer == "B"
    assert task.benchmark == "V*" and task.subtask == "direct_attributes"
    assert load_tasks(folder / "out" / "vstar.jsonl")[0].images == task.images


def test_vstar_from_per_image_json_shuffles_options_deterministically(folder):
    src = folder / "vstar" / "relative_position"
    src.mkdir(parents=True)
    (folder / "imgs" / "a.png").rename(src / "sa_2.png")
    (src / "sa_2.json").write_text(json.dumps({"question": "Is the cat left of the dog?",
                                               "options": ["left", "right"]}))
    [task] = convert("vstar", folder / "vstar", folder / "v.jsonl")
    assert task.choices[ord(task.answer) - 65] == "left" and sorted(task.choices) == ["left", "right"]
    [again] = convert("vstar", folder / "vstar", folder / "v2.jsonl")
    assert again.choices == task.choices


def test_mathvista_testmini(folder):
    src = folder / "MathVista"
    (src / "images").mkdir(parents=True)
    (folder / "imgs" / "a.png").rename(src / "images" / "1.png")
    rows = {
        "1": {"pid": "1", "question": "Spring compression?", "image": "images/1.png", "choices": None,
              "unit": "m", "precision": 1, "answer": "1.2", "question_type": "free_form", "answer_type": "float",
              "metadata": {"task": "textbook question answering"}},
        "2": {"pid": "2", "question": "Which is larger?", "image": "images/1.png", "choices": ["3", "5"],
              "precision": None, "answer": "5", "question_type": "multi_choice", "answer_type": "text",
              "metadata": {"task": "figure question answering"}},
        "3": {"pid": "3", "question": "How many bars?", "image": "images/1.png", "choices": None,
              "answer": "4", "question_type": "free_form", "answer_type": "integer", "metadata": {}},
    }
    (src / "testmini.json").write_text(json.dumps(rows))
    tasks = convert("mathvista", src, folder / "mv.jsonl")
    assert [(t.answer_type, t.answer) for t in tasks] == [("number", "1.2"), ("choice", "B"), ("integer", "4")]
    assert tasks[0].tolerance == pytest.approx(0.05) and tasks[0].question.endswith("(Unit: m)")
    assert convert("mathvista", src, folder / "mv1.jsonl", limit=1)[0].id == "1"


def test_mmmu_visualpuzzles_and_vlmsareblind_rows_with_embedded_images(folder):
    png = (folder / "imgs" / "a.png").read_bytes()
    # JSON cannot hold bytes; a local export keeps images as paths, parquet as bytes.
    mmmu = folder / "MMMU" / "Art"
    mmmu.mkdir(parents=True)
    (mmmu / "q.png").write_bytes(png)
    write(mmmu / "validation.jsonl",
          {"id": "validation_Art_1", "question": "<image 1> Which style?", "options": "['Baroque', 'Cubism']",
           "image_1": {"path": "q.png"}, "image_2": None, "answer": "B", "question_type": "multiple-choice"},
          {"id": "validation_Art_2", "question": "Year?", "options": "[]", "image_1": {"path": "q.png"},
           "answer": "1907", "question_type": "open"},
          {"id": "validation_Art_3", "question": "Two right?", "options": "['a', 'b']",
           "image_1": {"path": "q.png"}, "answer": "['A', 'B']", "question_type": "multiple-choice"})
    tasks = convert("mmmu", folder / "MMMU", folder / "mmmu.jsonl")
    assert [(t.id, t.answer_type, t.answer, t.subtask) for t in tasks] == [
        ("validation_Art_1", "choice", "B", "Art"), ("validation_Art_2", "integer", "1907", "Art")]

    puzzles = folder / "VisualPuzzles"
    puzzles.mkdir()
    (puzzles / "p.png").write_bytes(png)
    write(puzzles / "data.jsonl", {"id": 7, "category": "spatial", "image": "p.png", "question": "Which?",
                                   "options": ["A1", "B1", "C1", "D1"], "answer": "D"})
    [p] = convert("visualpuzzles", puzzles, folder / "vp.jsonl")
    assert (p.answer, p.answer_type, p.subtask, p.benchmark) == ("D", "choice", "spatial", "VisualPuzzles")

    blind = folder / "blind"
    blind.mkdir()
    (blind / "b.png").write_bytes(png)
    write(blind / "valid.jsonl", {"image": "b.png", "prompt": "How many circles?", "groundtruth": "{5}",
                                  "task": "Olympic Counting - Circles"})
    [b] = convert("vlmsareblind", blind, folder / "b.jsonl")
    assert (b.answer, b.answer_type, b.subtask) == ("5", "integer", "Olympic Counting - Circles")


def test_converter_errors_say_what_to_check(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; download the benchmark first"):
        convert("vstar", tmp_path / "nope", tmp_path / "o.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="docs/evaluation.md"):
        convert("mathvista", tmp_path / "empty", tmp_path / "o.jsonl")
    with pytest.raises(ConfigError, match="Unknown benchmark 'foo'"):
        convert("foo", tmp_path, tmp_path / "o.jsonl")


def test_parquet_files_as_the_hub_serves_them(folder):
    """Real parquet files, images as {bytes, path} structs (the Hugging Face layout)."""
    import pyarrow as pa  # in the test extra: parquet is how the Hub serves three of the five
    import pyarrow.parquet as pq

    png = (folder / "imgs" / "a.png").read_bytes()
    image = {"bytes": png, "path": "a.png"}

    blind = folder / "vlmsareblind" / "data"
    blind.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([
        {"image": image, "prompt": "How many circles?", "groundtruth": "{5}", "task": "Olympic Counting - Circles"},
        {"image": image, "prompt": "Touching?", "groundtruth": "Yes", "task": "Touching Circles"},
    ]), blind / "valid-00000-of-00001.parquet")
    tasks = convert("vlmsareblind", blind.parent, folder / "blind.jsonl")
    assert [(t.answer, t.subtask) for t in tasks] == [("5", "Olympic Counting - Circles"), ("Yes", "Touching Circles")]
    assert tasks[0].images[0].read_bytes() == png

    mmmu = folder / "MMMU" / "Art"
    mmmu.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([
        {"id": "validation_Art_1", "question": "<image 1> Which style?", "options": "['Baroque', 'Cubism']",
         "image_1": image, "image_2": None, "answer": "B", "question_type": "multiple-choice",
         "subfield": "Art History"},
    ]), mmmu / "validation-00000-of-00001.parquet")
    [art] = convert("mmmu", folder / "MMMU", folder / "mmmu.jsonl")
    assert (art.answer, art.choices, art.subtask) == ("B", ["Baroque", "Cubism"], "Art")
    assert art.images[0].read_bytes() == png

    mathvista = folder / "MathVista" / "data"
    mathvista.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([
        {"pid": "1", "question": "Which is larger?", "decoded_image": image, "choices": ["3", "5"],
         "unit": None, "precision": None, "answer": "5", "question_type": "multi_choice",
         "answer_type": "text", "metadata": {"task": "figure question answering", "skills": ["logic"]}},
        {"pid": "2", "question": "Length?", "decoded_image": image, "choices": None, "unit": "cm",
         "precision": 1.0, "answer": "2.5", "question_type": "free_form", "answer_type": "float",
         "metadata": {"task": "geometry problem solving", "skills": []}},
    ]), mathvista / "testmini-00000-of-00001.parquet")
    choice, number = convert("mathvista", mathvista.parent, folder / "mv.jsonl")
    assert (choice.answer_type, choice.answer, choice.subtask) == ("choice", "B", "figure question answering")
    assert (number.answer_type, number.answer, number.tolerance) == ("number", "2.5", pytest.approx(0.05))
    assert number.question.endswith("(Unit: cm)") and number.images[0].read_bytes() == png


def test_parquet_without_pyarrow_says_how_to_install_it(folder, monkeypatch):
    import sys

    (folder / "data").mkdir()
    (folder / "data" / "valid-00000-of-00001.parquet").write_bytes(b"PAR1")
    # As if pyarrow were not installed (it is in the test extra).
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ConfigError, match=r"valid-00000-of-00001.parquet needs pyarrow: "
                                          r"pip install 'pyvision_magic\[eval\]'"):
        convert("vlmsareblind", folder / "data", folder / "o.jsonl")
