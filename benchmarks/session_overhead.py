"""Per-turn framework overhead of a Session, against a bare jupyter_client round trip.

Run standalone: ``python benchmarks/session_overhead.py [--quick]``; ``run(quick)``
returns the rows for ``python -m benchmarks``.

A session of N turns runs against the loopback chat server answering at once
(each reply: trivial code ``x = 1``), in a warm ChildKernel. From its wall time
per turn we subtract the model time (the very requests the session sent, sent
again by a bare ``openai`` client to the same server, in this run) and the code time (``x = 1`` is
nothing); what is left is what our framework adds: parsing, prompt building,
events, output capture, transcript. The baseline is one bare ``jupyter_client``
execute round trip measured in the same round: rounds are interleaved (session, bare
model, bare kernel, again) and the median ratio is reported with the minimum. Goal: at
most 2x.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

FENCE = "```"
REPLY = f"Trivial tool.\n<code>\n{FENCE}python\nx = 1\n{FENCE}\n</code>"


async def _session_per_turn(server, kernel, turns: int) -> float:
    from pyvision_magic import OpenAIModel, Session, load_image
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="PNG")
    image = load_image(buf.getvalue(), name="white.png")
    server.script = [REPLY] * (turns - 1) + ["<answer>done</answer>"]
    model = OpenAIModel(base_url=server.base_url, model="bench")
    session = Session("Bench?", [image], model=model, executor=kernel, max_turns=turns)
    started = time.perf_counter()
    await session._async_run()
    elapsed = time.perf_counter() - started
    await model.aclose()
    assert session.transcript.status == "answered", session.transcript.error
    return elapsed / turns


async def _bare_model_per_request(server, bodies: list[dict]) -> float:
    """Mean time of the same requests the session made, sent by a bare openai client."""
    from openai import AsyncOpenAI

    server.script = [REPLY] * len(bodies)
    client = AsyncOpenAI(base_url=server.base_url, api_key="bench")
    started = time.perf_counter()
    try:
        for body in bodies:
            body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
            stream = await client.chat.completions.create(
                **body, stream=True, stream_options={"include_usage": True}
            )
            async for _ in stream:
                pass
    finally:
        await client.close()
    return (time.perf_counter() - started) / len(bodies)


async def _bare_kernel_round_trip(kernel, n: int) -> float:
    """A bare execute round trip over the kernel's own connection info."""
    from _bare import bare_execute
    from jupyter_client.asynchronous import AsyncKernelClient

    client = AsyncKernelClient()
    client.load_connection_info(kernel._conn.km.get_connection_info())
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=30)
        times = [await bare_execute(client) for _ in range(n + 3)]
        return statistics.median(times[3:])
    finally:
        client.stop_channels()


async def _measure(quick: bool) -> list[dict]:
    from pyvision_magic import ChildKernel
    from pyvision_magic.testing import ChatServer

    turns = 6 if quick else 20
    rounds = 2 if quick else 7
    with ChatServer() as server:
        async with ChildKernel() as kernel:
            await kernel.start()
            await _session_per_turn(server, kernel, 3)  # warm up imports and caches
            overheads, bares, ratios = [], [], []
            # Interleaved rounds (session, bare model, bare kernel; again): a load change
            # on the machine hits both sides of a ratio alike.
            for _ in range(rounds):
                before = len(server.chat_requests)
                per_turn = await _session_per_turn(server, kernel, turns)
                bodies = [r.body for r in server.chat_requests[before:]]
                model = await _bare_model_per_request(server, bodies)
                bare = await _bare_kernel_round_trip(kernel, turns)
                overheads.append(max(per_turn - model, 0.0))
                bares.append(bare)
                ratios.append(overheads[-1] / bare if bare else 0.0)
    median = statistics.median(ratios)
    return [
        {
            "figure": f"per-turn framework overhead (s), minus model time, vs bare execute "
                      f"({rounds} interleaved rounds: ratio min {min(ratios):.2f}, "
                      f"median {median:.2f})",
            "ours": round(statistics.median(overheads), 5),
            "baseline": round(statistics.median(bares), 5),
            "ratio": round(median, 2),
            "goal": "<= 2x",
        }
    ]


_FIRST_REQUEST = """
import asyncio, io, sys, time
from PIL import Image
from pyvision_magic import ChildKernel, OpenAIModel, Session, load_image
from pyvision_magic.testing import ChatServer

async def main():
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="PNG")
    image = load_image(buf.getvalue(), name="white.png")
    with ChatServer() as server:
        server.script = ["<answer>done</answer>"] * 2
        model = OpenAIModel(base_url=server.base_url, model="bench")  # imports openai meanwhile
        async with ChildKernel() as kernel:  # a warm kernel, as from the notebook's pool
            session = Session("Bench?", [image], model=model, executor=kernel)
            started = time.monotonic()
            await session._async_run()
            ours = server.chat_requests[0].received_at - started
            from openai import AsyncOpenAI
            client = AsyncOpenAI(base_url=server.base_url, api_key="bench")
            started = time.monotonic()
            await client.chat.completions.create(model="bench", messages=[{"role": "user", "content": "hi"}])
            bare = server.chat_requests[1].received_at - started
            await client.close()
        await model.aclose()
    print(ours, bare)

asyncio.run(main())
"""


def _first_request(rounds: int) -> tuple[list[float], list[float]]:
    """Seconds from a session's start to its first request reaching the server, in a fresh
    process with a warm kernel; and a bare openai client's first request there."""
    import subprocess

    ours, bare = [], []
    for _ in range(rounds):
        done = subprocess.run([sys.executable, "-c", _FIRST_REQUEST], capture_output=True, text=True,
                              check=True, timeout=120, cwd=os.path.join(HERE, ".."))
        a, b = map(float, done.stdout.split()[-2:])
        ours.append(a)
        bare.append(b)
    return ours, bare


def _first_request_row(quick: bool) -> dict:
    ours, bare = _first_request(1 if quick else 5)
    return {"figure": "first request after the session starts, warm kernel, fresh process "
                      "(s, median) vs a bare openai client's first request",
            "ours": round(statistics.median(ours), 4), "baseline": round(statistics.median(bare), 4),
            "ratio": round(statistics.median(ours) / statistics.median(bare), 2),
            "goal": "<= 0.05 s"}


def run(quick: bool) -> list[dict]:
    return asyncio.run(_measure(quick)) + [_first_request_row(quick)]


def _unused(quick: bool) -> list[dict]:
    return asyncio.run(_measure(quick))


if __name__ == "__main__":
    from _table import standalone

    raise SystemExit(standalone(run, __doc__))
