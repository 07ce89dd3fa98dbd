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
