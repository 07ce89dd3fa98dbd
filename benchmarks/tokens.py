"""Prompt tokens, bytes and input cost of the reference 10-tool session, per image policy.

    python benchmarks/tokens.py [--quick]

The reference session: one 12-megapixel 4:3 photo (JPEG); the scripted model writes 10
tools, each showing a different 1024x1024 crop and printing ~400 characters, then
answers. It runs for real (loopback chat server, real openai client, child kernel) once
per configuration, and every request body the server received is counted:

- **image tokens** by OpenAI's published rule for gpt-4.1/gpt-4o: high detail scales the
  image to fit 2048x2048, then its short side to 768, and costs 85 + 170 per 512 px
  tile; low detail costs 85;
- **text tokens** with the o200k tokenizer when ``tiktoken`` can load it, else estimated
  as characters / 4 (the figure says which);
- **cached tokens** as OpenAI's prefix cache would report them: the tokens of the
  content parts a request shares, from the start, with the request before it, counted
  when at least 1,024 and in steps of 128;
- **cost** at gpt-4.1's list prices ($2.00 per million input tokens, $0.50 cached).

Configurations: today's (before the image history policy and tile-grid fitting: every
image in full, photos at 1182x886), each history policy on an OpenAI endpoint
(``image_rules="openai"``: tile-grid fitting, ``detail: "low"`` honoured), ``low`` on a
plain endpoint (the small re-encode only), and the reference's way (the same session
with every image re-sent as its original bytes, full history).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from pyvision_magic.testing import code_reply  # noqa: E402

PRICE_INPUT = 2.00 / 1e6
PRICE_CACHED = 0.50 / 1e6

TOOL = """\
x0, y0 = {x}, {y}
crop = image_clue_0.crop((x0, y0, x0 + 1024, y0 + 1024))
display(crop)
print("step {i}: looking at the area from ({x}, {y}); the colours shift from left to right "
      "and the noise is even, so the next step looks further along the same row. " * 3)"""


def _tools(n: int) -> list[str]:
    return [code_reply(TOOL.format(i=i, x=(i * 300) % 3008, y=(i * 200) % 2000), f"Step {i}.")
            for i in range(n)]


def _photo(path: str) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:3024, 0:4032].astype(np.float32)
    base = np.stack([x * 255 / 4032, y * 255 / 3024, (x + y) * 127 / 7056], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)


# -- counting ------------------------------------------------------------------------


def _text_counter():
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("o200k_base")
        return (lambda text: len(encoding.encode(text))), "o200k"
    except Exception:  # noqa: BLE001 - not installed, or its file cannot be downloaded here
        return (lambda text: math.ceil(len(text) / 4)), "chars/4"


def image_tokens(width: int, height: int, detail: str | None) -> int:
    """OpenAI's image cost for gpt-4.1 / gpt-4o (85 base + 170 per 512 px tile)."""
    if detail == "low":
        return 85
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    return 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)


def _size(url: str) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size


def _parts(messages: list[dict], count_text) -> list[tuple[str, int]]:
    """Each content part as (its JSON, its tokens), in order."""
    parts: list[tuple[str, int]] = []
    sizes: dict[str, tuple[int, int]] = {}
    for message in messages:
        content = message["content"]
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for item in items:
            key = message["role"] + json.dumps(item, sort_keys=True)
            if item["type"] == "text":
                parts.append((key, count_text(item["text"]) + 1))
            else:
                url = item["image_url"]["url"]
                if url not in sizes:
                    sizes[url] = _size(url)
                parts.append((key, image_tokens(*sizes[url], item["image_url"].get("detail"))))
        parts.append((message["role"], 4))  # the message's own framing
    return parts


def count(requests: list[list[dict]], count_text) -> dict:
    """Prompt, cached tokens, bytes and cost of a session's requests."""
    prompt = cached = sent = 0
    previous: list[tuple[str, int]] = []
    for messages in requests:
        parts = _parts(messages, count_text)
        tokens = sum(t for _, t in parts)
        shared = 0
        for (a, t), (b, _) in zip(parts, previous):
            if a != b:
                break
            shared += t
        hit = shared // 128 * 128 if shared >= 1024 else 0
        prompt, cached, previous = prompt + tokens, cached + hit, parts
        sent += len(json.dumps(messages))
    return {"prompt": prompt, "cached": cached, "bytes": sent,
            "cost": prompt * PRICE_INPUT, "cost_cached": (prompt - cached) * PRICE_INPUT + cached * PRICE_CACHED}


