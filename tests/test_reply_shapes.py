"""Reply shapes real models write, each written afresh here, and what they must parse to.

The shapes come from real trajectories (GPT-4.1 under the reference prompt,
Qwen-VL, agent frameworks); the texts are our own.
"""

from __future__ import annotations

import pytest

from pyvision_magic._answers import normalize_answer
from pyvision_magic._parsing import StreamedText, parse_reply, reply_end

F = "```"

# (id, reply, expected code, expected answer)
CODE_CASES = [
    ("json-box-before-python",
     (f'The boxes I see:\n{F}json\n[{{"bbox_2d": [12, 40, 88, 97], "label": "cup"}}]\n{F}\n'
      f"Now I measure the cup.\n{F}python\ncup = image_clue_0.crop((12, 40, 88, 97))\nprint(cup.size)\n{F}\n"),
     "cup = image_clue_0.crop((12, 40, 88, 97))\nprint(cup.size)"),
    ("bash-fence-before-bare-python",
     f"Install first:\n{F}bash\npip install opencv-python\n{F}\nthen:\n{F}\nimport cv2\nprint(cv2.__version__)\n{F}",
     "import cv2\nprint(cv2.__version__)"),
    ("bare-text-fence-then-python",
     f"Plan:\n{F}\nstep one: zoom\n{F}\n{F}python\nw, h = image_clue_0.size\nprint(w * h)\n{F}",
     "w, h = image_clue_0.size\nprint(w * h)"),
    ("one-line-fence-in-code-tag",
     f"<code>{F}python\nprint(image_clue_0.mode){F}</code>",
     "print(image_clue_0.mode)"),
    ("one-line-fence-stop-ate-close-tag",
     f"Check the mode.\n<code>{F}python\nprint(image_clue_0.mode){F}",
     "print(image_clue_0.mode)"),
    ("partial-close-tag-after-fence",
     f"<code>\n{F}python\nprint(3 * 4)\n{F}\n</code",
     "print(3 * 4)"),
    ("partial-close-tag-without-fence",
     "<code>\nprint(image_clue_0.size)\n</cod",
     "print(image_clue_0.size)"),
    ("partial-close-tag-then-newline",
     "<code>\nprint(7)\n</code\n",
     "print(7)"),
    ("partial-close-tag-unclosed-fence",
     f"<code>\n{F}python\nx = 5\nprint(x)\n</",
     "x = 5\nprint(x)"),
    ("indented-under-list-item",
     (f"1. Crop the top half:\n   {F}python\n   top = image_clue_0.crop((0, 0, 64, 32))\n"
      f"   for px in list(top.getdata())[:2]:\n       print(px)\n   {F}\n2. Then compare."),
     "top = image_clue_0.crop((0, 0, 64, 32))\nfor px in list(top.getdata())[:2]:\n    print(px)"),
    ("indented-under-list-item-in-code-tag",
     f"- Count:\n  <code>\n  {F}python\n  n = 3\n  print(n)\n  {F}\n  </code>",
     "n = 3\nprint(n)"),
    ("final-answer-phrase-before-code-is-a-plan",
     f"Final Answer: not yet, I need to measure.\n<code>\n{F}python\nprint(image_clue_0.size)\n{F}\n</code>",
     "print(image_clue_0.size)"),
    ("answer-phrase-after-code-is-a-guess",
     f"<code>\n{F}python\nprint(len('abc'))\n{F}\n</code>\nFinal Answer: 3",
     "print(len('abc'))"),
]

ANSWER_CASES = [
    ("boxed-quoted-letter", "The left bar is taller.\n<answer>\n\\boxed{'D'}\n</answer>", "D",
     "\\boxed{'D'}"),
    ("boxed-text", "So it is \\boxed{\\text{green}}.", "green", "\\boxed{\\text{green}}"),
    ("boxed-then-words", "<answer>\\boxed{A} (the upper arrow)</answer>", "A",
     "\\boxed{A} (the upper arrow)"),
    ("bold-option", "<answer>**B. Route 66 north**</answer>", "B. Route 66 north",
     "**B. Route 66 north**"),
    ("double-quoted", '<answer>"four"</answer>', "four", '"four"'),
    ("backticks", "<answer>`12`</answer>", "12", "`12`"),
    ("apostrophe-inside-quotes", "<answer>'the baker's van'</answer>", "the baker's van",
     "'the baker's van'"),
    ("two-quoted-items-kept", "<answer>'red' and 'blue'</answer>", "'red' and 'blue'",
     "'red' and 'blue'"),
    ("boxed-quoted-sentence", "\\boxed{'Yes, they touch.'}", "Yes, they touch.",
     "\\boxed{'Yes, they touch.'}"),
    ("boxed-fraction-kept", "The ratio is \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}",
     "\\boxed{\\frac{3}{4}}"),
    ("answer-terminate", "The tallest tower is the second one.\nANSWER: B\nTERMINATE", "B", "B"),
    ("answer-terminate-same-line", "Counted seven boats.\nAnswer: 7 TERMINATE", "7", "7"),
    ("final-answer", "I compared both crops and the signs match.\n\nFinal Answer: the cafe", "the cafe",
     "the cafe"),
    ("bold-final-answer", "Reasoning done.\n**Final Answer:** **C**", "C", "**C**"),
    ("heading-final-answer-next-line", "Done.\n\n### Final Answer\n42", "42", "42"),
]

