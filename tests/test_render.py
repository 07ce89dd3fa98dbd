"""The static rendering kept in saved notebooks, and its size."""

from __future__ import annotations

import base64
import io
import json

import numpy as np

from pyvision_magic._records import ImageInput, Output, Usage
from pyvision_magic._render import (compact_transcript, markdown_to_html, prose, render_html,
                                    render_text, thumbnail)
from pyvision_magic._transcript import Transcript, Turn


def _photo(width: int, height: int, seed: int = 0) -> bytes:
    """A photo-like PNG: smooth gradients plus sensor noise (hard to compress)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_prose_drops_the_code_and_the_answer_tags():
    text = "I will **crop**.\n<code>\n```python\nprint(1)\n```\n</code>"
    assert prose(text, "print(1)") == "I will **crop**."
    assert prose("Done.\n<answer>3</answer>") == "Done."
    assert prose("Let me look.\n<co") == "Let me look.", "a tag cut by streaming"
    assert prose("Here:\n```python\nx = 1\n```", "x = 1") == "Here:"


def test_markdown_is_escaped_before_it_is_formatted():
    out = markdown_to_html("# Title\n**bold** and `x<y`\n\n- a\n- <script>alert(1)</script>\n\n"
                           "```\n<b>raw</b>\n```")
    assert "<h3>Title</h3>" in out and "<strong>bold</strong>" in out
    assert "<code>x&lt;y</code>" in out
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "&lt;b&gt;raw&lt;/b&gt;" in out


def test_thumbnails_are_small_jpegs_or_smaller_pngs():
    mime, data, w, h = thumbnail(_photo(1200, 900), 320)
    assert mime == "image/jpeg" and (w, h) == (320, 240) and len(data) < 40_000
    from PIL import Image

    flat = io.BytesIO()
    Image.new("RGB", (800, 600), "white").save(flat, format="PNG")
    mime, data, w, h = thumbnail(flat.getvalue(), 320)
    assert (w, h) == (320, 240) and len(data) < 2_000


def test_one_decode_gives_every_size_and_mid_size_photos_are_reencoded(monkeypatch):
    from pyvision_magic import _thumbs

    decodes = []
    real = _thumbs._reduce
    monkeypatch.setattr(_thumbs, "_reduce", lambda raw, sizes: decodes.append(sizes) or
                        real(raw, sizes))
    source = base64.b64encode(_photo(1024, 768, seed=7)).decode()
    _thumbs.prepare(source, [(640, 80), (512, 70), (320, 65)])
    assert len(decodes) == 1 and [s for s, _ in decodes[0]] == [640, 512, 320]
    sizes = [thumbnail(source, side, q)[2:] for side, q in [(640, 80), (512, 70), (320, 65)]]
    assert sizes == [(640, 480), (512, 384), (320, 240)] and len(decodes) == 1, "cached"
    # Within the side but too big to keep (a ~2 MB PNG photo): re-encoded, never read
    # from a closed file.
    mime, data, w, h = thumbnail(_photo(1000, 700, seed=8), 1024, 80)
    assert mime == "image/jpeg" and (w, h) == (1000, 700) and len(data) < 300_000


def test_the_thumbnail_cache_counts_each_source_once_and_forgets_the_oldest(monkeypatch):
    from pyvision_magic import _thumbs

    monkeypatch.setattr(_thumbs, "_cache", type(_thumbs._cache)())
    monkeypatch.setattr(_thumbs, "_cache_bytes", 0)
    sources = [_photo(200, 150, seed=i) for i in range(3)]
    monkeypatch.setattr(_thumbs, "_MAX_SOURCE_BYTES", len(sources[0]) * 2.5)
    for source in sources[:2]:
        _thumbs.prepare(source, [(100, 70), (50, 70), (80, 70)])
    assert list(_thumbs._cache) == sources[:2], "three sizes of a source count once"
    _thumbs.prepare(sources[2], [(100, 70)])
    assert list(_thumbs._cache) == sources[1:], "the oldest source is forgotten"


def _session(turns: int = 10) -> Transcript:
    photo = _photo(2000, 1500, seed=99)
    t = Transcript(question="What is <this>?", model="m",
                   images=[ImageInput("photo.png", photo, "image/png", 2000, 1500)],
                   status="answered", answer="**42**", usage=Usage(1, 2, 3))
    for i in range(turns):
        out = base64.b64encode(_photo(1024, 1024, seed=i)).decode()
        t.turns.append(Turn(index=i, text=f"Step {i}.\n<code>\n```python\nprint({i})\n```\n</code>",
                            code=f"print({i})", exec_status="ok", outputs=[
                                Output(kind="text", stream="stdout", text=f"{i}\n"),
                                Output(kind="image", mime="image/png", data=out, width=1024,
                                       height=1024, variable=f"image_clue_{i + 1}")]))
    return t


def test_a_ten_turn_session_with_an_image_per_turn_saves_under_1_mb():
    t = _session(10)
    html = render_html(t, uid="abc")
    meta = compact_transcript(t)
    size = len(html) + len(json.dumps(meta))
    assert size < 1_000_000, size
    assert len(t.to_json()) > 3 * size, "the full transcript is much larger"
    assert "pyvision-static pyvision-static-abc" in html
    assert "What is &lt;this&gt;?" in html and "<strong>42</strong>" in html
    assert html.count("<img ") == 11
    assert "print" in html and "Turn 10" in html
    back = Transcript.from_dict(meta)
    assert back.turns[3].outputs[1].variable == "image_clue_4"
    assert back.turns[3].outputs[1].width == 512
    assert back.images[0].width == 1024, "a big input is kept at the side the model gets"
    html_again = render_html(t, uid="abc")
    assert html_again == html, "the images are reduced the same way each time (and cached)"


def test_forks_and_plain_text():
    t = _session(2)
    fork = _session(1)
    fork.answer = "43"
    html = render_html(t, forks=[(1, fork)])
    assert "Fork from turn 2" in html and "43" in html
    assert render_text(t).splitlines() == ["pyvision: What is <this>?",
                                           "answered after 2 turns with m", "Answer: **42**"]
    assert render_text(_session(1)).splitlines()[1] == "answered after 1 turn with m"
    assert " · 1 turn · 3 tokens</div>" in render_html(_session(1), uid="a")
    stopped = Transcript(question="q", model="m", status="error", error="endpoint down")
    assert "No answer" in render_html(stopped) and "endpoint down" in render_html(stopped)


def test_the_static_header_gives_the_cached_tokens_when_there_are_some():
    t = _session(1)
    assert "3 tokens</div>" in render_html(t, uid="a")
    t.usage = Usage(2000, 30, 2030, cached_tokens=1536)
    assert "2,030 tokens (1,536 cached)</div>" in render_html(t, uid="a")