def reference_way(requests: list[list[dict]], originals: dict[str, str]) -> list[list[dict]]:
    """The same requests with every image as its original bytes, all in full."""
    out = []
    for messages in requests:
        copy = json.loads(json.dumps(messages))
        for message in copy:
            if isinstance(message["content"], list):
                for part in message["content"]:
                    if part["type"] == "image_url":
                        part["image_url"] = {"url": originals.get(part["image_url"]["url"],
                                                                  part["image_url"]["url"])}
        out.append(copy)
    return out


# -- running the session ------------------------------------------------------------


async def _session(server, photo: str, tools: int, policy: str, rules: str) -> tuple[list, object]:
    from pyvision_magic import ChildKernel, OpenAIModel, Session, load_image

    server.script = _tools(tools) + ["<answer>done</answer>"]
    start = len(server.chat_requests)
    model = OpenAIModel(base_url=server.base_url, model="test-model", image_rules=rules)
    async with ChildKernel() as kernel:
        session = Session("Which part of the photo is brightest?", [load_image(photo)],
                          model=model, executor=kernel, max_turns=tools + 1, image_history=policy)
        await session._async_run()
    await model.aclose()
    assert session.transcript.answer == "done", session.transcript.status
    return [r.body["messages"] for r in server.chat_requests[start:]], session


def _originals(session, photo: str) -> dict[str, str]:
    """Full-detail URL of each image as sent -> the data URL of its original bytes."""
    from pyvision_magic._images import to_data_url
    from pyvision_magic._prompt import output_as_image

    out: dict[str, str] = {}
    with open(photo, "rb") as f:
        out[session._image_url(session.transcript.images[0])] = to_data_url("image/jpeg", f.read())
    for turn in session.transcript.turns:
        for o in turn.outputs:
            if o.kind == "image" and o.data:
                image = output_as_image(o)
                out[session._image_url(image)] = f"data:{o.mime};base64,{o.data}"
    return out


async def _measure(quick: bool) -> list[dict]:
    from pyvision_magic.testing import ChatServer

    tools = 3 if quick else 10
    count_text, method = _text_counter()
    with tempfile.TemporaryDirectory() as tmp, ChatServer() as server:
        photo = os.path.join(tmp, "photo.jpg")
        _photo(photo)
        figures: dict[str, dict] = {}
        today, session = await _session(server, photo, tools, "full", "plain")
        figures["today"] = count(today, count_text)
        figures["reference"] = count(reference_way(today, _originals(session, photo)), count_text)
        for policy in ("full", "low", "placeholder"):
            requests, _ = await _session(server, photo, tools, policy, "openai")
            figures[policy] = count(requests, count_text)
        requests, _ = await _session(server, photo, tools, "low", "plain")
        figures["low plain"] = count(requests, count_text)

    base = figures["today"]
    label = f"{tools}-tool session, text tokens by {method}"
    rows = []
    for name, what in [("reference", "the reference's way (original image bytes, full history)"),
                       ("full", "policy full, OpenAI tile-grid fitting"),
                       ("low", "policy low (the default), OpenAI endpoint"),
                       ("placeholder", "policy placeholder, OpenAI endpoint"),
                       ("low plain", "policy low, endpoint without 'detail' (small re-encode)")]:
        f = figures[name]
        goal = "<= 0.6" if name == "low" else ""
        rows.append({"figure": f"prompt tokens, {what} vs today ({label})",
                     "ours": f["prompt"], "baseline": base["prompt"],
                     "ratio": round(f["prompt"] / base["prompt"], 3), "goal": goal})
    for name in ("today", "reference", "full", "low", "placeholder", "low plain"):
        f = figures[name]
        rows.append({"figure": f"bytes uploaded, {name}", "ours": f["bytes"], "baseline": base["bytes"],
                     "ratio": round(f["bytes"] / base["bytes"], 3), "goal": ""})
    for name in ("today", "reference", "full", "low", "placeholder"):
        f = figures[name]
        rows.append({"figure": f"input cost with prefix caching, {name} vs today uncached "
                               f"(${f['cost_cached']:.4f}; cached {f['cached']:,} of {f['prompt']:,} tokens)",
                     "ours": round(f["cost_cached"], 5), "baseline": round(base["cost"], 5),
                     "ratio": round(f["cost_cached"] / base["cost"], 3),
                     "goal": "<= 0.4" if name == "low" else ""})
    return rows


def run(quick: bool = False) -> list[dict]:
    return asyncio.run(_measure(quick))


if __name__ == "__main__":
    from _table import standalone

    sys.exit(standalone(run, __doc__))
