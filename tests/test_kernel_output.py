"""What a tool prints and shows, as the parent collects it: cleaned, capped, never fatal.

The first tests feed iopub messages as a kernel sends them to the collector; the
last ones run tools in a real child kernel. A tool's output is untrusted: broken
or huge images, escape sequences, progress bars, binary and lone surrogates must
come back as text for the model, never as an exception out of ``execute``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from test_kernel import _LoopThread
from PIL import Image

from pyvision_magic.kernel._child import ChildKernel
from pyvision_magic.kernel._output import (
    MAX_DECODE_PIXELS,
    OutputCollector,
    clean_text,
    collect_message,
    execution_result,
)
from pyvision_magic._records import ExecutionResult, Output

T = TypeVar("T")
NOTICE = "[pyvision] the tool displayed an image that could not be read"
#: What the kernel says first, before the parent sees such an image (both check).
KERNEL_NOTICE = "[pyvision] the tool displayed an invalid image"


# -- messages as the kernel sends them --------------------------------------------


def stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"msg_type": "stream", "content": {"name": name, "text": text}}


def display(data: dict[str, Any], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"msg_type": "display_data", "content": {"data": data, "metadata": metadata or {}}}


def png_bytes(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(buffer, format="JPEG")
    return buffer.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def collected_from(*messages: dict[str, Any], max_chars: int | None = 20000,
                   max_images: int | None = 8, max_pixels: int | None = 1024 * 1024) -> list[Output]:
    collected = OutputCollector(max_chars, max_images, max_pixels)
    for msg in messages:
        collect_message(msg, collected)
    asyncio.run(collected.finish())
    return collected.outputs()


def texts(outputs: list[Output]) -> str:
    return "".join(o.text for o in outputs if o.kind in ("text", "error"))


# -- text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,shown",
    [
        ("10%\r20%\r100%\n", "100%\n"),  # a tqdm-style progress bar
        ("a\r\nb\r\n", "a\nb\n"),  # Windows line ends
        ("abcdef\rXY\n", "XYcdef\n"),  # a shorter frame overwrites the start only
        ("saving...\r\ndone\n", "saving...\ndone\n"),
        ("\x1b[31mred\x1b[0m \x1b[1;32mbold green\x1b[m\n", "red bold green\n"),
        ("copy\x1b]52;c;c2VjcmV0\x07 me\n", "copy me\n"),  # OSC 52 sets the clipboard
        ("\x1b]0;new title\x1b\\text\n", "text\n"),  # OSC 0 ended by ST
        ("up\x1b[2A\x1b[10;5Hdown\x1b[2J\x1b[K\n", "updown\n"),  # cursor movement, clearing
        ("\x1b]8;;http://x\x07link\x1b]8;;\x07\n", "link\n"),  # a hyperlink
        ("\x1bc\x1b(Bplain\x1b7\n", "plain\n"),  # reset, charset, save cursor
        ("ding\x07 back\x08\x08\n", "ding back\n"),  # bell and backspace dropped
        ("bin\x00\x01\x7f\x9b end\n", "bin\\x00\\x01\\x7f\\x9b end\n"),  # shown as escapes
        ("lone \ud800 and \udcff\n", "lone \ufffd and \ufffd\n"),
        ("tab\tstays\nand\nnewlines\n", "tab\tstays\nand\nnewlines\n"),
    ],
    ids=["progress", "crlf", "overwrite", "cr-before-newline", "colours", "osc52", "osc0",
         "cursor", "hyperlink", "other-escapes", "bell-backspace", "binary", "surrogates",
         "tab-newline"],
)
def test_clean_text_shows_text_as_a_terminal_would(raw, shown):
    assert clean_text(raw) == shown
    (output,) = collected_from(stream(raw))
    assert output.text == shown


def test_progress_frames_split_across_messages_collapse_per_line():
    frames = [stream("start\n"), stream("  0%|     |"), stream("\r 50%|##   |"),
              stream("\r100%|#####|"), stream("\n"), stream("fetch 1/3\rfetch 2/3"),
              stream("\rfetch 3/3\r"), stream("\n")]
    (output,) = collected_from(*frames)
    assert output.text == "start\n100%|#####|\nfetch 3/3\n"
    # A line still being written when the tool ended shows its last frame.
    (unfinished,) = collected_from(stream("abc"), stream("\rX"))
    assert unfinished.text == "Xbc"


def test_progress_on_stderr_between_prints_keeps_both_streams():
    outputs = collected_from(stream("\r 10%", "stderr"), stream("\r100%", "stderr"),
                             stream("printed\n"), stream("\n", "stderr"))
    assert [(o.stream, o.text) for o in outputs] == [
        ("stderr", "100%"), ("stdout", "printed\n"), ("stderr", "\n")]


def test_every_text_output_survives_json_and_utf_8():
    bad = "x\ud800\x1b]52;c;QQ==\x07\x00y"
    outputs = collected_from(
        stream(bad),
        display({"text/plain": bad}),
        {"msg_type": "error", "content": {"ename": "ValueError" + bad, "evalue": bad,
                                          "traceback": [bad, "\x1b[31mValueError\x1b[0m: " + bad]}},
    )
    for output in outputs:
        for value in (output.text, output.ename or "", output.evalue or ""):
            value.encode("utf-8")  # no lone surrogate left
            assert "\x1b" not in value and "\x07" not in value
    json.dumps([o.to_dict() for o in outputs], ensure_ascii=False).encode("utf-8")
    assert "x\ufffdy" not in texts(outputs) and "x\ufffd\\x00y" in texts(outputs)


def test_text_cap_counts_the_collapsed_text():
    # 2000 frames of 20 characters are one line of 20 on a terminal: nothing is cut.
    frames = [stream(f"\rstep {i:5d} of 2000 ") for i in range(2000)]
    (output,) = collected_from(*frames, stream("\n"), max_chars=1000)
    assert output.text == "step  1999 of 2000 \n"


def test_malformed_messages_become_notices_not_exceptions():
    outputs = collected_from(
        stream("before\n"),
        display({"text/plain": ""}, {"pyvision": {"dropped_images": "many"}}),
        {"msg_type": "stream", "content": {"name": "weird", "text": 42}},
        display({"text/plain": ["not", "text"]}),
        {"msg_type": "error", "content": {"ename": None, "evalue": 3, "traceback": "flat"}},
        {"msg_type": "display_data", "content": {"data": "not a dict"}},
        stream("after\n"),
    )
    shown = texts(outputs)
    assert shown.startswith("before\n") and shown.endswith("after\n")
    assert shown.count("an output of the tool could not be read") == 2
    assert "42" in shown and "['not', 'text']" in shown and "flat" in shown


# -- images ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,reason",
    [
        (b64(png_header_claiming(20000, 20000)), "20000x20000 pixels, more than the 50,000,000"),
        (b64(png_header_claiming(0, 10)), ""),
        (b64(b"\x89PNG\r\n\x1a\nxxxxxxxxxxxxxxxx"), ""),
        (b64(png_bytes(50, 40)[:-30]), ""),  # truncated: the header is fine, the pixels are not
        (b64(b"GIF89a" + b"\0" * 20), "neither PNG nor JPEG"),
        ("this is not base64!", "not valid base64"),
        (12345, "not base64 text"),
        ("", "neither PNG nor JPEG"),
    ],
    ids=["bomb-header", "no-pixels", "garbage-after-signature", "truncated", "gif",
         "not-base64", "not-text", "empty"],
)
def test_an_unreadable_image_becomes_one_line_of_text(data, reason):
    outputs = collected_from(stream("before\n"), display({"image/png": data, "text/plain": "<img>"}),
                             stream("after\n"))
    assert [o.kind for o in outputs] == ["text", "text", "text"]
    notice = outputs[1]
    assert notice.text.startswith(NOTICE) and reason in notice.text
    assert notice.text.count("\n") == 1 and notice.data is None


def test_images_over_the_cap_are_counted_before_any_decoding():
    bomb = display({"image/png": b64(png_header_claiming(20000, 20000))})
    collected = OutputCollector(20000, 2, 1024 * 1024)
    for _ in range(500):
        collect_message(bomb, collected)
    # Nothing was decoded yet, and only the two within the cap ever will be.
    assert collected.images == 2 and collected.dropped_images == 498
    result = execution_result(collected, outcome="done", interrupted=False, reply_status="ok",
                              limit=60.0, duration=0.1)
    assert result.status == "ok"
    assert [o.text.startswith(NOTICE) for o in result.outputs] == [True, True]
    assert "498 more image(s) were not shown (limit 2 per execution)" in result.note


def test_images_are_checked_whatever_their_metadata_claims():
    big = png_bytes(2000, 1500)
    outputs = collected_from(
        # Claimed small and already bound, but 3 megapixels: it is shrunk all the same.
        display({"image/png": b64(big)},
                {"image/png": {"width": 1, "height": 1, "variable": "image_clue_7"}}),
        # JPEG bytes sent as PNG: kept, as what they are.
        display({"image/png": b64(jpeg_bytes(30, 20))}),
        # A variable name that is not one is not passed on.
        display({"image/png": b64(png_bytes(10, 10))},
                {"image/png": {"variable": "x\x1b]52;c;QQ==\x07"}}),
        max_pixels=1024 * 1024,
    )
    shrunk, jpeg, named = outputs
    assert shrunk.variable == "image_clue_7" and shrunk.width * shrunk.height <= 1024 * 1024
    with Image.open(io.BytesIO(base64.b64decode(shrunk.data))) as image:
        assert image.size == (shrunk.width, shrunk.height) and image.format == "PNG"
    assert (jpeg.mime, jpeg.width, jpeg.height) == ("image/jpeg", 30, 20)
    assert named.variable is None and (named.width, named.height) == (10, 10)


def test_an_image_within_the_decode_limit_but_over_the_budget_is_shrunk():
    side = int(MAX_DECODE_PIXELS ** 0.5) - 1  # about 7000 x 7000, 49 megapixels
    (output,) = collected_from(display({"image/jpeg": b64(jpeg_bytes(side, side))}),
                               max_pixels=512 * 512)
    assert output.kind == "image" and output.width * output.height <= 512 * 512


def test_finish_decodes_the_images_off_the_event_loop():
    collected = OutputCollector(20000, 8, 1024 * 1024)
    for _ in range(3):
        collect_message(display({"image/png": b64(png_bytes(3000, 2000))}), collected)

    async def decode_while_ticking() -> int:
        ticks, done = 0, False

        async def tick() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0)
        before = ticks
        await collected.finish()  # decoding on the loop would leave the ticker no turn
        during = ticks - before
        done = True
        await ticker
        return during

    assert asyncio.run(decode_while_ticking()) > 0
    outputs = collected.outputs()
    assert [o.kind for o in outputs] == ["image"] * 3
    assert all(o.width * o.height <= 1024 * 1024 for o in outputs)


def test_notices_stay_outside_the_text_cap():
    outputs = collected_from(stream("a" * 5000), display({"image/png": "%%%"}),
                             stream("b" * 5000), max_chars=100)
    shown = texts(outputs)
    assert NOTICE in shown and "characters of output dropped" in shown
    assert shown.startswith("a" * 50) and shown.rstrip().endswith("b" * 50)


# -- a real kernel ---------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel() -> Iterator[tuple[_LoopThread, ChildKernel]]:
    runner = _LoopThread()
    child = ChildKernel(timeout=60.0)
    runner.run(child.start())
    yield runner, child
    runner.run(child.shutdown())
    runner.close()


def execute(kernel: tuple[_LoopThread, ChildKernel], code: str) -> ExecutionResult:
    runner, child = kernel
    return runner.run(child.execute(code))


SHOW = """\
import base64, IPython.display as d
def show(b64, fmt="png"):
    d.display(d.Image(data=base64.b64decode(b64), format=fmt))
