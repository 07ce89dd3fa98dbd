"""The executor that runs the model's tools on a Jupyter Kernel Gateway.

A Jupyter Kernel Gateway or Enterprise Gateway starts kernels elsewhere (another
machine, a Kubernetes pod) and speaks the standard REST + WebSocket kernel API.
:class:`GatewayKernel` has the contract of :class:`~._child.ChildKernel`: the
same bootstrap runs in the remote kernel (sent as code), images are bound as
``image_clue_N`` from bytes sent over the WebSocket, outputs are captured and
capped the same way, and an execution ends ``ok``, ``error``, ``timeout`` (after
the gateway's interrupt endpoint) or ``died`` (the kernel is replaced and the
images bound again). How isolated the tools are is the gateway's business: see
docs/remote_kernels.md.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from traitlets import Bool, Float, Unicode

from .._errors import ImageInputError, KernelError, KernelStartError
from .._records import ImageInput
from ._base import KernelExecutor
from ._gateway_api import GatewayAPI
from ._interpreter import NOTABLE_LIBRARIES
from ._output import PathShortener
from ._remote import RemoteKernel

__all__ = ["GatewayKernel", "TOKEN_VARIABLES", "gateway_token"]

#: Where the gateway's token is looked for, in order.
TOKEN_VARIABLES = ("PYVISION_GATEWAY_TOKEN", "JUPYTER_GATEWAY_AUTH_TOKEN")


def gateway_token() -> str | None:
    """The gateway token from the environment (see :data:`TOKEN_VARIABLES`), or None."""
    return next((os.environ[name] for name in TOKEN_VARIABLES if os.environ.get(name)), None)


class GatewayKernel(KernelExecutor):
    """Runs tools in a kernel on a Jupyter Kernel Gateway, one execution at a time.

    Nothing of this process's environment is sent: the kernel gets the
    gateway's environment, and the token only goes in the HTTP header.
    Use it as ``async with GatewayKernel(url=...) as kernel: ...``.
    """

    url = Unicode(
        "", help="Base URL of the gateway, e.g. https://gateway.example.org:8888."
    ).tag(config=True)
    token = Unicode(
        None, allow_none=True,
        help="The gateway's auth token. None reads $PYVISION_GATEWAY_TOKEN, else "
        "$JUPYTER_GATEWAY_AUTH_TOKEN; prefer those to putting it in a config file.",
    ).tag(config=True)
    kernel_name = Unicode(
        None, allow_none=True,
        help="Kernelspec on the gateway to run tools in. None uses the gateway's default.",
    ).tag(config=True)
    validate_cert = Bool(
        True, help="Verify the gateway's TLS certificate (https URLs). Keep it on."
    ).tag(config=True)
    ca_certs = Unicode(
        None, allow_none=True,
        help="Path of a CA bundle for the gateway's certificate; None uses the system's.",
    ).tag(config=True)
    request_timeout = Float(
        60.0, help="Seconds one REST request to the gateway may take (starting a kernel may "
        "take startup_timeout)."
    ).tag(config=True)
    startup_timeout = Float(
        120.0, help="Seconds a kernel on the gateway may take to start and set itself up. "
        "More than a local kernel's 60 s: the gateway opens a kernel's socket only once the "
        "kernel answers it, and may wait 60 s (its kernel_info_timeout) before it gives up "
        "and opens it anyway.",
    ).tag(config=True)

    #: Gateway kernels are never forked from a local template (the eval runner asks).
    forked = False

    _called = "The gateway's kernel"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._api: GatewayAPI | None = None

    @property
    def _remote(self) -> RemoteKernel | None:
        return self._running  # type: ignore[return-value]

    @property
    def kernel_id(self) -> str | None:
        """The gateway's id of the running kernel, or None."""
        return self._remote.kernel_id if self._remote is not None else None

    @property
    def scratch_path(self) -> None:
        """None: the tools' working folder is on the gateway's side."""
        return None

    @property
    def python_version(self) -> str | None:
        """Version of the gateway kernel's Python, once started."""
        return self._interpreter.get("version")

    @property
    def isolation(self) -> None:
        """Not known from here: the gateway decides (see docs/remote_kernels.md)."""
        return None

    async def choose_isolation(self) -> None:
        """None: the gateway decides how its kernels are confined."""
        return None

    async def network_access(self) -> bool:
        """Assumed True: a gateway kernel usually reaches the network."""
        return True

    async def _first_start(self) -> None:
        if not self.url:
            raise KernelStartError("No gateway URL: give --gateway URL or set GatewayKernel.url.")
        token = self.token if self.token is not None else gateway_token()
        self._api = GatewayAPI(self.url, token=token, validate_cert=self.validate_cert,
                               ca_certs=self.ca_certs, request_timeout=self.request_timeout)
        await self._launch()

    async def _launch(self) -> None:
        assert self._api is not None
        remote = await RemoteKernel.launch(
            self._api, kernel_name=self.kernel_name, startup_timeout=self.startup_timeout,
            config={**self._bootstrap_config(), "nice": None},
            stopped=self._closed, log=self.log)
        self._running = remote
        self._interpreter = remote.interpreter or self._interpreter

    async def _relaunch(self, *, rebind: bool = True) -> None:
        # The old kernel may take the gateway seconds to kill (it ignored the
        # interrupt): start the new one meanwhile.
        old, self._running = self._running, None
        await asyncio.gather(*([old.close()] if old is not None else []), self._launch())
        if rebind and self._images:
            await self._bind(self._images)

    async def _after_shutdown(self) -> None:
        if self._api is not None:
            self._api.close()

    def _path_shortener(self) -> PathShortener | None:
        # Host paths on the gateway's machine are shortened as the local kernel's are.
        return PathShortener(self._interpreter.get("paths") or {})

    async def _bind(self, images: Sequence[ImageInput]) -> list[str]:
        assert self._remote is not None
        try:
            names = await self._remote.bind(images)
        except KernelError as exc:
            raise ImageInputError(
                f"The gateway's kernel could not open the input images ({exc}).",
                source=", ".join(image.name for image in images)) from exc
        self._bound_names = names
        return names

    async def importable_libraries(self) -> list[str]:
        """Notable libraries the gateway's kernel can import (asked once, cached)."""
        if self._libraries is None:
            self._libraries = await self._probe_libraries(NOTABLE_LIBRARIES)
        return list(self._libraries)
