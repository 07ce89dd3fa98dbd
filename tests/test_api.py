"""The public API: exactly these names, each importable, and importing the package stays light."""

import subprocess
import sys

import pyvision_magic

EXPECTED = {
    "ChildKernel", "ConfigError", "ExecutionResult", "Executor", "ImageInput", "ImageInputError",
    "KernelDied", "KernelError", "KernelPool", "KernelStartError", "Model", "ModelAuthError",
    "ModelError", "ModelNotFoundError", "ModelRateLimited", "ModelReply", "ModelStreamError",
    "ModelUnreachable", "OpenAIModel", "Output", "PyVisionError", "ReplayModel", "Session",
    "ToolTimeout", "Transcript", "Turn", "Usage", "encode_for_model", "load_image",
    "load_ipython_extension", "parse_reply", "unload_ipython_extension", "__version__",
    "load_video", "VideoInput", "VideoClue",
}


def test_all_is_exactly_the_public_api():
    assert set(pyvision_magic.__all__) == EXPECTED


def test_every_public_name_resolves():
    for name in pyvision_magic.__all__:
        assert getattr(pyvision_magic, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    try:
        pyvision_magic.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_loads_no_heavy_module():
    code = ("import sys, pyvision_magic; heavy = ['openai', 'numpy', 'PIL', 'jupyter_client', "
            "'matplotlib', 'cv2', 'ipywidgets']; print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_share_one_root():
    for name in EXPECTED:
        obj = getattr(pyvision_magic, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, pyvision_magic.PyVisionError), name


def test_the_readme_python_example_runs_against_a_loopback_endpoint(tmp_path, chat_server):
    """The README's "From Python" example, as written, with only the endpoint pointed here."""
    import os
    import re
    from pathlib import Path

    from conftest import code_reply
    from PIL import Image

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    example = re.search(r"### From Python\n\n```python\n(.*?)```", readme, re.S).group(1)
    Image.new("RGB", (64, 48), "gold").save(tmp_path / "coins.png")
    chat_server.script = [code_reply("print(image_clue_0.size)"), "<answer>1</answer>"]
    env = {**os.environ, "OPENAI_BASE_URL": chat_server.base_url, "OPENAI_API_KEY": "sk-test"}
    out = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("answered 1")
    feedback = chat_server.chat_requests[1].body["messages"][-1]["content"][0]["text"]
    assert "(64, 48)" in feedback
