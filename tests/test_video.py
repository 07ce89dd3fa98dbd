"""Video inputs: the VideoClue reader, probing and sampling, every bad clip, and whole
sessions through the real CLI with clips written by cv2.VideoWriter here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import code_reply

from pyvision_magic import Transcript
from pyvision_magic._errors import ConfigError, ImageInputError
from pyvision_magic._video import load_media, load_video, sample_frames
from pyvision_magic.kernel.video_reader import VideoClue

WIDTH, HEIGHT, FPS, FRAMES = 160, 96, 20, 60


def dot_clip(path: Path, *, fps: int = FPS, frames: int = FRAMES, fourcc: str = "mp4v") -> Path:
    """Frame i has a white bar at column 2*i (so a frame tells its own index) and a red
    dot that reaches the right edge at frame 40 (2.0 s at 20 fps)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        frame[:8, 2 * i:2 * i + 2] = 255
        x = 10 + round((WIDTH - 1 - 8 - 10) * min(i, 40) / 40)
        cv2.circle(frame, (x, 60), 8, (0, 0, 255), -1)  # BGR red
        writer.write(frame)
    writer.release()
    return path


def bar_index(rgb: np.ndarray) -> int:
    return int(np.argmax(rgb[3, :, 1] > 128)) // 2


@pytest.fixture
def clip(tmp_path) -> Path:
    return dot_clip(tmp_path / "clip.mp4")


# -- the reader ----------------------------------------------------------------------


@pytest.mark.parametrize("fourcc,suffix", [("mp4v", ".mp4"), ("MJPG", ".avi"), ("VP80", ".webm")])
def test_reader_facts_and_exact_frames(tmp_path, fourcc, suffix):
    path = dot_clip(tmp_path / f"c{suffix}", fourcc=fourcc)
    with VideoClue(path) as video:
        assert (len(video), video.fps, video.size) == (FRAMES, FPS, (WIDTH, HEIGHT))
        assert video.duration == pytest.approx(3.0)
        assert video.frame(0).mode == "RGB" and video.frame(0).size == (WIDTH, HEIGHT)
        # Out of order, backwards, by time and from the end: always the frame asked for.
        for i in (37, 5, 6, 59, 0, 21):
            assert bar_index(np.asarray(video.frame(i))) == i
        assert bar_index(np.asarray(video.at(1.52))) == 30
        assert bar_index(np.asarray(video.frame(-1))) == FRAMES - 1
        assert [bar_index(np.asarray(f)) for f in video.frames(step=25)] == [0, 25, 50]
        assert video.uniform_indices(4) == [0, 20, 39, 59]
        with pytest.raises(IndexError, match="60 frames"):
            video.frame(60)
        with pytest.raises(IndexError, match="outside the clip"):
            video.at(3.5)
        assert "60 frames, 20 fps, 3.00 s, 160x96" in repr(video)


def test_array_clip_is_lossless_and_one_second_per_frame():
    frames = np.random.default_rng(0).integers(0, 256, (5, 12, 10, 3), dtype=np.uint8)
    video = load_video(frames)
    assert (video.frame_count, video.fps, video.width, video.height) == (5, 1.0, 10, 12)
    with VideoClue(video.path, fps=video.fps) as clue:
        assert np.array_equal(np.asarray(clue.at(3.0)), frames[3])
    bgr = load_video(frames, bgr=True, fps=4)
    with VideoClue(bgr.path, fps=bgr.fps) as clue:
        assert np.array_equal(np.asarray(clue.frame(1)), frames[1][..., ::-1])
        assert clue.duration == 1.25