"""


def test_a_tool_showing_a_bomb_or_broken_image_gets_text_back(kernel):
    good = png_bytes(30, 20)
    code = SHOW + (
        f"show({b64(png_header_claiming(20000, 20000))!r})\n"
        f"show({b64(b'not a png at all')!r})\n"
        f"show({b64(good)!r})\n"
        "print('still running')\n"
    )
    result = execute(kernel, code)
    assert result.status == "ok"
    kinds = [o.kind for o in result.outputs]
    assert kinds == ["text", "text", "image", "text"], result.outputs
    assert "20000x20000 pixels" in result.outputs[0].text
    assert KERNEL_NOTICE in result.outputs[1].text or NOTICE in result.outputs[1].text
    assert (result.outputs[2].width, result.outputs[2].height) == (30, 20)
    assert result.outputs[3].text == "still running\n"
    # The kernel is unharmed and the next tool runs as usual.
    assert texts(execute(kernel, "print(6 * 7)").outputs) == "42\n"


def test_a_tool_showing_500_broken_images_costs_only_the_cap(kernel):
    result = execute(kernel, SHOW + f"for i in range(500):\n    show({b64(b'junk')!r})")
    assert result.status == "ok"
    notices = [o for o in result.outputs if NOTICE in o.text or KERNEL_NOTICE in o.text]
    assert len(notices) == 8  # the other 492 were counted, never decoded
    assert "492 more image(s) were not shown (limit 8 per execution)" in result.note


def test_a_large_ipython_image_is_shrunk_to_the_budget(kernel):
    result = execute(kernel, SHOW + f"show({b64(jpeg_bytes(3000, 2000))!r}, 'jpeg')")
    (image,) = result.outputs
    _, child = kernel
    assert image.kind == "image" and image.width * image.height <= child.max_image_pixels
    with Image.open(io.BytesIO(base64.b64decode(image.data))) as decoded:
        assert decoded.size == (image.width, image.height)


def test_progress_bars_colours_and_terminal_escapes_from_a_tool_are_cleaned(kernel):
    code = (
        "import os, sys, time\n"
        "for i in range(0, 101, 25):\n"
        "    sys.stderr.write(f'\\r{i:3d}%|' + '#' * (i // 25) + ' ' * (4 - i // 25) + '|')\n"
        "    sys.stderr.flush(); time.sleep(0.05)\n"
        "sys.stderr.write('\\n')\n"
        "print('\\x1b[1;31mred\\x1b[0m \\x1b]52;c;c2VjcmV0\\x07\\x1b]0;title\\x07\\x1b[2J done')\n"
        "sys.stdout.flush()\n"
        "os.write(1, b'raw\\x00\\x1b[Hbytes\\n')\n"
    )
    result = execute(kernel, code)
    stderr = "".join(o.text for o in result.outputs if o.stream == "stderr")
    stdout = "".join(o.text for o in result.outputs if o.stream == "stdout")
    assert stderr == "100%|####|\n"
    assert "red  done\n" in stdout and "raw\\x00bytes\n" in stdout
    assert not any(c in texts(result.outputs) for c in "\x1b\x07\x00\r")


def test_an_error_with_a_surrogate_and_escapes_is_clean_text(kernel):
    result = execute(kernel, "raise ValueError('bad \\udcff \\x1b]52;c;QQ==\\x07value')")
    (error,) = result.outputs
    assert result.status == "error" and error.ename == "ValueError"
    assert error.evalue == "bad \ufffd value"
    json.dumps(error.to_dict(), ensure_ascii=False).encode("utf-8")
