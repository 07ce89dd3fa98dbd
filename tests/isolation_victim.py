"""A user's process for the isolation tests: it runs one tool in a ChildKernel.

``python isolation_victim.py OPTIONS_JSON < CODE`` starts a ``ChildKernel(**OPTIONS)``,
runs CODE as a tool and prints one JSON line: how the kernel was isolated and
what the tool printed. The tests start it with a secret in its environment, as
a notebook started from a shell with ``OPENAI_API_KEY`` set would be, and the
tool attacks it.
"""

import asyncio
import json
import os
import sys

from pyvision_magic import ChildKernel


async def main() -> None:
    options = json.loads(sys.argv[1])
    code = sys.stdin.read()
    async with ChildKernel(**options) as kernel:
        result = await kernel.execute(code, timeout=60)
        text = "".join(getattr(output, "text", "") or "" for output in result.outputs)
        isolation = kernel.isolation
        print(json.dumps({
            "pid": os.getpid(),
            "kind": isolation.kind if isolation else None,
            "shared": bool(isolation and isolation.shared),
            "forked": kernel.forked,
            "status": result.status,
            "text": text,
        }))


if __name__ == "__main__":
    asyncio.run(main())
