"""The gateway executor against a real Jupyter Kernel Gateway on 127.0.0.1.

The kernel contract (print, error, shown images bound as ``image_clue_N``,
timeout, death with restart and re-binding, no stale output) runs against both
executors; then the gateway's own failures: unreachable, refused token, missing
kernelspec, a kernel culled or deleted mid-session, and an attack looking for the
user's secrets on the gateway's kernel.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from gateway_server import Gateway, free_port, gateway, running_gateway  # noqa: F401 (fixture)
from test_kernel import _LoopThread, decoded_size, images_of, png_input, run, text_of

from pyvision_magic._errors import ImageInputError, KernelStartError
from pyvision_magic._records import ImageInput
from pyvision_magic.kernel import _remote
from pyvision_magic.kernel._child import ChildKernel
from pyvision_magic.kernel._gateway import GatewayKernel
from pyvision_magic.kernel._pool import KernelPool


@pytest.fixture(scope="module")
def loop() -> Iterator[_LoopThread]:
    runner = _LoopThread()
    yield runner
    runner.close()


@pytest.fixture(scope="module", params=["local", "gateway"])
def executor(request: pytest.FixtureRequest, loop: _LoopThread) -> Iterator[Any]:
    if request.param == "local":
        kernel: Any = ChildKernel(timeout=20.0, interrupt_grace=4.0)
    else:
        running = request.getfixturevalue("gateway")
        kernel = GatewayKernel(url=running.url, token=running.token, timeout=20.0,
                               interrupt_grace=4.0)
    loop.run(kernel.start())
    yield kernel
    loop.run(kernel.shutdown())


def gateway_kernel(running: Gateway, **kwargs: Any) -> GatewayKernel:
    return GatewayKernel(url=running.url, token=running.token, **kwargs)


# -- the kernel contract, on both executors ----------------------------------------


def test_print_and_result(loop, executor):
    result = run(loop, executor, "print('out'); import sys; print('err', file=sys.stderr)\n"
                 "print(np.__name__, Image.__name__)\n1+1")
    assert result.status == "ok"
    assert [(o.kind, o.stream) for o in result.outputs][-1] == ("text", "result")
    assert "out\n" in text_of(result) and "err\n" in text_of(result)
    assert "numpy PIL.Image" in text_of(result)


def test_error_keeps_print_and_traceback(loop, executor):
    result = run(loop, executor, "print('before')\ndef f():\n    raise ValueError('bad value')\nf()")
    assert result.status == "error"
    assert "before" in text_of(result)
    error = result.outputs[-1]
    assert error.ename == "ValueError" and "bad value" in error.text and "f()" in error.text


def test_host_paths_in_a_library_traceback_are_shortened(loop, executor):
    import os

    import numpy

    result = run(loop, executor, "import numpy as np\nnp.reshape(np.arange(6), (4, 4))")
    assert result.status == "error"
    site = os.path.dirname(os.path.dirname(numpy.__file__))
    assert "numpy/" in result.outputs[-1].text and site not in result.outputs[-1].text


def test_shown_image_comes_back_and_is_bound(loop, executor):
    assert loop.run(executor.bind_images([png_input(40, 30)])) == ["image_clue_0"]
    shown = images_of(run(loop, executor, "plt.imshow(np.asarray(image_clue_0)); plt.show()"))
    assert len(shown) == 1 and shown[0].variable == "image_clue_1"
    assert decoded_size(shown[0]) == (shown[0].width, shown[0].height)
    after = run(loop, executor, "print(type(image_clue_1).__name__, image_clue_0.size)")
    assert text_of(after) == "Image (40, 30)\n"


def test_timeout_interrupts_without_stale_output(loop, executor):
    run(loop, executor, "kept = 41")
    code = "import time\nprint('started')\nwhile True:\n    print('tick'); time.sleep(0.05)"
    result = run(loop, executor, code, timeout=1.0)
    assert result.status == "timeout" and "time limit of 1 s" in result.note
    assert "started" in text_of(result)
    assert all(o.ename != "KeyboardInterrupt" for o in result.outputs)
    assert text_of(run(loop, executor, "kept + 1")).strip() == "42"  # no 'tick' after it


def test_swallowed_interrupt_replaces_the_kernel_and_rebinds(loop, executor):
    loop.run(executor.bind_images([png_input()]))
    run(loop, executor, "lost = 1")
    code = ("import time\nwhile True:\n    try:\n        print('stale', flush=True); time.sleep(0.1)\n"
            "    except KeyboardInterrupt:\n        pass")
    result = run(loop, executor, code, timeout=1.0)
    assert result.status == "timeout" and "restarted" in result.note and "image_clue_0" in result.note
    after = run(loop, executor, "print('fresh', 'lost' in globals(), image_clue_0.size)")
    assert text_of(after) == "fresh False (40, 30)\n"


def test_death_is_reported_and_the_session_goes_on(loop, executor):
    loop.run(executor.bind_images([png_input()]))
    result = run(loop, executor, "import os; print('bye', flush=True); os.kill(os.getpid(), 9)")
    assert result.status == "died" and "died" in result.note and "image_clue_0" in result.note
    assert result.duration < executor.timeout
    after = run(loop, executor, "print(1+1, image_clue_0.size)")
    assert after.status == "ok" and text_of(after) == "2 (40, 30)\n"


# -- the gateway's own behaviour ---------------------------------------------------


def test_token_from_environment_and_large_images_in_chunks(loop, gateway, monkeypatch):
    monkeypatch.setenv("JUPYTER_GATEWAY_AUTH_TOKEN", gateway.token)
    monkeypatch.setattr(_remote, "CHUNK_CHARS", 1000)  # a 10 kB image in many requests
    buffer = io.BytesIO()
    Image.effect_noise((80, 80), 64).convert("RGB").save(buffer, format="PNG")
    noisy = ImageInput("noise.png", buffer.getvalue(), "image/png", 80, 80)
    assert len(noisy.data) > 10_000

    async def go() -> str:
        async with GatewayKernel(url=gateway.url) as kernel:
            await kernel.bind_images([png_input(), noisy])
            result = await kernel.execute("import hashlib; print(image_clue_1.size, "
                                          "hashlib.sha256(image_clue_1.tobytes()).hexdigest())")
            return text_of(result)

    with Image.open(io.BytesIO(noisy.data)) as original:
        expected = __import__("hashlib").sha256(original.tobytes()).hexdigest()
    assert loop.run(go()) == f"(80, 80) {expected}\n"


def test_undecodable_image_is_an_image_input_error(loop, gateway):
    async def go() -> None:
        async with gateway_kernel(gateway) as kernel:
            await kernel.bind_images([ImageInput("broken.png", b"not a png", "image/png", 1, 1)])

    with pytest.raises(ImageInputError, match="could not open the input images"):
        loop.run(go())


def test_tools_work_in_a_folder_of_their_own_removed_at_shutdown(loop, gateway):
    """The gateway starts kernels in its own folder, shared by all of them: the
    inputs' files and what tools save go to a private folder instead, which goes
    with the kernel."""
    async def go() -> tuple[str, str, bool]:
        async with gateway_kernel(gateway) as kernel:
            await kernel.bind_images([png_input(40, 30)])
            lines = text_of(await kernel.execute(
                "import os; Image.new('RGB', (8, 8)).save('saved.png'); "
                "print(os.path.basename(os.getcwd())); print(sorted(os.listdir('.')))"))
            name, listing = lines.splitlines()[:2]  # then the saved file's note
            # The gateway has our TMPDIR, so its kernels make their folders here.
            folder = os.path.join(tempfile.gettempdir(), name)
            return folder, listing, os.path.isdir(folder)

    folder, listing, existed = loop.run(go())
    assert os.path.basename(folder).startswith("pyvision-tools-") and existed
    assert listing == "['image_clue_0.png', 'saved.png']"
    assert os.listdir(gateway.folder) == []
    deadline = time.monotonic() + 10  # the kernel exits after the delete request
    while os.path.exists(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(folder)


def test_the_folder_of_a_killed_kernel_goes_when_the_next_one_starts(loop, gateway):
    """A kernel the gateway (or a tool) kills cannot remove its folder; the next
    kernel's start removes the folders of kernels that no longer run."""
    where = "import os; print(os.path.basename(os.getcwd()))"

    async def go() -> tuple[str, str, str]:
        async with gateway_kernel(gateway) as kernel:
            first = text_of(await kernel.execute(where)).strip()
            died = await kernel.execute("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
            second = text_of(await kernel.execute(where)).strip()
            return first, died.status, second

    first, status, second = loop.run(go())
    assert status == "died" and first != second
    assert first.startswith("pyvision-tools-")
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), first))


