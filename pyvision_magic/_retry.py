"""When and how long to wait before asking the model endpoint again.

The same policy as the ``openai`` package's built-in retries (which
:class:`~pyvision_magic.OpenAIModel` turns off so that it can say what it is
doing while it waits): connection errors, timeouts, 408, 409, 429 and 5xx are
retried, ``x-should-retry`` overrides the status, ``Retry-After`` (or
``retry-after-ms``) is honoured up to a minute, and otherwise the wait doubles
from 0.5 s up to 8 s, less up to 25 % jitter. Pure functions, no I/O.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["RetryNotice", "retry_delay", "retry_reason"]

_INITIAL_DELAY = 0.5
_MAX_DELAY = 8.0
# A longer Retry-After is not waited for: the error is reported at once.
_MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class RetryNotice:
    """What a model tells its ``on_retry`` hook before it waits to retry a request.

    Parameters
    ----------
    attempt : int
        Which retry this is, from 1.
    max_retries : int
        How many retries are allowed in all.
    delay : float
        Seconds it waits before the retry.
    reason : str
        Why, in a few words: ``"endpoint unreachable"``, ``"endpoint answered HTTP 503"``.
    """

    attempt: int
    max_retries: int
    delay: float
    reason: str


def retry_reason(exc: BaseException) -> str | None:
    """Why ``exc`` (an ``openai`` error) is worth a retry, or None if it is not."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "endpoint did not answer in time"
    if isinstance(exc, openai.APIConnectionError):
        return "endpoint unreachable"
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    after = _retry_after(headers)
    if after is not None and after > _MAX_RETRY_AFTER:
        return None
    status = exc.status_code
    should = headers.get("x-should-retry")
    if should == "false" or (should != "true" and not (status in (408, 409, 429) or status >= 500)):
        return None
    if status == 429:
        return "endpoint rate-limited (HTTP 429)"
    return f"endpoint answered HTTP {status}"


def retry_delay(exc: BaseException, attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (from 1) after ``exc``."""
    response = getattr(exc, "response", None)
    after = _retry_after(response.headers) if response is not None else None
    if after is not None and 0 < after <= _MAX_RETRY_AFTER:
        return after
    backoff = min(_INITIAL_DELAY * 2.0 ** min(attempt - 1, 100), _MAX_DELAY)
    return backoff * (1 - 0.25 * random.random())


def _retry_after(headers: Any) -> float | None:
    """The wait a response asks for, in seconds, or None if it asks for none."""
    for name, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return seconds
    value = headers.get("retry-after")
    parsed = email.utils.parsedate_tz(value) if value else None
    if parsed is None:
        return None
    return float(email.utils.mktime_tz(parsed) - time.time())
