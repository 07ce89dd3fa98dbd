"""The baseline several benchmarks share: one bare ``jupyter_client`` execute round trip."""

from __future__ import annotations

import time


async def bare_execute(client, code: str = "x=1") -> float:
    """Seconds from sending ``code`` on ``client`` until the kernel is idle and replied."""
    started = time.perf_counter()
    msg_id = client.execute(code, allow_stdin=False)
    while True:
        msg = await client.get_iopub_msg(timeout=10)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    while (await client.get_shell_msg(timeout=10))["parent_header"].get("msg_id") != msg_id:
        pass
    return time.perf_counter() - started