def test_a_socket_closed_while_the_kernel_starts_is_opened_again(loop, gateway, monkeypatch):
    """The gateway may drop the WebSocket of a kernel it is still starting: the
    connection is made again while the kernel exists; a socket that keeps closing
    is one sentence."""
    from pyvision_magic.kernel._gateway_api import GatewayAPI

    real_connect = GatewayAPI.connect
    closes = {"left": 2}

    async def flaky_connect(self, kernel_id):
        channels = await real_connect(self, kernel_id)
        if closes["left"] > 0:
            closes["left"] -= 1
            # Dropped once the gateway has opened it (one request answered), as a gateway
            # drops a socket. Closed by us while the gateway was still opening it, the
            # next start hung 60 s once (on 3.10), likely a race in the gateway itself.
            msg_id = channels.send("kernel_info_request", {})
            while (msg := await channels.get(channels.shell, 30.0)) is not None:
                if msg["parent_header"].get("msg_id") == msg_id:
                    break
            await channels.close()
        return channels

    monkeypatch.setattr(GatewayAPI, "connect", flaky_connect)

    async def go() -> str:
        async with gateway_kernel(gateway) as kernel:
            return text_of(await kernel.execute("print(6 * 7)"))

    try:
        # Beyond the kernel's 120 s start limit: a slow gateway fails with the product's
        # sentence and the gateway's log below, not with the test's own time-out.
        assert loop.run(go(), timeout=180.0) == "42\n" and closes["left"] == 0
    except KernelStartError as exc:
        raise AssertionError(f"{exc}\nThe gateway's log:\n{gateway.log_tail()}") from exc
    closes["left"] = 100
    with pytest.raises(KernelStartError, match="closed the connection to its kernel while it "
                                               "was starting"):
        loop.run(go(), timeout=180.0)
    assert closes["left"] == 96  # the first connection and three more


