#!/usr/bin/env bash
# Debian packages the test suite uses, installed only when missing:
#   bubblewrap    the kernel sandbox (tests/test_kernel_sandbox.py, --sandbox)
#   tesseract-ocr the OCR session of the tool gallery
#   chromium      the JupyterLab browser test (Playwright drives /usr/bin/chromium;
#                 Playwright's own browser download is never used)
#   nodejs, npm   building the notebook front end (js/) when the package is installed
#   openssl       a certificate for the https gateway of tests/test_gateway.py
# Without root and sudo it says what is missing and carries on: those tests then
# skip locally. Under CI=true, tests/test_environment.py fails instead of skipping,
# so CI cannot hide a missing install step.
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v tesseract >/dev/null || need+=(tesseract-ocr)
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(nodejs npm)
command -v openssl >/dev/null || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo)
else
    echo "install these Debian packages for the full test suite: ${need[*]}" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
