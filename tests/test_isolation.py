"""Security claims of the README, tried by attacking them for real.

Each attack runs as a tool in a child kernel of a *user process* the test starts
(``isolation_victim.py``), with an API key in that process's environment, as a
notebook started from a shell would have. Around it the test starts what an
attacker would go for: a bystander process of the same user holding the key and
a server token on its command line, a real Jupyter kernel whose connection file
is in the Jupyter runtime directory, and a TCP server on 127.0.0.1. Every
attack is run in each isolation mode and the test asserts what the README's
table says that mode stops.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_kernel import loop, run, text_of  # noqa: F401

from pyvision_magic.kernel._child import ChildKernel
from pyvision_magic.kernel._isolation import landlock_abi

HERE = Path(__file__).parent
SECRET = "sk-victim-0123456789abcdefghij"
TOKEN = "victim-token-9f8e7d6c5b4a"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux isolation")
pytestmark = linux_only

#: (name, ChildKernel options) of every mode the README's table describes.
MODES = {
    "sandbox": {"sandbox": True},
    "sandbox-launched": {"sandbox": True, "fork": False},
    "landlock": {"sandbox": False},
    "landlock-launched": {"sandbox": False, "fork": False},
}

#: Each attack records what it got, or how it was refused.
ATTEMPT = r'''
import glob, json, os, signal, socket
found = {}
def attempt(name, action):
    try:
        found[name] = action()
    except Exception as exc:
        found[name] = "denied: " + type(exc).__name__
'''

ATTACK = ATTEMPT + r'''

def environ_leaks():
    leaks = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                if SECRET.encode() in open(f"/proc/{pid}/environ", "rb").read():
                    leaks.append(int(pid))
            except OSError:
                pass
    return leaks
attempt("environ_leaks", environ_leaks)

def token_in_cmdlines():
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if TOKEN.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                    return True
            except OSError:
                pass
    return False
attempt("token_seen", token_in_cmdlines)
attempt("victim_mem", lambda: open(f"/proc/{VICTIM}/mem", "rb").close() or "opened")
attempt("parent_environ", lambda: len(open(f"/proc/{os.getppid()}/environ", "rb").read()))
attempt("kill_bystander", lambda: os.kill(BYSTANDER, signal.SIGKILL) or "sent")
attempt("kill_victim", lambda: os.kill(VICTIM, signal.SIGTERM) or "sent")
attempt("signal_parent", lambda: os.kill(os.getppid(), 0) or "allowed")
attempt("runtime_listing", lambda: sorted(os.listdir(RUNTIME)))
attempt("connection_file", lambda: open(CONNECTION).read())

def hijack():
    from jupyter_client import BlockingKernelClient
    client = BlockingKernelClient(connection_file=CONNECTION)
    client.load_connection_file()
    client.start_channels()
    client.execute(f"open({MARKER!r}, 'w').write('pwned')")
    client.get_shell_msg(timeout=10)
    client.stop_channels()
    return "ran code in the notebook's kernel"
attempt("hijack", hijack)
attempt("tcp_loopback", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=3).close() or "connected")
attempt("write_outside", lambda: open(OUTSIDE, "w").write("x"))
print(json.dumps(found))
'''


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """What the attacks aim at: a bystander, a notebook kernel, a TCP server."""
    from jupyter_client import KernelManager

    base = tmp_path_factory.mktemp("isolation")
    runtime = base / "runtime"
    runtime.mkdir()
    (base / "documents").mkdir()
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", f"--token={TOKEN}"], env=env)
    km = KernelManager(connection_file=str(runtime / "kernel-notebook.json"))
    km.start_kernel(env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"})
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield {"base": base, "runtime": runtime, "bystander": bystander, "km": km,
               "port": server.getsockname()[1], "env": env}
    finally:
        stop.set()
        server.close()
        km.shutdown_kernel(now=True)
        bystander.kill()
        bystander.wait()


def _attack(targets, options):
    marker = targets["base"] / f"pwned-{os.urandom(4).hex()}"
    # A folder of the user's (not a parent of the runtime dir, whose direct
    # entries a Landlock kernel cannot create: see the README).
    outside = targets["base"] / "documents" / f"outside-{os.urandom(4).hex()}"
    constants = dict(SECRET=SECRET, TOKEN=TOKEN, BYSTANDER=targets["bystander"].pid,
                     RUNTIME=str(targets["runtime"]), MARKER=str(marker), OUTSIDE=str(outside),
                     CONNECTION=str(targets["runtime"] / "kernel-notebook.json"),
                     PORT=targets["port"])
    code = "".join(f"{k} = {v!r}\n" for k, v in constants.items())
    # VICTIM is the user process itself: the kernel's parent when launched, or
    # found as the parent of the template otherwise; the victim tells its pid.
    env = {**targets["env"], "JUPYTER_RUNTIME_DIR": str(targets["runtime"])}
    victim = subprocess.Popen(
        [sys.executable, str(HERE / "isolation_victim.py"), json.dumps(options)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    code = f"VICTIM = {victim.pid}\n" + code + ATTACK
    out, err = victim.communicate(code, timeout=120)
    assert victim.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    found = json.loads(report["text"].strip().splitlines()[-1])
    return report, found, marker, outside


@pytest.fixture(scope="module", params=list(MODES))
def attacked(request, targets):
    name = request.param
    if name.startswith("sandbox"):
        _need_bwrap()
    elif landlock_abi() < 1:
        pytest.skip("no Landlock in this Linux kernel")
    report, found, marker, outside = _attack(targets, MODES[name])
    return name, report, found, marker, outside


def _denied(value) -> bool:
    return isinstance(value, str) and value.startswith("denied")


def test_the_mode_is_the_one_asked_for(attacked):
    name, report, *_ = attacked
    assert report["status"] == "ok"
    assert report["kind"] == ("sandbox" if name.startswith("sandbox") else "landlock")
    assert report["forked"] == (not name.endswith("launched"))
    if name == "sandbox":
        # Kernels of the sandbox share one template there, with Landlock's scoping.
        assert report["shared"] == (landlock_abi() >= 6)


def test_no_tool_reads_the_users_api_key(attacked, targets):
    name, report, found, *_ = attacked
    # Not from the process that runs pyvision (the notebook), in any mode.
    assert report["pid"] not in found["environ_leaks"]
    if name == "landlock":  # the parent is the kernel template, outside the kernel's domain
        assert _denied(found["parent_environ"])
    assert _denied(found["victim_mem"])
    if name.startswith("sandbox"):
        # Nor from any other process of the user: none is visible in the sandbox.
        assert found["environ_leaks"] == []
        assert found["token_seen"] is False


def test_no_tool_signals_the_users_processes(attacked, targets):
    name, report, found, *_ = attacked
    for target in ("kill_bystander", "kill_victim"):
        assert _denied(found[target]), (target, found[target])
    assert targets["bystander"].poll() is None, "the bystander was killed"
    if name in ("sandbox", "landlock") and landlock_abi() >= 6:
        # Not even the kernel template, its parent (Landlock's signal scoping). A
        # launched kernel's parent is bwrap's init or the Landlock guard, inside
        # its own sandbox or domain: signalling it only ends the kernel itself.
        assert _denied(found["signal_parent"])


def test_no_tool_reaches_the_notebooks_kernel(attacked, targets):
    name, report, found, marker, _ = attacked
    assert _denied(found["connection_file"])
    assert _denied(found["hijack"])
    assert not marker.exists()
    assert targets["km"].is_alive()
    if name.startswith("sandbox"):
        assert _denied(found["runtime_listing"]) or found["runtime_listing"] == []


def test_sandbox_has_no_network_and_a_read_only_file_system(attacked):
    name, report, found, _, outside = attacked
    if name.startswith("sandbox"):
        assert _denied(found["tcp_loopback"])
        assert _denied(found["write_outside"]) and not outside.exists()
    else:  # the README says so: without the sandbox, the network and your files are open
        assert found["tcp_loopback"] == "connected"
        assert found["write_outside"] == 1 and outside.exists()


# -- kernels of one process: apart from each other --------------------------------

SIBLING_ATTACK = ATTEMPT + r'''
# Socket paths of every kernel of the sandbox (or of the machine) are listed here.
paths = set()
for line in open("/proc/net/unix").read().splitlines()[1:]:
    parts = line.split()
    if len(parts) > 7 and "-shell" in parts[-1]:
        paths.add(parts[-1].rsplit("-", 2)[0])
mine = os.environ.get("PYVISION_KERNEL_ID")
def read_connections():
    got = []
    for base in paths:
        for candidate in glob.glob(os.path.dirname(base) + "/*.json"):
            got.append(open(candidate).read())
    return got
attempt("connections", read_connections)
def list_folders():
    return sorted(os.listdir(os.path.dirname(os.path.dirname(os.getcwd()))))
attempt("folders", list_folders)
attempt("sibling_file", lambda: open(SIBLING_FILE).read())
def signal_all():
    hit = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                hit.append(int(pid))
            except OSError:
                pass
    return hit
attempt("signalled", signal_all)
def memories():
    opened = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                open(f"/proc/{pid}/mem", "rb").close()
                opened.append(int(pid))
            except OSError:
                pass
    return opened
attempt("memories", memories)
print(json.dumps(found))
'''


@pytest.mark.parametrize("sandbox", [True, False])
def test_kernels_of_one_process_cannot_reach_each_other(loop, sandbox):  # noqa: F811
    if sandbox:
        _need_bwrap()
    elif landlock_abi() < 1:
        pytest.skip("no Landlock in this Linux kernel")
    first, second = ChildKernel(sandbox=sandbox), ChildKernel(sandbox=sandbox)
    loop.run(first.start())
    loop.run(second.start())
    try:
        (second.scratch_path / "secret.txt").write_text("sibling secret")
        run(loop, second, "hidden_value = 42")
        sibling_file = str(second.scratch_path / "secret.txt")
        if second.forked and second.sandboxed:  # where the first kernel would look
            sibling_file = second._workspace.kernel_path(sibling_file, forked=True)
        result = run(loop, first, f"SIBLING_FILE = {sibling_file!r}\n" + SIBLING_ATTACK)
        found = json.loads(text_of(result).strip().splitlines()[-1])
        # No kernel reads another's connection file (its HMAC key): none is on disk.
        assert found["connections"] == [] or _denied(found["connections"])
        assert found["memories"] == []
        if first.sandboxed and first.forked:
            # In the shared sandbox: the others' folders are hidden, nothing can be signalled.
            assert _denied(found["folders"]) and _denied(found["sibling_file"])
            assert found["signalled"] == [] if landlock_abi() >= 6 else True
        # The second kernel is untouched and still answers.
        assert text_of(run(loop, second, "print(hidden_value)")) == "42\n"
    finally:
        loop.run(first.shutdown())
        loop.run(second.shutdown())


def _need_bwrap() -> None:
    import asyncio

    from pyvision_magic.kernel._sandbox import check_bwrap

    try:
        asyncio.run(check_bwrap("bwrap"))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no sandbox here: {exc}")


@pytest.mark.parametrize("fork", [True, False], ids=["shared sandbox", "own sandbox"])
def test_in_memory_folders_of_the_sandbox_are_bounded(loop, fork):  # noqa: F811
    _need_bwrap()
    # 1 GiB: the least a kernel with numpy runs in (an address-space limit).
    kernel = ChildKernel(sandbox=True, memory_limit=2**30, fork=fork)
    loop.run(kernel.start())
    try:
        code = ("import errno, os\n"
                "for folder in ('/tmp', '/dev/shm'):\n"
                "    try:\n"
                "        with open(folder + '/fill', 'wb') as f:\n"
                "            chunk = b'x' * 2**26\n"
                "            for _ in range(20):\n"
                "                f.write(chunk)\n"
                "        print(folder, 'filled 1.25 GiB')\n"
                "    except OSError as exc:\n"
                "        print(folder, errno.errorcode[exc.errno])\n"
                "    finally:\n"
                "        os.unlink(folder + '/fill')\n")
        result = run(loop, kernel, code)
        assert text_of(result) == "/tmp ENOSPC\n/dev/shm ENOSPC\n"
        # /dev itself (an unbounded in-memory folder of bwrap's) takes no files;
        # its devices still work.
        dev = run(loop, kernel, "import errno\n"
                                "try:\n"
                                "    open('/dev/fill', 'wb').write(b'x')\n"
                                "except OSError as exc:\n"
                                "    print(errno.errorcode[exc.errno])\n"
                                "print(open('/dev/null', 'w').write('ok'))")
        assert text_of(dev) in ("EROFS\n2\n", "EACCES\n2\n")
        assert text_of(run(loop, kernel, "print('alive')")) == "alive\n"
    finally:
        loop.run(kernel.shutdown())


def test_a_killed_sandbox_template_is_noticed_at_once(loop):  # noqa: F811
    _need_bwrap()
    kernel = ChildKernel(sandbox=True, timeout=30.0)
    loop.run(kernel.start())
    try:
        if not kernel.forked:
            pytest.skip("kernels are not forked in this sandbox (no Landlock scoping)")
        run(loop, kernel, "x = 1")
        server = kernel._conn.km.provisioner.server
        started = time.monotonic()
        os.kill(server.process_pid, signal.SIGKILL)  # bwrap: the whole sandbox goes
        result = run(loop, kernel, "import time; time.sleep(20)")
        waited = time.monotonic() - started
        assert result.status == "died", result
        assert waited < 10  # within a poll of the kernel's death, not the 30 s limit
        assert text_of(run(loop, kernel, "print('x' in globals())")) == "False\n"
    finally:
        loop.run(kernel.shutdown())


@pytest.mark.parametrize("sandbox", [True, False])
def test_the_prompt_says_there_is_no_network_only_when_there_is_none(make_chat_server, sandbox):
    import asyncio
    import io

    from PIL import Image

    from pyvision_magic import OpenAIModel, Session
    from pyvision_magic._images import load_image

    if sandbox:
        _need_bwrap()
    server = make_chat_server()
    server.script = ["<answer>1</answer>"]
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")

    async def go() -> str:
        kernel = ChildKernel(sandbox=sandbox)
        model = OpenAIModel(base_url=server.base_url, model="test-model")
        session = Session("q", [load_image(png.getvalue())], model=model, executor=kernel)
        try:
            await session._async_run()
        finally:
            await kernel.shutdown()
            await model.aclose()
        return server.chat_requests[0].body["messages"][0]["content"]

    system = asyncio.run(go())
    assert ("There is no network access." in system) == sandbox


@pytest.mark.parametrize("how", ["default", "--no-sandbox", "no bwrap"])
def test_running_unsandboxed_is_said_once_and_never_silently(how, tmp_path):
    if how != "--no-sandbox":
        _need_bwrap()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    if how == "no bwrap":
        env["PATH"] = str(tmp_path)  # nothing there: bwrap cannot be found
    argv = [sys.executable, "-m", "pyvision_magic", "demo"] + (["--no-sandbox"] if how == "--no-sandbox" else [])
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    notices = [line for line in done.stderr.splitlines() if "unsandboxed" in line]
    if how == "default":
        assert notices == []
    else:
        assert len(notices) == 1 and notices[0].startswith("pyvision: tools run unsandboxed: ")
        assert ("turned off" if how == "--no-sandbox" else "'bwrap' was not found") in notices[0]
        assert "see the README" in notices[0]