@pytest.mark.parametrize("settled", [True, False], ids=["before its first request",
                                                     "while it boots"])
def test_a_shutdown_while_the_kernel_starts_ends_the_start_and_the_gateways_kernel(
        loop, gateway, monkeypatch, settled):
    from pyvision_magic.kernel._gateway_api import GatewayAPI

    real_connect = GatewayAPI.connect
    kernel = gateway_kernel(gateway)
    shutdowns = []

    async def connect_then_shut_down(self, kernel_id):
        channels = await real_connect(self, kernel_id)
        shutdowns.append(asyncio.ensure_future(kernel.shutdown()))  # the user's shutdown
        if settled:
            await asyncio.sleep(0)  # the shutdown has begun before the start goes on
        return channels

    monkeypatch.setattr(GatewayAPI, "connect", connect_then_shut_down)
    before = set(gateway.kernel_ids())

    async def go() -> None:
        try:
            await kernel.start()
        finally:
            await asyncio.gather(*shutdowns)

    with pytest.raises(KernelStartError, match="shut down while it was starting"):
        loop.run(go())
    assert len(shutdowns) == 1
    assert set(gateway.kernel_ids()) <= before  # the half-started kernel was deleted
    with pytest.raises(KernelStartError, match="was shut down; create a new GatewayKernel"):
        loop.run(kernel.start())


