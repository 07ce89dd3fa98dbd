"""A real Jupyter Kernel Gateway on 127.0.0.1, for the gateway executor's tests.

The gateway runs as its own process with an environment free of the user's
secrets, as a gateway on another machine would; where bubblewrap works it also
gets its own PID namespace with its own /proc, so its kernels cannot read this
process's environment through /proc either (as on another machine). Whatever
secret a tool on it finds must then have been sent by us.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

TOKEN = "gateway-test-token-5f1c"
WHERE_VARIABLE = "PYVISION_TEST_WHERE"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_namespace_works() -> bool:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    try:
        return subprocess.run([bwrap, "--dev-bind", "/", "/", "--unshare-pid", "--proc", "/proc",
                               "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Gateway:
    url: str
    token: str
    process: subprocess.Popen
    #: Whether the gateway and its kernels have a PID namespace of their own.
    own_pid_namespace: bool

    #: The CA bundle to trust for an https gateway.
    ca: str | None = None
    #: The gateway's working folder, where it starts its kernels.
    folder: str = ""
    #: Where the gateway writes its log.
    log_path: str = ""

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the gateway's log, for a failing test's message."""
        try:
            with open(self.log_path, "rb") as log:
                return log.read()[-chars:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def request(self, method: str, path: str, token: str | None = None) -> object:
        request = urllib.request.Request(
            self.url + path, method=method,
            headers={"Authorization": f"token {token or self.token}"},
            data=b"{}" if method == "POST" else None)
        context = ssl.create_default_context(cafile=self.ca) if self.ca else None
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernel_ids(self) -> list[str]:
        return [kernel["id"] for kernel in self.request("GET", "/api/kernels")]  # type: ignore[union-attr]


@contextmanager
def running_gateway(*, token: str = TOKEN, extra: Sequence[str] = (),
                    tls_ca: str | None = None) -> Iterator[Gateway]:
    """Start ``jupyter kernelgateway`` on a free port; stop it and its kernels at the end.

    ``tls_ca``: the gateway serves https (give its certfile and keyfile in ``extra``),
    and the fixture's own requests trust this CA bundle.
    """
    if importlib.util.find_spec("kernel_gateway") is None:
        message = "jupyter_kernel_gateway is not installed: pip install -e '.[test]'"
        if os.environ.get("CI"):  # CI must not hide a missing install behind a skip
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    runtime = tempfile.mkdtemp(prefix="kg-runtime-")
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR")
           if name in os.environ}
    env["JUPYTER_RUNTIME_DIR"] = runtime
    # Only the gateway's kernels have it: a tool that prints it ran there.
    env[WHERE_VARIABLE] = "on-the-gateway"
    command = [sys.executable, "-m", "kernel_gateway", "--ip=127.0.0.1", f"--port={port}",
               f"--KernelGatewayApp.auth_token={token}", "--KernelGatewayApp.port_retries=0",
               "--JupyterWebsocketPersonality.list_kernels=True",  # for the tests to check
               *extra]
    namespaced = _pid_namespace_works()
    if namespaced:
        command = [shutil.which("bwrap") or "bwrap", "--dev-bind", "/", "/", "--unshare-pid",
                   "--die-with-parent", "--proc", "/proc", *command]
    log = open(os.path.join(runtime, "gateway.log"), "wb")
    # Its own folder, never the checkout: the test can look at what lands there.
    folder = os.path.join(runtime, "gateway-folder")
    os.mkdir(folder)
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, cwd=folder)
    scheme = "https" if tls_ca else "http"
    gateway = Gateway(f"{scheme}://127.0.0.1:{port}", token, process, namespaced, tls_ca,
                      folder, log.name)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                gateway.request("GET", "/api/kernelspecs")
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    with open(log.name, "rb") as text:
                        tail = text.read()[-2000:].decode(errors="replace")
                    pytest.fail(f"the kernel gateway did not start: {tail}")
                time.sleep(0.2)
        yield gateway
    finally:
        process.terminate()  # the gateway shuts its kernels down on SIGTERM
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(runtime, ignore_errors=True)


#: Variables the module's gateway would pass from a start request into its kernels:
#: so if we ever sent them, the attack in test_gateway.py would find them.
PASSED_THROUGH = ("OPENAI_API_KEY", "MY_SERVICE_TOKEN")


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    extra = [f"--JupyterWebsocketPersonality.env_whitelist={name}" for name in PASSED_THROUGH]
    with running_gateway(extra=extra) as running:
        yield running