def test_clips_of_a_killed_process_are_removed_by_the_next_one(tmp_path):
    """An array clip is a file in a per-process temp folder, removed at exit; a
    process killed before its exit leaves it, and the next process that makes
    one removes it."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    make = ("import os, signal, numpy as np; from pyvision_magic._video import load_video; "
            "v = load_video(np.zeros((2, 8, 8, 3), np.uint8)); print(os.path.dirname(v.path), "
            "flush=True); {end}")
    killed = subprocess.run([sys.executable, "-c", make.format(
        end="os.kill(os.getpid(), signal.SIGKILL)")], env=env, capture_output=True, text=True)
    left = killed.stdout.strip()
    assert killed.returncode == -9 and os.path.isdir(left)
    ended = subprocess.run([sys.executable, "-c", make.format(end="")], env=env,
                           capture_output=True, text=True, check=True)
    assert not os.path.exists(left)  # swept by the second process
    assert not os.path.exists(ended.stdout.strip())  # removed at its own exit
    assert [p.name for p in tmp_path.iterdir()] == []


def test_sampled_frames_are_labelled_spread_and_share_one_image_budget(clip):
    video = load_video(clip)
    frames = sample_frames(video, 8, 65_536)
    assert [f.index for f in frames] == [0, 8, 17, 25, 34, 42, 51, 59]
    assert frames[2].seconds == pytest.approx(17 / FPS)
    assert all(f.image.width * f.image.height <= 65_536 // 8 for f in frames)
    assert all(f.image.width / f.image.height == pytest.approx(WIDTH / HEIGHT, rel=0.1) for f in frames)


# -- bad clips: one sentence each ---------------------------------------------------------


def test_missing_empty_and_junk_files(tmp_path):
    with pytest.raises(ImageInputError, match=r"^Video file not found: .*nope.mp4. Check the path.$"):
        load_media(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"is empty \(0 bytes\)"):
        load_media(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all " * 50)
    with pytest.raises(ImageInputError, match="is not a video OpenCV can read; pass an MP4"):
        load_media(tmp_path / "junk.mp4")


def test_clip_without_frames_and_truncated_clip(tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "none.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
    writer.release()
    with pytest.raises(ImageInputError, match="truncated or has no frames"):
        load_media(tmp_path / "none.mp4")
    data = dot_clip(tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])  # the index (moov) is at the end
    with pytest.raises(ImageInputError, match="truncated or has no frames; save or download it again"):
        load_media(tmp_path / "cut.mp4")


def test_codec_opencv_cannot_decode_is_named(tmp_path):
    data = dot_clip(tmp_path / "ok.avi", fourcc="MJPG").read_bytes()
    (tmp_path / "odd.avi").write_bytes(data.replace(b"MJPG", b"QQQQ"))
    with pytest.raises(ImageInputError, match=r"cannot decode the video .*odd.avi \(its codec 'QQQQ'\); "
                                              "re-encode it"):
        load_media(tmp_path / "odd.avi")


def test_size_and_duration_caps_are_configurable(clip):
    from pyvision_magic._replay import ReplayModel
    from pyvision_magic._session import Session
    from pyvision_magic.kernel._child import ChildKernel

    video = load_video(clip)
    model = ReplayModel(Transcript(question="Q?", model="m"))
    kernel = ChildKernel()  # never started: the caps are checked first
    with pytest.raises(ConfigError, match=r"lasts 3.0 s, over the 2 s limit; .*max_video_seconds"):
        Session("Q?", videos=[video], model=model, executor=kernel, max_video_seconds=2)
    with pytest.raises(ConfigError, match=r"is 6.\d KiB, over the 1000 bytes limit; .*max_video_bytes"):
        Session("Q?", videos=[video], model=model, executor=kernel, max_video_bytes=1000)
    Session("Q?", videos=[video], model=model, executor=kernel, max_video_seconds=None,
            max_video_bytes=None)  # no caps


def test_images_still_load_and_a_4d_array_in_a_variable_is_a_clip(tmp_path, image_path):
    from pyvision_magic._image_sources import resolve_images
    from pyvision_magic._video import VideoInput

    frames = np.zeros((3, 8, 8, 3), np.uint8)
    items = resolve_images(["frames", str(image_path), str(dot_clip(tmp_path / "v.mov"))],
                           {"frames": frames})
    assert [type(i).__name__ for i in items] == ["VideoInput", "ImageInput", "VideoInput"]
    assert isinstance(items[0], VideoInput) and items[0].frame_count == 3
    with pytest.raises(ImageInputError, match=r"shape \(T, H, W, 3\)"):
        resolve_images(["frames"], {"frames": np.zeros((3, 8, 8, 2), np.uint8)})


# -- whole sessions through the real CLI -------------------------------------------------

READ_FRAMES = """
import numpy as np
print(len(video_clue_0), video_clue_0.fps, video_clue_0.size)
def red(i):
    a = np.asarray(video_clue_0.frame(i)).astype(int)
    return (a[..., 0] > 150) & (a[..., 1] < 100)