def _processes_of_gateway_kernel(kernel_id: str) -> list[int]:
    """The pids (as this test sees them) of the gateway's kernel ``kernel_id``."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"kernel-{kernel_id}".encode() in f.read():
                    pids.append(int(pid))
        except OSError:  # ended meanwhile
            pass
    return pids


@pytest.mark.parametrize("ended_by", ["its startup timeout", "a shutdown"])
def test_a_kernel_that_never_answers_ends_the_start_without_waiting_for_the_gateway(
        loop, gateway, monkeypatch, ended_by):
    """The gateway answers a kernel's WebSocket handshake only once the kernel answers
    it, or after its kernel_info_timeout (60 s): a frozen kernel ends the start at the
    start's own timeout, or at once when the user shuts it down, and is deleted."""
    import signal

    from pyvision_magic.kernel._gateway_api import GatewayAPI

    real_start = GatewayAPI.start_kernel
    frozen: list[int] = []

    async def start_then_freeze(self, name, timeout):
        kernel_id = await real_start(self, name, timeout)
        for _ in range(100):
            frozen.extend(_processes_of_gateway_kernel(kernel_id))
            if frozen:
                break
            await asyncio.sleep(0.1)
        assert frozen, "the gateway's kernel process was not found"
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        return kernel_id

    monkeypatch.setattr(GatewayAPI, "start_kernel", start_then_freeze)
    before = set(gateway.kernel_ids())
    kernel = gateway_kernel(gateway, startup_timeout=4.0 if ended_by != "a shutdown" else 120.0)

    async def go() -> None:
        if ended_by == "a shutdown":
            asyncio.get_running_loop().call_later(
                2.0, lambda: asyncio.ensure_future(kernel.shutdown()))
        await kernel.start()

    expected = ("did not become ready within 4 s" if ended_by != "a shutdown"
                else "shut down while it was starting")
    try:
        with pytest.raises(KernelStartError, match=expected):
            loop.run(go(), timeout=40.0)  # under the gateway's 60 s, with room for a delete
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert frozen
    deadline = time.monotonic() + 30
    while set(gateway.kernel_ids()) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(gateway.kernel_ids()) <= before, gateway.log_tail()


def test_no_secret_reaches_the_gateway_kernel(loop, gateway, monkeypatch):
    secret = "sk-attack-7d1e0c3b9a"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("MY_SERVICE_TOKEN", secret + "-2")
    # The tool searches everything it can read for the key: its environment, and the
    # environment and command line of every process it can see.
    attack = f"""
import os
found = [k for k, v in os.environ.items() if {secret!r} in v]
for pid in os.listdir('/proc'):
    for what in ('environ', 'cmdline'):
        try:
            with open(f'/proc/{{pid}}/{{what}}', 'rb') as f:
                if {secret!r}.encode() in f.read():
                    found.append(pid + '/' + what)
        except OSError:
            pass
print('found', found)
"""

    async def go() -> str:
        async with gateway_kernel(gateway) as kernel:
            await kernel.bind_images([png_input()])
            return text_of(await kernel.execute(attack))

    assert loop.run(go()) == "found []\n"
    if not gateway.own_pid_namespace:
        pytest.skip("bubblewrap cannot give the gateway its own PID namespace here; "
                    "only the environment was searched meaningfully")


def test_unreachable_gateway_is_one_sentence(loop):
    kernel = GatewayKernel(url=f"http://127.0.0.1:{free_port()}", token="x")
    with pytest.raises(KernelStartError, match=r"cannot be reached .*check the URL") as caught:
        loop.run(kernel.start())
    assert str(caught.value).count(". ") == 0  # one sentence
    loop.run(kernel.shutdown())


def test_bad_url_is_one_sentence(loop):
    with pytest.raises(KernelStartError, match="not an http:// or https:// URL"):
        loop.run(GatewayKernel(url="127.0.0.1:8888").start())
    with pytest.raises(KernelStartError, match="No gateway URL"):
        loop.run(GatewayKernel().start())


def test_refused_token_is_one_sentence(loop, gateway, monkeypatch):
    monkeypatch.delenv("PYVISION_GATEWAY_TOKEN", raising=False)
    monkeypatch.delenv("JUPYTER_GATEWAY_AUTH_TOKEN", raising=False)
    before = set(gateway.kernel_ids())
    for token in ("wrong-token", None):
        kernel = GatewayKernel(url=gateway.url, token=token)
        with pytest.raises(KernelStartError, match="refused the token .*PYVISION_GATEWAY_TOKEN"):
            loop.run(kernel.start())
    assert set(gateway.kernel_ids()) == before


