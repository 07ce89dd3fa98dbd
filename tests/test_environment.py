"""In CI, the system tools behind skippable tests must be there: a skip must not hide a gap."""

import os
import shutil

import pytest


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI must have every system tool")
@pytest.mark.parametrize("tool", ["bwrap", "tesseract", "chromium", "openssl"])
def test_ci_has_the_system_tool(tool):
    assert shutil.which(tool), f"{tool} is missing: tests/install_debian_packages.sh should install it"
