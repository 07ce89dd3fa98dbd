"""Answer extraction and scoring edge cases, per answer type."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvision_magic.eval.scoring import default_tolerance, extract_answer, final_answer_text, score_answer
from pyvision_magic.eval.tasks import Task


def task(answer, kind, choices=None, tolerance=None) -> Task:
    return Task(id="t", question="q", images=[Path("x.png")], answer=answer, answer_type=kind,
                choices=choices, tolerance=tolerance)


CHOICES = ["red", "dark red", "blue", "green"]


@pytest.mark.parametrize("text, extracted", [
    ("B", "B"),
    ("(b)", "B"),
    ("B.", "B"),
    ("C) blue", "C"),
    ("The answer is (C).", "C"),
    ("Answer: D", "D"),
    ("I pick option B because it is darker.", "B"),
    ("<answer>(A)</answer>", "A"),
    ("thinking... \\boxed{C}", "C"),
    ("<answer>\\boxed{D}</answer>", "D"),
    ("blue", "C"),  # the text of an option
    ("The shirt is dark red.", "B"),  # 'red' inside 'dark red' is not a second match
    ("It is green, clearly", "D"),
    ("E", None),  # not an option
    ("I cannot tell.", None),
    ("", None),
])
def test_multiple_choice_letter_from_free_text(text, extracted):
    assert extract_answer(text, task("B", "choice", CHOICES)) == extracted


def test_choice_scoring():
    t = task("B", "choice", CHOICES)
    assert score_answer("(B) dark red", t).correct
    assert not score_answer("A", t).correct
    assert score_answer(None, t) == score_answer("", t)
    assert not score_answer(None, t).correct and score_answer(None, t).extracted is None


@pytest.mark.parametrize("text, ok", [
    ("2", True), ("<answer>2</answer>", True), ("two", True), ("There are 2 crossings.", True),
    ("2.0", True), ("\\boxed{2}", True), ("I count 3, no wait, 2", True), ("3", False),
    ("2.5", False), ("none", False), ("1,002", False),
])
def test_integer(text, ok):
    assert score_answer(text, task("2", "integer")).correct is ok


def test_integer_thousands_separator():
    assert score_answer("1,002 dots", task("1002", "integer")).correct


@pytest.mark.parametrize("text, ok", [
    ("3.25", True), ("3.2549", True), ("3.256", False), ("about 3.245 cm", True), ("13/4", True),
    ("\\boxed{3.25}", True), ("−3.25", False), ("3,25", False),
])
def test_number_with_default_tolerance(text, ok):
    assert score_answer(text, task("3.25", "number")).correct is ok


def test_number_with_explicit_tolerance_and_percent():
    t = task("50", "number", tolerance=2.0)
    assert score_answer("51.9%", t).correct
    assert not score_answer("52.1", t).correct
    assert score_answer("-3.25", task("-3.25", "number")).correct


def test_default_tolerance_is_half_of_the_last_digit():
    assert default_tolerance("3.25") == pytest.approx(0.005)
    assert default_tolerance("12") == pytest.approx(0.5)
    assert default_tolerance("1.5e3") == pytest.approx(50)


@pytest.mark.parametrize("text, answer, ok", [
    ("Yes", "Yes", True), ("yes, they overlap.", "Yes", True), ("No.", "Yes", False),
    ("<answer>No</answer>", "No", True), ("The circled letter is 'e'.", "e", True),
    ("E", "e", True), ("The letter is t", "t", True), ("<answer>k</answer>", "x", False),
    ("The Eiffel Tower", "eiffel tower", True), ("  Paris! ", "paris", True), ("Lyon", "Paris", False),
])
def test_text(text, answer, ok):
    assert score_answer(text, task(answer, "text")).correct is ok


def test_final_answer_text_prefers_boxed_then_answer_tag():
    assert final_answer_text("x \\boxed{\\frac{1}{2}} y") == "\\frac{1}{2}"
    assert final_answer_text("<answer> 7 </answer> later text") == "7"
    assert final_answer_text("<answer>5</answer> then <answer>6</answer>") == "6"
    assert final_answer_text(None) == ""


# Answer shapes GPT-4.1 writes under the reference prompt (texts our own).
@pytest.mark.parametrize("text, answer, extracted", [
    ("<answer>\n\\boxed{12\\,\\text{m}^2}\n</answer>", "12", "12"),  # not the exponent 2
    ("\\boxed{4310\\,\\mathrm{m}^2}", "4310", "4310"),
    ("\\boxed{905\\ \\text{m}^2}", "905", "905"),
    ("\\boxed{64~m^2}", "64", "64"),
    ("The lawn covers 37 m² in all.", "37", "37"),
    ("\\boxed{37\\,\\text{m}^{2}}", "37", "37"),
    ("\\boxed{12\\,587\\ \\text{m}^2}", "12587", "12587"),  # a thin space between thousands
    ("\\boxed{48^\\circ}", "48", "48"),
])
def test_integer_answers_with_latex_units(text, answer, extracted):
    assert extract_answer(text, task(answer, "integer")) == extracted


@pytest.mark.parametrize("text, ok", [
    ("\\boxed{\\frac{7}{2}}", True), ("\\boxed{\\dfrac{7}{2}}", True), ("\\frac{7}{4}", False),
    ("\\boxed{35\\%}", False),
])
def test_latex_fractions_are_numbers(text, ok):
    assert score_answer(text, task("3.5", "number")).correct is ok


@pytest.mark.parametrize("text, extracted", [
    ("\\boxed{'C'}", "C"),
    ('<answer>"C"</answer>', "C"),
    ("**C**", "C"),
    ("The answer is 'C'.", "C"),
    ("I pick 'C' over the others.", "C"),
    ("\\boxed{'C.Blue'}", "C"),  # letter glued to the option text
    ("\\boxed{'C. Blue sky'}", "C"),
    ("C. the blue one", "C"),
    ("(C) blue", "C"),
])
def test_choice_quoted_letters_and_letter_with_option_text(text, extracted):
    assert extract_answer(text, task("C", "choice", ["red", "dark red", "blue", "blue sky"])) == extracted


def test_an_abbreviation_is_not_an_option_letter():
    # "e.g." is not option E: the text names option D.
    assert extract_answer("e.g. Violet", task("D", "choice", ["red", "green", "blue", "violet", "pink"])) == "D"