def test_missing_kernelspec_names_the_ones_there(loop, gateway):
    before = set(gateway.kernel_ids())
    kernel = gateway_kernel(gateway, kernel_name="no-such-kernel")
    with pytest.raises(KernelStartError, match=r"no kernelspec named 'no-such-kernel'.*python3"):
        loop.run(kernel.start())
    assert set(gateway.kernel_ids()) == before


def test_kernel_deleted_mid_execution_is_died_and_replaced(loop, gateway, tmp_path):
    kernel = gateway_kernel(gateway, timeout=60.0)
    loop.run(kernel.start())
    started = tmp_path / "tool-started"

    def delete_once_the_tool_runs() -> None:
        # Through the REST API while the tool runs, as an admin or a culler would.
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        gateway.request("DELETE", f"/api/kernels/{doomed}")

    try:
        loop.run(kernel.bind_images([png_input()]))
        doomed = kernel.kernel_id
        deleter = threading.Thread(target=delete_once_the_tool_runs)
        deleter.start()
        # (The test gateway runs on this machine, so the tool can tell us it started.)
        result = run(loop, kernel, f"import time\nprint('working', flush=True)\n"
                     f"open({str(started)!r}, 'w').close()\ntime.sleep(50)")
        deleter.join()
        assert result.status == "died" and "gateway" in result.note
        assert "working" in text_of(result) and result.duration < 50
        assert kernel.kernel_id != doomed and doomed not in gateway.kernel_ids()
        after = run(loop, kernel, "print(image_clue_0.size)")
        assert text_of(after) == "(40, 30)\n"
        replacement = kernel.kernel_id
    finally:
        loop.run(kernel.shutdown())
    assert kernel.kernel_id is None and replacement not in gateway.kernel_ids()


def test_culled_kernel_records_died_and_the_session_goes_on(loop):
    with running_gateway(extra=["--MappingKernelManager.cull_idle_timeout=3",
                                "--MappingKernelManager.cull_interval=1",
                                "--MappingKernelManager.cull_connected=True"]) as culling:
        kernel = gateway_kernel(culling)
        loop.run(kernel.start())
        try:
            loop.run(kernel.bind_images([png_input()]))
            run(loop, kernel, "kept = 1")
            culled = kernel.kernel_id
            deadline = time.monotonic() + 30
            while culled in culling.kernel_ids() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert culled not in culling.kernel_ids()
            result = run(loop, kernel, "print(kept)")
            assert result.status == "died" and "culled" in result.note
            after = run(loop, kernel, "print('kept' in globals(), image_clue_0.size)")
            assert text_of(after) == "False (40, 30)\n"
        finally:
            loop.run(kernel.shutdown())
        assert culling.kernel_ids() == []


def test_pool_prestarts_gateway_kernels(loop, gateway, monkeypatch):
    monkeypatch.setenv("PYVISION_GATEWAY_TOKEN", gateway.token)
    before = set(gateway.kernel_ids())

    async def go() -> tuple[int, str, str]:
        async with KernelPool(size=1, gateway_url=gateway.url) as pool:
            ready = pool.ready
            kernel = await pool.acquire()
            try:
                kind = type(kernel).__name__
                result = await kernel.execute("print('pooled')")
            finally:
                await kernel.shutdown()
            return ready, kind, text_of(result)

    assert loop.run(go()) == (1, "GatewayKernel", "pooled\n")
    assert set(gateway.kernel_ids()) == before


def test_tls_certificate_is_verified(loop, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate for the TLS gateway")
    cert, key = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with running_gateway(extra=[f"--KernelGatewayApp.certfile={cert}",
                                f"--KernelGatewayApp.keyfile={key}"], tls_ca=str(cert)) as secure:
        assert secure.url.startswith("https://")
        untrusted = gateway_kernel(secure)
        with pytest.raises(KernelStartError, match="certificate .* could not be verified.*ca_certs"):
            loop.run(untrusted.start())

        async def go() -> str:
            async with gateway_kernel(secure, ca_certs=str(cert)) as kernel:
                return text_of(await kernel.execute("print('over tls')"))

        assert loop.run(go()) == "over tls\n"
        assert secure.kernel_ids() == []
