"""Prompt profiles end to end: what the model is sent, through the real openai client,
the loopback chat server and a real child kernel."""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

import pytest
from conftest import code_reply

from pyvision_magic import ConfigError, OpenAIModel, load_image
from pyvision_magic._parsing import parse_reply
from pyvision_magic._profiles import PromptFacts, make_profile
from pyvision_magic._prompt import (
    feedback_message,
    nudge_message,
    output_as_image,
    question_message,
    system_prompt,
)
from pyvision_magic._session import Session
from pyvision_magic.kernel._child import ChildKernel

F = "```"
SHOW = "print('size', image_clue_0.size)\nplt.imshow(image_clue_0); plt.axis('off'); plt.show()"
FAILS = "print('before')\n1 / 0"


def model_for(server) -> OpenAIModel:
    return OpenAIModel(base_url=server.base_url, model="test-model")


def run(question, images, model, **kwargs) -> tuple[Session, PromptFacts]:
    """Run a session; also return the facts its kernel reported, for building expectations."""

    async def go():
        kernel = ChildKernel()
        session = Session(question, images, model=model, executor=kernel, **kwargs)
        try:
            await session._async_run()
            facts = PromptFacts(libraries=await kernel.importable_libraries(),
                                python=kernel.python_version or platform.python_version(),
                                timeout=session.timeout, network=await kernel.network_access())
        finally:
            await kernel.shutdown()
            await model.aclose()
        return session, facts

    return asyncio.run(go())


def sent(server) -> list[list[dict]]:
    return [r.body["messages"] for r in server.chat_requests]


def test_default_profile_sends_what_the_prompt_builders_make(chat_server, image_path,
                                                             no_openai_env):
    chat_server.script = [code_reply(SHOW), "Hmm.", "<answer>red</answer>"]
    image = load_image(image_path)
    # image_history "full": no note and no image re-sent small (tests/test_image_history.py).
    session, facts = run("What colour?", [image], model_for(chat_server), image_history="full")
    assert session.transcript.status == "answered"
    url = session._image_url
    turn = session.transcript.turns[0]
    expected = [
        {"role": "system", "content": system_prompt(libraries=facts.libraries, python=facts.python,
                                                    timeout=facts.timeout, network=facts.network)},
        question_message("What colour?", [image], url),
    ]
    first, second, third = sent(chat_server)
    assert first == expected
    expected += [{"role": "assistant", "content": parse_reply(turn.text).text},
                 feedback_message(turn.outputs, turn.note, url)]
    assert second == expected
    expected += [{"role": "assistant", "content": "Hmm."}, nudge_message()]
    assert third == expected
    assert all(r.body["stop"] == ["</code>"] for r in chat_server.chat_requests)
    assert [o.variable for o in turn.outputs if o.kind == "image"] == ["image_clue_1"]
    assert url(output_as_image(turn.outputs[-1])) in str(second[-1])


def test_pyvision_format_layout_at_every_point(chat_server, image_path, no_openai_env):
    chat_server.script = [
        code_reply(SHOW),
        code_reply(FAILS),
        "Both squares are there.\n<answer>\n\\boxed{'red'}\n</answer>",
    ]
    images = [load_image(image_path), load_image(image_path)]
    session, facts = run("Which colour is on the left?", images, model_for(chat_server),
                         prompt_profile="pyvision-format")
    t = session.transcript
    assert t.status == "answered" and t.answer == "red"
    assert t.turns[-1].raw_answer == "\\boxed{'red'}"
    first, second, third = sent(chat_server)

    # The instructions are in the one user turn; there is no system message.
    assert [m["role"] for m in first] == ["user"]
    parts = first[0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url", "text"]
    assert parts[0]["text"] == "<image_clue_0>"
    assert parts[2]["text"] == "</image_clue_0><image_clue_1>"
    body = parts[4]["text"]
    assert body.startswith("</image_clue_1>\n\n")
    assert ("image_clue_0: 120x80 pixels, file image_clue_0.png\nimage_clue_1: 120x80 pixels, "
            "file image_clue_1.png") in body
    assert f"Python {facts.python} with these libraries: {', '.join(facts.libraries)}." in body
    assert "<code>\n```python" in body and "<answer>\n\\boxed{your answer}\n</answer>" in body
    assert body.index("Question:\nWhich colour is on the left?") > body.index("Image sizes:")

    # Tool results: printed text, then each image shown, wrapped in its kernel name.
    assert second[:2] == first + [{"role": "assistant", "content": parse_reply(t.turns[0].text).text}]
    feedback = second[2]
    assert feedback["role"] == "user"
    assert [p["type"] for p in feedback["content"]] == ["text", "image_url", "text"]
    assert feedback["content"][0]["text"] == (
        "<interpreter>\nText Result:\nsize (120, 80)\nImage Result:\n<image_clue_2>")
    assert feedback["content"][2]["text"] == "</image_clue_2></interpreter>"

    # An error and no image: the error line in the text, "None" for the images.
    assert third[:3] == second, "the prefix of consecutive requests is byte-stable"
    assert third[4] == {"role": "user", "content": [{"type": "text", "text": (
        "<interpreter>\nText Result:\nbefore\nError: ZeroDivisionError: division by zero\n"
        "Image Result:\nNone</interpreter>")}]}
    assert all(r.body["stop"] == ["</code>"] for r in chat_server.chat_requests)


def test_pyvision_format_last_turn_asks_for_a_boxed_answer(chat_server, image_path, no_openai_env):
    chat_server.script = ["Final Answer: 2"]
    session, _ = run("How many squares?", [load_image(image_path)], model_for(chat_server),
                     prompt_profile="pyvision-format", max_turns=1)
    assert session.transcript.answer == "2", "a Final Answer ending needs no nudge turn"
    text = sent(chat_server)[0][0]["content"][-1]["text"]
    assert text.endswith("give your final answer now as <answer>\n\\boxed{your answer}\n</answer>.")


def test_final_answer_ending_ends_the_session_without_a_nudge(chat_server, image_path,
                                                              no_openai_env):
    chat_server.script = ["I counted both squares.\n\n**Final Answer:** 2", "<answer>never</answer>"]
    session, _ = run("How many squares?", [load_image(image_path)], model_for(chat_server))
    t = session.transcript
    assert (t.status, t.answer, t.turns[0].raw_answer) == ("answered", "2", "2")
    assert len(chat_server.chat_requests) == 1


TEMPLATE = ("{{images}}\nSizes: {{image_sizes}} ({{image_count}})\nKernel: Python {{python}}; "
            "{{libraries}}; {{ timeout }} s. {{network}}\nAnswer as \\boxed{x}.\nQ: {{question}}")


def test_user_template_in_the_pyvision_layout(chat_server, image_path, tmp_path, no_openai_env):
    path = tmp_path / "trained.txt"
    path.write_text(TEMPLATE, encoding="utf-8")
    chat_server.script = ["<answer>\\boxed{2}</answer>"]
    session, facts = run("How many?", [load_image(image_path)], model_for(chat_server),
                         prompt_profile="pyvision-format", system_prompt_file=str(path))
    assert session.transcript.answer == "2"
    [message] = sent(chat_server)[0]
    parts = message["content"]
    assert parts[0] == {"type": "text", "text": "<image_clue_0>"}
    network = "" if facts.network else "There is no network access. "
    assert parts[2]["text"] == (
        f"</image_clue_0>\nSizes: image_clue_0: 120x80 pixels, file image_clue_0.png (1)\nKernel: Python {facts.python}; "
        f"{', '.join(facts.libraries)}; 60 s. {network}\nAnswer as \\boxed{{x}}.\nQ: How many?")


def test_user_template_as_the_default_system_message(chat_server, image_path, tmp_path,
                                                     no_openai_env):
    path = tmp_path / "system.txt"
    path.write_text("You look at {{image_count}} image(s) with Python {{python}}.", encoding="utf-8")
    chat_server.script = ["<answer>2</answer>"]
    image = load_image(image_path)
    session, facts = run("How many?", [image], model_for(chat_server), system_prompt_file=str(path))
    first = sent(chat_server)[0]
    assert first[0] == {"role": "system",
                        "content": f"You look at 1 image(s) with Python {facts.python}."}
    assert first[1] == question_message("How many?", [image], session._image_url)


@pytest.mark.parametrize("content, profile, match", [
    ("Hello {{questoin}}", "pyvision-format",
     r"uses \{\{questoin\}\}, which is not a placeholder; use \{\{question\}\}, \{\{images\}\}"),
    ("{{images}} first", "default", r"only the pyvision-format profile can place"),
    ("   \n", "default", r"is empty; write the instructions"),
    (b"\xff\xfe bad", "default", r"is not UTF-8 text; save it as UTF-8\.$"),
])
def test_bad_template_files_give_one_sentence(tmp_path, content, profile, match):
    path = tmp_path / "t.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as info:
        make_profile(profile, path)
    assert "\n" not in str(info.value) and str(info.value).count(". ") <= 1


def test_missing_template_and_unknown_profile(tmp_path, image_path, no_openai_env):
    with pytest.raises(ConfigError, match=r"was not found; pass the path of a text file"):
        make_profile("default", tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match=r"cannot be read"):
        make_profile("default", tmp_path)  # a folder
    with pytest.raises(ConfigError,
                       match=r"^Unknown prompt profile 'qwen'; use one of: default, pyvision-format\.$"):
        Session("Q?", [load_image(image_path)], model=OpenAIModel(base_url="http://127.0.0.1:9/v1",
                                                                  model="m"),
                executor=ChildKernel(), prompt_profile="qwen")


def test_literal_braces_are_not_placeholders(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Write \\boxed{answer} and {json: 1}; {{python}}", encoding="utf-8")
    profile = make_profile("default", path)
    facts = PromptFacts(libraries=["numpy"], python="3.11.9", timeout=60)
    system = profile.opening("q", [], lambda im: "", facts, False)[0]["content"]
    assert system == "Write \\boxed{answer} and {json: 1}; 3.11.9"


def test_fork_keeps_the_profile(tmp_path, image_path, no_openai_env):
    path = tmp_path / "t.txt"
    path.write_text("{{question}}", encoding="utf-8")
    from pyvision_magic import Turn

    model = OpenAIModel(base_url="http://127.0.0.1:9/v1", model="m")
    session = Session("Q?", [load_image(image_path)], model=model, executor=ChildKernel(),
                      prompt_profile="pyvision-format", system_prompt_file=str(path))
    session.transcript.turns.append(Turn(index=0, text=code_reply("print(1)"), code="print(1)"))
    child = session.fork(0)
    assert (child.prompt_profile, child.system_prompt_file) == ("pyvision-format", str(path))
    assert child.profile.name == "pyvision-format"
    asyncio.run(model.aclose())


def test_readme_documents_every_placeholder():
    from pyvision_magic._profiles import PLACEHOLDERS

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Prompt profiles"):]
    for name in PLACEHOLDERS:
        assert "`{{" + name + "}}`" in section


def test_notes_end_the_built_in_instructions_and_fill_their_placeholder(tmp_path):
    facts = PromptFacts(libraries=["numpy"], python="3.11.9", timeout=60, notes="Old images shrink.")
    default = make_profile("default").opening("q", [], lambda im: "", facts, False)[0]["content"]
    assert default == system_prompt(libraries=["numpy"], python="3.11.9", timeout=60) + (
        " Old images shrink.")
    pyvision = make_profile("pyvision-format").opening("q", [], lambda im: "", facts, False)
    assert "at most 60 seconds. Old images shrink.\n" in pyvision[0]["content"][-1]["text"]
    path = tmp_path / "t.txt"
    path.write_text("Rules.{{notes}}|", encoding="utf-8")
    custom = make_profile("default", path).opening("q", [], lambda im: "", facts, False)
    assert custom[0]["content"] == "Rules. Old images shrink.|"
    no_notes = PromptFacts(libraries=["numpy"], python="3.11.9", timeout=60)
    assert make_profile("default", path).opening("q", [], lambda im: "", no_notes, False)[0][
        "content"] == "Rules.|"
