"""Errors raised by pyvision_magic.

Every error derives from one root, so ``except PyVisionError`` catches them all::

    PyVisionError
    ├── ConfigError            a user mistake: bad option, missing key, bad image, empty question
    │   └── ImageInputError    an image that cannot be found, read or decoded
    ├── ModelError             the model endpoint failed (after retries)
    │   ├── ModelAuthError     401/403: the key is missing, wrong or lacks access
    │   ├── ModelNotFoundError 404: the model name is unknown to the endpoint
    │   ├── ModelUnreachable   no connection, DNS failure or timeout
    │   ├── ModelRateLimited   429 after every retry
    │   └── ModelStreamError   the response stopped in the middle or was malformed
    └── KernelError            the child kernel failed
        ├── KernelStartError   the kernel did not start
        ├── KernelDied         the kernel process ended during an execution
        └── ToolTimeout        an execution ran past its time limit

Messages are one sentence on what happened and what to do. Data (status code,
turn, traceback, printed output) lives in attributes, never only in the text.
"""

from __future__ import annotations

__all__ = [
    "PyVisionError",
    "ConfigError",
    "ImageInputError",
    "ModelError",
    "ModelAuthError",
    "ModelNotFoundError",
    "ModelUnreachable",
    "ModelRateLimited",
    "ModelStreamError",
    "KernelError",
    "KernelStartError",
    "KernelDied",
    "ToolTimeout",
]


class PyVisionError(Exception):
    """Root of every error raised by pyvision_magic."""


class ConfigError(PyVisionError):
    """A mistake the user can fix: a bad option, a missing key, an empty question."""


class ImageInputError(ConfigError):
    """An image input that cannot be found, read or decoded.

    Attributes
    ----------
    source : str
        What the user passed (a path, a variable name, a URL).
    """

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(message)
        self.source = source


class ModelError(PyVisionError):
    """The model endpoint failed, after retries where retrying makes sense.

    Attributes
    ----------
    status_code : int or None
        HTTP status of the last response, if there was one.
    base_url : str
        The endpoint that failed.
    model : str
        The model name that was asked for.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        base_url: str = "",
        model: str = "",
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.base_url = base_url
        self.model = model


class ModelAuthError(ModelError):
    """The endpoint refused the key (401/403)."""


class ModelNotFoundError(ModelError):
    """The endpoint does not know the model (404)."""


class ModelUnreachable(ModelError):
    """The endpoint could not be reached, or did not answer in time."""


class ModelRateLimited(ModelError):
    """The endpoint kept answering 429 after every retry."""


class ModelStreamError(ModelError):
    """The response stopped in the middle or could not be understood."""


class KernelError(PyVisionError):
    """The child kernel failed."""


class KernelStartError(KernelError):
    """The child kernel did not start or did not become ready."""


class KernelDied(KernelError):
    """The child kernel process ended while running a tool.

    Attributes
    ----------
    code : str
        The tool that was running.
    output : str
        What it printed before the kernel died.
    """

    def __init__(self, message: str, *, code: str = "", output: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.output = output


class ToolTimeout(KernelError):
    """A tool ran past its time limit.

    Attributes
    ----------
    timeout : float
        The limit in seconds.
    code : str
        The tool that was running.
    """

    def __init__(self, message: str, *, timeout: float = 0.0, code: str = "") -> None:
        super().__init__(message)
        self.timeout = timeout
        self.code = code
