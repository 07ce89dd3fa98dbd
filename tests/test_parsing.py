"""Reading code and answers out of model replies."""

import pytest

from pyvision_magic._parsing import extract_boxed, parse_reply

FENCE = "```"


def test_tagged_code_block_is_found_and_text_kept_up_to_it():
    text = f"Let me crop.\n<code>\n{FENCE}python\nprint(image_clue_0.size)\n{FENCE}\n</code>"
    r = parse_reply(text)
    assert r.code == "print(image_clue_0.size)"
    assert r.answer is None
    assert r.text == text


def test_stop_sequence_ate_closing_tag_and_it_is_restored():
    text = f"<code>\n{FENCE}python\nx = 1\nprint(x)\n{FENCE}\n"
    r = parse_reply(text)
    assert r.code == "x = 1\nprint(x)"
    assert r.text.endswith("</code>")


def test_hallucinated_interpreter_output_and_answer_are_cut():
    text = (
        f"Count them.\n<code>\n{FENCE}python\nprint(len(coins))\n{FENCE}\n</code>\n"
        "<interpreter>\n24\n</interpreter>\nSo there are <answer>24</answer>"
    )
    r = parse_reply(text)
    assert r.code == "print(len(coins))"
    assert r.answer is None, "an answer written after unrun code is a guess"
    assert "<interpreter>" not in r.text and "24\n" not in r.text
    assert r.text.endswith("</code>")


def test_hallucination_without_closing_code_tag_is_cut_at_the_fence():
    text = f"<code>\n{FENCE}python\nprint(1)\n{FENCE}\n<interpreter>1</interpreter>more"
    r = parse_reply(text)
    assert r.code == "print(1)"
    assert "interpreter" not in r.text


def test_plain_python_fence_without_tags():
    r = parse_reply(f"I'll check.\n{FENCE}python\nimport numpy as np\nprint(np.mean(1))\n{FENCE}\nDone")
    assert r.code == "import numpy as np\nprint(np.mean(1))"
    assert not r.text.endswith("Done")


def test_bare_fence_counts_only_when_it_looks_like_python():
    assert parse_reply(f"{FENCE}\nThe output was 3 lines\n{FENCE}").code is None
    assert parse_reply(f"{FENCE}\nx = 3\nprint(x)\n{FENCE}").code == "x = 3\nprint(x)"


def test_code_tag_without_fence():
    r = parse_reply("<code>\nprint('hi')\n</code>")
    assert r.code == "print('hi')"


def test_answer_tag():
    r = parse_reply("The coins are clear.\n<answer>24</answer>")
    assert r.answer == "24" and r.code is None


def test_unclosed_answer_tag():
    assert parse_reply("<answer> B ").answer == "B"


def test_boxed_answer_with_nested_braces():
    r = parse_reply(r"So the ratio is \boxed{\frac{1}{2}}.")
    assert r.answer == r"\frac{1}{2}"


def test_boxed_inside_answer_tag_is_unwrapped():
    assert parse_reply(r"<answer>\boxed{C}</answer>").answer == "C"


def test_answer_before_code_wins():
    r = parse_reply(f"<answer>7</answer>\nTo check:\n{FENCE}python\nprint(7)\n{FENCE}")
    assert r.answer == "7" and r.code is None


def test_neither_code_nor_answer():
    r = parse_reply("I think I need to look more closely at the image.")
    assert r.code is None and r.answer is None


def test_empty_code_block_is_no_code():
    assert parse_reply(f"<code>\n{FENCE}python\n{FENCE}\n</code>").code is None


@pytest.mark.parametrize(
    "text,expected",
    [(r"\boxed{42}", "42"), (r"a \boxed{1} b \boxed{2}", "2"), (r"\boxed{unclosed", None), ("none", None)],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected
