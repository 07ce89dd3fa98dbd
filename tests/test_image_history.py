"""The image history policy, Anthropic cache breakpoints and tile-grid fitting, as sent
over the wire: real openai client, loopback chat server, real child kernel."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from conftest import code_reply, run_session
from PIL import Image

from pyvision_magic import OpenAIModel, load_image
from pyvision_magic._endpoints import openrouter_claude, with_cache_control
from pyvision_magic._history import SentImage, history_note, with_image_history
from pyvision_magic._images import encode_for_model

# Each tool shows a different 800x600 noisy crop, so every image is a photo of its own.
SHOW = """\
rng = np.random.default_rng({seed})
crop = Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8))
print("shown", {seed})
display(crop)"""


def image_urls(message) -> list[dict]:
    content = message["content"]
    if isinstance(content, str):
        return []
    return [p["image_url"] for p in content if p["type"] == "image_url"]


def texts(message) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p["type"] == "text")


def decoded_size(url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size


def three_tools(chat_server, image_path, **model_kw):
    chat_server.script = [code_reply(SHOW.format(seed=i)) for i in range(3)] + ["<answer>done</answer>"]
    model = OpenAIModel(base_url=chat_server.base_url, model="test-model", **model_kw)
    return model, [load_image(image_path)]


def test_low_policy_sends_each_tool_image_in_full_once_then_small(chat_server, image_path,
                                                                   no_openai_env):
    model, images = three_tools(chat_server, image_path)
    session = run_session("Q?", images, model)  # the default policy
    assert session.image_history == "low" and session.transcript.answer == "done"
    requests = [r.body["messages"] for r in chat_server.chat_requests]
    assert len(requests) == 4
    assert history_note("low") in requests[0][0]["content"]
    question_url = image_urls(requests[0][1])[0]["url"]
    for messages in requests:  # the question's image always goes in full
        assert image_urls(messages[1]) == [{"url": question_url}]
    # Request k carries tool k-1's image in full and every older one small.
    for k in (1, 2, 3):
        feedback = [m for m in requests[k] if m["role"] == "user"][1:]
        assert len(feedback) == k
        full = image_urls(feedback[-1])
        assert len(full) == 1 and decoded_size(full[0]["url"]) == (800, 600)
        for old in feedback[:-1]:
            [low] = image_urls(old)
            assert "detail" not in low  # the loopback server is not known to honour it
            width, height = decoded_size(low["url"])
            assert width * height <= 512 * 512 and width / height == pytest.approx(4 / 3, abs=0.02)
    # The full image of request k is the small one of request k+1: the same tool image.
    assert image_urls(requests[1][3])[0] != image_urls(requests[2][3])[0]
    # Consecutive requests share their prefix up to the image that went small.
    for k in (2, 3):
        before, after = requests[k - 1], requests[k]
        changed = next(i for i, (a, b) in enumerate(zip(before, after)) if a != b)
        assert changed == len(before) - 1  # only the previous request's last message
    # The transcript keeps the full images whatever was sent.
    shown = [o for t in session.transcript.turns for o in t.outputs if o.kind == "image"]
    assert [(o.width, o.height) for o in shown] == [(800, 600)] * 3


def test_placeholder_policy_names_the_image_and_how_to_show_it(chat_server, image_path,
                                                                no_openai_env):
    model, images = three_tools(chat_server, image_path)
    run_session("Q?", images, model, image_history="placeholder")
    last = chat_server.chat_requests[-1].body["messages"]
    feedback = [m for m in last if m["role"] == "user"][1:]
    assert [len(image_urls(m)) for m in feedback] == [0, 0, 1]
    assert "[image_clue_1: 800x600 image shown earlier, not sent again; " \
           "display(image_clue_1) shows it again]" in texts(feedback[0])
    assert "display(image_clue_2) shows it again" in texts(feedback[1])
    assert history_note("placeholder") in last[0]["content"]


def test_full_policy_sends_the_same_bytes_every_time(chat_server, image_path, no_openai_env):
    model, images = three_tools(chat_server, image_path)
    run_session("Q?", images, model, image_history="full")
    requests = [r.body["messages"] for r in chat_server.chat_requests]
    for k in (2, 3):  # every request extends the one before it, byte for byte
        assert requests[k][: len(requests[k - 1])] == requests[k - 1]
    assert "low resolution" not in requests[0][0]["content"]


def test_low_detail_marked_where_the_endpoint_honours_it(chat_server, image_path, no_openai_env):
    model, images = three_tools(chat_server, image_path, image_rules="openai")
    assert model.honours_detail and model.image_short_side == 768
    run_session("Q?", images, model)
    feedback = [m for m in chat_server.chat_requests[-1].body["messages"] if m["role"] == "user"][1:]
    assert [u.get("detail") for m in feedback for u in image_urls(m)] == ["low", "low", None]


def test_a_bad_policy_is_refused_with_the_choices(chat_server, image_path, no_openai_env):
    from traitlets import TraitError

    from pyvision_magic import Session
    from pyvision_magic.kernel import ChildKernel

    with pytest.raises(TraitError, match="full.*low.*placeholder"):
        Session("Q?", [load_image(image_path)], model=OpenAIModel(base_url=chat_server.base_url),
                executor=ChildKernel(), image_history="tiny")
    with pytest.raises(ValueError, match="one of full, low, placeholder"):
        with_image_history([], "tiny", {}, set())


def test_with_image_history_leaves_unseen_and_question_images_alone():
    q = {"type": "image_url", "image_url": {"url": "data:q"}}
    t = {"type": "image_url", "image_url": {"url": "data:t"}}
    messages = [{"role": "user", "content": [q]}, {"role": "user", "content": [t]}]
    tools = {"data:t": SentImage("image_clue_1", 10, 10, low_url="data:small")}
    assert with_image_history(messages, "low", tools, set()) == messages  # not seen yet
    out = with_image_history(messages, "low", tools, {"data:t", "data:q"})
    assert out[0] is messages[0]  # unchanged messages are not copied
    assert out[1]["content"] == [{"type": "image_url", "image_url": {"url": "data:small"}}]
    assert messages[1]["content"] == [t]  # the input is not modified


# -- Anthropic-style cache breakpoints -------------------------------------------


def test_cache_control_marks_the_system_prompt_and_the_last_message(chat_server, image_path,
                                                                     no_openai_env):
    model, images = three_tools(chat_server, image_path, cache_control="on")
    run_session("Q?", images, model)
    for request in chat_server.chat_requests:
        messages = request.body["messages"]
        marked = [(i, p) for i, m in enumerate(messages) if isinstance(m["content"], list)
                  for p in m["content"] if "cache_control" in p]
        assert [i for i, _ in marked] == [0, len(messages) - 1]
        assert all(p["cache_control"] == {"type": "ephemeral"} for _, p in marked)
        assert messages[0]["content"][-1]["type"] == "text"


def test_cache_control_is_off_by_default_except_for_claude_on_openrouter(chat_server, image_path,
                                                                          no_openai_env):
    model, images = three_tools(chat_server, image_path)
    run_session("Q?", images, model)
    assert "cache_control" not in json.dumps([r.body for r in chat_server.chat_requests])
    assert openrouter_claude("https://openrouter.ai/api/v1", "anthropic/claude-sonnet-4")
    assert not openrouter_claude("https://openrouter.ai/api/v1", "openai/gpt-4.1")
    assert not openrouter_claude("https://api.anthropic.com/v1", "anthropic/claude-sonnet-4")
    assert OpenAIModel(base_url="https://openrouter.ai/api/v1",
                       model="anthropic/claude-sonnet-4")._sends_cache_control()


def test_with_cache_control_copies_and_turns_text_into_a_part():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    out = with_cache_control(messages)
    assert messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert out[1]["content"] == [{"type": "text", "text": "Q", "cache_control": {"type": "ephemeral"}}]
    assert with_cache_control([{"role": "system", "content": "S"}]) == [
        {"role": "system", "content": [{"type": "text", "text": "S",
                                        "cache_control": {"type": "ephemeral"}}]}]


# -- photos fitted to OpenAI's tile grid -----------------------------------------


def _photo(width: int, height: int) -> bytes:
    noise = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


@pytest.mark.parametrize("size, plain, openai", [
    ((4032, 3024), (1182, 886), (1024, 768)),   # 4:3 phone photo: 2x2 tiles, not 3x2
    ((3024, 4032), (886, 1182), (768, 1024)),   # the same, upright
    ((4000, 2250), (1365, 768), (1365, 768)),   # 16:9: the budget is already smaller
    ((1000, 700), (1000, 700), (1000, 700)),    # within the budget: sent as it is
])
def test_photos_fit_the_tile_grid_only_for_openai(size, plain, openai):
    image = load_image(_photo(*size), name="photo.jpg")
    for short_side, expected in ((None, plain), (768, openai)):
        mime, data = encode_for_model(image, short_side=short_side)
        assert mime == "image/jpeg"
        assert Image.open(io.BytesIO(data)).size == expected


def test_the_policy_works_in_the_pyvision_format_profile_too(chat_server, image_path,
                                                              no_openai_env):
    model, images = three_tools(chat_server, image_path)
    run_session("Q?", images, model, image_history="placeholder", prompt_profile="pyvision-format")
    last = chat_server.chat_requests[-1].body["messages"]
    assert last[0]["role"] == "user" and history_note("placeholder") in texts(last[0])
    feedback = [m for m in last if m["role"] == "user"][1:]
    assert [len(image_urls(m)) for m in feedback] == [0, 0, 1]
    assert "display(image_clue_1) shows it again" in texts(feedback[0])


def test_a_placeholder_for_an_image_without_a_name_promises_nothing():
    from pyvision_magic._history import placeholder_text

    assert placeholder_text(SentImage("image", 64, 36)) == \
        "[a 64x36 image shown earlier, not sent again]"