first = next(i for i in range(len(video_clue_0)) if red(i)[:, -1].any())
print('touches at', video_clue_0.time_of(first), 's')
"""

WRITE_CLIP = """
import cv2, numpy as np
w = cv2.VideoWriter('slow.mp4', cv2.VideoWriter_fourcc(*'mp4v'), 10, (64, 48))
for i in range(30):
    w.write(np.full((48, 64, 3), i * 8, np.uint8))
w.release()
"""


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyvision_magic", *args], capture_output=True,
                          text=True, env=env, timeout=240, check=False)


@pytest.fixture
def cli_env(chat_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(OPENAI_API_KEY="test-key", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]))
    return env


def test_ask_about_a_clip_end_to_end_then_replay_without_it(chat_server, cli_env, clip, tmp_path):
    chat_server.script = [code_reply(READ_FRAMES), code_reply(WRITE_CLIP), "<answer>2.0 s</answer>"]
    saved = tmp_path / "run.json"
    done = run_cli("ask", "--base-url", chat_server.base_url, "--model", "m", "-i", str(clip),
                   "--video-frames", "5", "--save", str(saved),
                   "When does the dot reach the right edge?", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "2.0 s"
    assert "video_clue_0: clip.mp4 (3.00 s, 20 fps, 60 frames, 160x96" in done.stderr
    assert "5 frames sampled for the model" in done.stderr
    # The tool read the whole clip in the kernel and found the exact frame.
    assert "60 20.0 (160, 96)" in done.stderr and "touches at 2.0 s" in done.stderr

    first = chat_server.chat_requests[0].body["messages"][1]["content"]
    texts = [p["text"] for p in first if p["type"] == "text"]
    assert texts[0].startswith("video_clue_0 (clip.mp4): a video of 3.00 s at 20 fps, 60 frames "
                               "of 160x96 pixels.")
    assert "video_clue_0.at(1.5)" in texts[0]
    assert texts[1:6] == [f"video_clue_0 frame {i} at {i / 20:.2f} s:" for i in (0, 15, 30, 44, 59)]
    assert sum(p["type"] == "image_url" for p in first) == 5
    assert texts[-1] == "When does the dot reach the right edge?"

    # The clip the second tool wrote came back as sampled frames.
    second = chat_server.chat_requests[2].body["messages"][-1]["content"]
    assert "[video slow.mp4: 3.00 s, 10 fps, 30 frames, 64x48; 5 frames sampled evenly" in second[0]["text"]
    assert sum(p["type"] == "image_url" for p in second) == 5

    data = json.loads(saved.read_text())
    assert data["videos"][0]["path"] == str(clip) and len(data["videos"][0]["frames"]) == 5
    assert len(saved.read_bytes()) < 4 * clip.stat().st_size  # frames, never the clip
    transcript = Transcript.load(saved)
    assert transcript.videos[0].frames[3].index == 44

    # The clip is gone: the replay still shows the frames; its tool now fails, and says so.
    clip.unlink()
    replayed = run_cli("replay", str(saved), env=cli_env)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines()[-1] == "2.0 s"
    assert "NameError" in replayed.stderr and "video_clue_0" in replayed.stderr


def test_bad_clip_on_the_command_line_is_one_line_exit_2(chat_server, cli_env, tmp_path):
    (tmp_path / "junk.webm").write_bytes(b"\x00" * 100)
    done = run_cli("ask", "--base-url", chat_server.base_url, "-i", str(tmp_path / "junk.webm"),
                   "Q?", env=cli_env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("pyvision: ")
    assert "junk.webm is not a video OpenCV can read" in done.stderr and "Traceback" not in done.stderr
    assert chat_server.chat_requests == []


def test_clip_is_bound_in_the_sandboxed_kernel(clip):
    import asyncio

    from pyvision_magic._video_session import bind_videos
    from pyvision_magic.kernel._child import ChildKernel

    async def go():
        kernel = ChildKernel(sandbox=True)
        try:
            await kernel.start()
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"no sandbox here: {exc}")
        try:
            await kernel.bind_images([])
            names = await bind_videos(kernel, [load_video(clip)], max_bytes=None)
            result = await kernel.execute("print(video_clue_0.path, len(video_clue_0.frames(step=20)))")
            return names, kernel.sandboxed, result
        finally:
            await kernel.shutdown()

    names, sandboxed, result = asyncio.run(go())
    assert sandboxed and names == ["video_clue_0"]
    assert result.status == "ok", result.outputs
    printed = result.outputs[0].text
    assert printed.rstrip().endswith("inputs/video_clue_0.mp4 3")
    assert str(clip.parent) not in printed  # a copy in the scratch folder, not the user's file


def test_a_link_the_tool_plants_is_not_followed(tmp_path):
    import asyncio

    from pyvision_magic._records import ExecutionResult
    from pyvision_magic._video_session import WrittenVideos

    secret = dot_clip(tmp_path / "secret.mp4")
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    class Folder:  # only the scratch folder: what WrittenVideos uses of an executor
        scratch_path = scratch

    async def go():
        watcher = WrittenVideos(frames=3, max_pixels=30_000, max_bytes=None, max_seconds=None)
        await watcher.snapshot(Folder())
        (scratch / "out.mp4").symlink_to(secret)
        dot_clip(scratch / "real.mp4")
        (scratch / "junk.avi").write_bytes(b"RIFF" + b"\0" * 200)
        return await watcher.collect(Folder(), ExecutionResult("ok"))

    result = asyncio.run(go())
    texts = [o.text for o in result.outputs if o.kind == "text"]
    assert len(texts) == 2 and texts[1].startswith("[video real.mp4: 3.00 s")
    # A clip that cannot be read is one line for the model, named as the tool named it.
    assert texts[0] == ("[video junk.avi cannot be shown: junk.avi is not a video OpenCV can read; "
                        "pass an MP4, WebM, AVI or MOV file.]\n")
    assert sum(o.kind == "image" for o in result.outputs) == 3


def test_views_show_the_sampled_frames_from_the_transcript(clip):
    from pyvision_magic._render import render_html
    from pyvision_magic.ui import SessionWidget

    video = load_video(clip)
    video.frames = sample_frames(video, 3, 65_536)
    transcript = Transcript(question="Q?", model="m", videos=[video])
    clip.unlink()  # the clip is gone: its frames are enough to show it
    loaded = Transcript.from_dict(json.loads(transcript.to_json()))
    assert not loaded.videos[0].available and [f.index for f in loaded.videos[0].frames] == [0, 30, 59]
    page = render_html(loaded)
    assert page.count("alt='video_clue_0 ") == 3 and "alt='video_clue_0 1.50 s'" in page
    view = SessionWidget("Q?", [], "m", videos=loaded.videos)
    strip = view.header["images"]
    assert [(t["variable"], t["name"]) for t in strip] == [
        ("video_clue_0", "0.00 s (frame 0)"), ("video_clue_0", "1.50 s (frame 30)"),
        ("video_clue_0", "2.95 s (frame 59)")]
    assert all(t["key"] for t in strip)


def test_a_restarted_kernel_gets_its_clip_back_without_writing_through_a_planted_link(
        chat_server, clip, tmp_path, monkeypatch):
    from conftest import run_session

    from pyvision_magic._model import OpenAIModel

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    chat_server.script = [
        code_reply("import os\nos.remove('inputs/video_clue_0.mp4')\n"
                   f"os.symlink({str(victim)!r}, 'inputs/video_clue_0.mp4')\nos._exit(1)"),
        code_reply("import os\nprint('frames', len(video_clue_0), os.path.islink(video_clue_0.path))"),
        "<answer>done</answer>",
    ]
    session = run_session("Q?", [], OpenAIModel(base_url=chat_server.base_url, model="m"),
                          videos=[load_video(clip)])
    assert session.status == "answered", session.transcript.error
    died, after = session.transcript.turns[:2]
    assert died.exec_status == "died"
    assert after.outputs[0].text == "frames 60 False\n"
    assert victim.read_text() == "precious"


@pytest.fixture
def shell(no_openai_env):
    from IPython.core.interactiveshell import InteractiveShell

    from pyvision_magic.magics import load_ipython_extension, unload_ipython_extension

    ip = InteractiveShell.instance()
    ip.run_line_magic("config", "PyVision.use_pool = False")
    load_ipython_extension(ip)
    yield ip
    unload_ipython_extension(ip)
    for name in ("frames", "r", "clip_url"):
        ip.user_ns.pop(name, None)


@pytest.fixture
def clip_server(tmp_path):
    """Serves tmp_path over HTTP on loopback."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_magic_takes_an_array_of_frames_and_a_clip_url(shell, make_chat_server, clip,
                                                           clip_server, monkeypatch):
    from IPython.core.error import UsageError

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    frames = np.zeros((6, 10, 12, 3), np.uint8)
    frames[4, :, :, 0] = 200  # frame 4 (4 s at 1 fps) is red
    shell.user_ns["frames"] = frames
    server = make_chat_server([
        code_reply("import numpy as np\nprint(len(video_clue_0), video_clue_0.fps,"
                   " np.asarray(video_clue_0.at(4.0))[0, 0].tolist(), video_clue_1.size)"),
        "<answer>4 s</answer>"])
    shell.run_cell_magic("pyvision", f"-i frames -i {clip_server}/clip.mp4 --video-frames 3 "
                         f"--base-url {server.base_url} -o r", "When is it red?")
    r = shell.user_ns["r"]
    assert r.answer == "4 s", r.transcript.error
    assert r.transcript.turns[0].outputs[0].text == "6 1.0 [200, 0, 0] (160, 96)\n"
    assert [len(v.frames) for v in r.transcript.videos] == [3, 3]
    assert r.transcript.videos[1].name == "clip.mp4" and r.transcript.videos[1].source == f"{clip_server}/clip.mp4"
    # Run again after a restart, and in a new kernel: the clips are bound again.
    shell.run_line_magic("pyvision", "restart 1")
    assert r.rerun(0, "print(len(video_clue_0), len(video_clue_1))").outputs[0].text == "6 60\n"
    shell.run_line_magic("pyvision", "stop all")
    assert r.rerun(0, "print(video_clue_1.fps)").outputs[0].text == "20.0\n"
    # An exported notebook reads the clips from their files.
    from pyvision_magic._export import export_notebook

    cells = export_notebook(r.transcript).cells
    source = next(c.source for c in cells if "VideoClue(" in c.source)
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102 - our own generated code
    assert len(namespace["video_clue_0"]) == 6 and namespace["video_clue_1"].fps == 20.0
    with pytest.raises(UsageError, match=r"A video array must have shape \(T, H, W, 3\)"):
        shell.user_ns["frames"] = np.zeros((2, 4, 4, 4), np.uint8)
        shell.run_cell_magic("pyvision", "-i frames", "q")


def test_the_frames_go_into_the_pyvision_format_opening_too(chat_server, clip, monkeypatch):
    from conftest import run_session

    from pyvision_magic._model import OpenAIModel

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    chat_server.script = ["<answer>2</answer>"]
    session = run_session("When does the dot reach the edge?", [],
                          OpenAIModel(base_url=chat_server.base_url, model="m"),
                          videos=[load_video(clip)], prompt_profile="pyvision-format")
    assert session.status == "answered"
    [opening] = chat_server.chat_requests[0].body["messages"]
    assert opening["role"] == "user"
    kinds = [p["type"] for p in opening["content"]]
    assert kinds.count("image_url") == 8 and kinds[-1] == "text"
    assert "When does the dot reach the edge?" in opening["content"][-1]["text"]
    assert "video_clue_0" in json.dumps(opening["content"][:-1])