NEITHER_CASES = [
    ("plain-answer-word-in-prose", "The answer: I need to look again at the left side first."),
    ("long-final-answer-paragraph", "Final Answer: " + "it depends on the light. " * 20),
    ("json-box-only", f'{F}json\n{{"label": "dog"}}\n{F}'),
]


@pytest.mark.parametrize("reply, code", [c[1:] for c in CODE_CASES], ids=[c[0] for c in CODE_CASES])
def test_held_out_code_shapes(reply, code):
    parsed = parse_reply(reply)
    assert parsed.code == code
    assert parsed.answer is None
    compile(parsed.code, "<tool>", "exec")  # the model's code runs as written
    assert parsed.text.count(F) % 2 == 0, "the kept text ends at a closed fence"
    assert "</code" not in parsed.text.replace("</code>", "")


@pytest.mark.parametrize("reply, answer, raw", [c[1:] for c in ANSWER_CASES],
                         ids=[c[0] for c in ANSWER_CASES])
def test_held_out_answer_shapes(reply, answer, raw):
    parsed = parse_reply(reply)
    assert parsed.code is None
    assert (parsed.answer, parsed.raw_answer) == (answer, raw)


@pytest.mark.parametrize("reply", [c[1] for c in NEITHER_CASES], ids=[c[0] for c in NEITHER_CASES])
def test_held_out_replies_with_neither(reply):
    parsed = parse_reply(reply)
    assert parsed.code is None and parsed.answer is None


def test_one_line_form_keeps_a_well_formed_turn():
    parsed = parse_reply(f"<code>{F}python\nprint(1){F}")
    assert parsed.text == f"<code>{F}python\nprint(1){F}\n</code>"


def test_partial_close_tag_is_replaced_by_the_whole_tag():
    parsed = parse_reply(f"Look.\n<code>\n{F}python\nprint(2)\n{F}\n</co")
    assert parsed.text == f"Look.\n<code>\n{F}python\nprint(2)\n{F}\n</code>"


def test_code_in_a_string_is_not_a_closing_fence():
    code = 'fence = "```"\nprint(fence * 2)'
    assert parse_reply(f"<code>\n{F}python\n{code}\n{F}\n</code>").code == code


def test_streaming_stops_at_the_python_block_not_at_the_json_box():
    reply = f'{F}json\n{{"a": 1}}\n{F}\nthen\n{F}python\nprint(1)\n{F}\nmade-up output'
    stream = StreamedText()
    for i in range(0, len(reply), 3):
        stream.add(reply[i:i + 3])
    assert stream.end == reply.index("made-up") - 1
    assert reply_end(reply[: reply.index("print")]) is None, "an open python block may grow"


def test_final_answer_ending_does_not_end_a_stream_early():
    # Only a closing tag ends a streamed reply: "Final Answer:" may be followed by more.
    assert reply_end("Final Answer: 4") is None


@pytest.mark.parametrize("raw, answer", [
    ("\\boxed{'B'}", "B"),
    ("**C. S QT 911**", "C. S QT 911"),
    ("\\boxed{\\text{yellow}}", "yellow"),
    ("\\boxed{B} trailing words", "B"),
    ("\\text{two cats}", "two cats"),
    ("''", "''"),  # nothing inside: keep what was written
    ("**bold** and **more**", "**bold** and **more**"),
    ("The count is \\boxed{9}", "9"),
])
def test_normalize_answer(raw, answer):
    assert normalize_answer(raw) == answer


def test_code_without_a_margin_is_kept_byte_for_byte():
    code = 'for i in range(2):\n    x = i\n    \n    print("""a\n  \n""")'
    assert parse_reply(f"<code>\n{F}python\n{code}\n{F}\n</code>").code == code
