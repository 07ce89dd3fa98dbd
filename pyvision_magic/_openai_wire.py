"""Reading an OpenAI Chat Completions reply off the wire: the body or stream, its
usage report, the request's extra fields, and the endpoint's errors as ours."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._errors import (
    ModelAuthError,
    ModelError,
    ModelNotFoundError,
    ModelRateLimited,
    ModelStreamError,
    ModelUnreachable,
)
from ._hooks import run_hook
from ._parsing import StreamedText, reply_end
from ._records import Usage
from ._tool_faults import one_line

if TYPE_CHECKING:
    from ._model import DeltaCallback, ModelReply, OpenAIModel

__all__ = ["StreamedReply", "map_error", "parse_usage", "read_plain", "read_streamed",
           "wire_params"]

# With the stop sequence sent, the endpoint ends the reply a few characters after
# its code block; this many more characters mean it ignores the stop sequence.
_STOP_GRACE_CHARS = 200
# A non-streamed body is read up to this many bytes per allowed character: JSON
# escapes one character as up to 12 bytes (a surrogate pair), plus the envelope.
_BYTES_PER_CHAR = 12
_ENVELOPE_BYTES = 64 * 1024


async def read_plain(
    model: OpenAIModel, client: Any, params: dict[str, Any], on_delta: DeltaCallback | None
) -> ModelReply:
    import openai
    from openai.types.chat import ChatCompletion

    from ._model import ModelReply  # here: _model imports this module

    # Read the body ourselves, so that an endless one is given up at the size cap
    # instead of filling memory until the deadline.
    cap = model.max_reply_chars
    limit = None if cap is None else cap * _BYTES_PER_CHAR + _ENVELOPE_BYTES
    parts: list[bytes] = []
    size = 0
    async with client.chat.completions.with_streaming_response.create(**params) as response:
        try:
            async for data in response.iter_bytes():
                size += len(data)
                if limit is not None and size > limit:
                    raise too_long(model)
                parts.append(data)
        except (openai.APIError, ModelError):
            raise
        except Exception as exc:
            raise broken_off(model, size, "bytes") from exc
    try:
        resp = ChatCompletion.model_construct(**json.loads(b"".join(parts)))
        choice = resp.choices[0] if resp.choices else None
        message = choice.message if choice else None
        text = (message.content or "") if message else ""
        refusal = (getattr(message, "refusal", None) or None) if message else None
        functions = [c.function for c in getattr(message, "tool_calls", None) or ()]
        legacy = getattr(message, "function_call", None) if message else None
        if legacy is not None:  # the deprecated single call
            functions.append(legacy)
        calls = [f.name for f in functions]
        arguments = sum(len(f.arguments or "") for f in functions)
        finish = choice.finish_reason if choice else None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelStreamError(
            f"{model.endpoint} sent a response that could not be read: "
            f"{one_line(str(exc), limit=200)}",
            base_url=model.endpoint,
            model=model.model,
        ) from exc
    if cap is not None and len(text) + len(refusal or "") + arguments > cap:
        end = reply_end(text)
        if end is None or end > cap:
            raise too_long(model)
    if text and on_delta is not None:
        await run_hook(on_delta, text)
    return ModelReply(text, parse_usage(resp.usage), finish, refusal, calls)


async def read_streamed(
    model: OpenAIModel, client: Any, params: dict[str, Any], on_delta: DeltaCallback | None,
    stop_sent: bool,
) -> ModelReply:
    import openai

    from ._model import ModelReply  # here: _model imports this module

    stream = await client.chat.completions.create(
        **params, stream=True, stream_options={"include_usage": True}
    )
    reply = StreamedReply(grace=_STOP_GRACE_CHARS if stop_sent else 0)
    cap = model.max_reply_chars
    usage = Usage()
    finish: str | None = None
    try:
        async for chunk in stream:
            if chunk.usage is not None:
                usage = parse_usage(chunk.usage)
            for choice in chunk.choices or ():
                delta = choice.delta
                if delta is not None:
                    reply.add(delta)
                    if delta.content and on_delta is not None:
                        await run_hook(on_delta, delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
            if reply.done:
                # Whatever follows is cut by parse_reply: stop paying for it.
                return ModelReply(reply.text, usage, finish or "stop", reply.refusal,
                                  reply.tool_calls, cut=finish is None)
            if cap is not None and reply.size > cap:
                raise too_long(model)
    except (openai.APIStatusError, ModelError):
        raise
    except Exception as exc:
        # The connection broke after the stream began (openai reports it as
        # APIConnectionError); that is a cut reply, not an unreachable server.
        raise broken_off(model, reply.size, "characters") from exc
    finally:
        await stream.close()
    if finish is None:
        raise ModelStreamError(
            f"The response from {model.endpoint} ended without finishing; the session "
            "so far is kept, try again.",
            base_url=model.endpoint,
            model=model.model,
        )
    return ModelReply(reply.text, usage, finish, reply.refusal, reply.tool_calls)


def too_long(model: OpenAIModel) -> ModelStreamError:
    return ModelStreamError(
        f"{model.endpoint} sent more than {model.max_reply_chars:,} characters without "
        "finishing a code block or an answer; the session so far is kept: check that the "
        f"server honours {model.max_tokens_param}, or raise OpenAIModel.max_reply_chars.",
        base_url=model.endpoint,
        model=model.model,
    )


def broken_off(model: OpenAIModel, size: int, unit: str) -> ModelStreamError:
    return ModelStreamError(
        f"The response from {model.endpoint} stopped after {size} {unit}; the session so "
        "far is kept, try again.",
        base_url=model.endpoint,
        model=model.model,
    )


def map_error(model: OpenAIModel, exc: Exception) -> ModelError:
    """Turn an openai exception into our error with one actionable sentence."""
    import openai

    where = model.endpoint
    kw = {"base_url": where, "model": model.model}
    status = getattr(exc, "status_code", None)
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return ModelAuthError(
            f"{where} refused the API key (HTTP {status}): check ${model.api_key_env}.",
            status_code=status,
            **kw,
        )
    if isinstance(exc, openai.NotFoundError):
        return ModelNotFoundError(
            f"{where} does not know the model '{model.model}' (HTTP 404): check --model, "
            "and that the base URL ends in /v1.",
            status_code=status,
            **kw,
        )
    if isinstance(exc, openai.RateLimitError):
        return ModelRateLimited(
            f"{where} kept answering 429 (rate limit) after {model.max_retries} retries: "
            "wait a minute or lower the concurrency.",
            status_code=status,
            **kw,
        )
    if isinstance(exc, openai.APITimeoutError):
        return ModelUnreachable(
            f"{where} did not answer within {model.request_timeout:g} s after "
            f"{model.max_retries} retries: check the server or raise the timeout.",
            **kw,
        )
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnreachable(
            f"Cannot reach the model endpoint {where}: check the URL and that the "
            "server is running.",
            **kw,
        )
    if isinstance(exc, openai.APIStatusError):
        detail = one_line(getattr(exc, "message", "") or str(exc), limit=200)
        return ModelError(
            f"{where} failed with HTTP {status}: {detail}", status_code=status, **kw
        )
    return ModelStreamError(
        f"{where} sent a response that could not be read: {one_line(str(exc), limit=200)}", **kw
    )


class StreamedReply:
    """What a streamed reply has sent so far: text, refusal and function calls.

    ``done`` turns True once the text holds a complete first code block or
    answer followed by ``grace`` more characters.
    """

    def __init__(self, grace: int = 0) -> None:
        self._text = StreamedText()
        self._refusal: list[str] = []
        self._calls: dict[int, str] = {}
        self._grace = grace
        #: Characters of text, refusal and function-call arguments together.
        self.size = 0

    @property
    def text(self) -> str:
        return self._text.text

    @property
    def refusal(self) -> str | None:
        return "".join(self._refusal) if self._refusal else None

    @property
    def tool_calls(self) -> list[str]:
        return [self._calls[i] for i in sorted(self._calls)]

    @property
    def done(self) -> bool:
        end = self._text.end
        return end is not None and self._text.length - end >= self._grace

    def add(self, delta: Any) -> None:
        """Record one delta's content, refusal and function-call pieces."""
        if delta.content:
            self._text.add(delta.content)
            self.size += len(delta.content)
        if getattr(delta, "refusal", None):
            self._refusal.append(delta.refusal)
            self.size += len(delta.refusal)
        calls = [(c.index or 0, c.function) for c in getattr(delta, "tool_calls", None) or ()]
        if getattr(delta, "function_call", None) is not None:  # the deprecated single call
            calls.append((-1, delta.function_call))
        for index, function in calls:
            if function is not None:
                self._calls[index] = self._calls.get(index, "") + (function.name or "")
                self.size += len(function.arguments or "")


def wire_params(params: dict[str, Any]) -> dict[str, Any]:
    """The ``create`` arguments for ``params``: fields older ``openai`` releases do
    not name go in ``extra_body``."""
    if "prompt_cache_key" not in params:
        return params
    params = dict(params)
    params["extra_body"] = {"prompt_cache_key": params.pop("prompt_cache_key")}
    return params


def _count(details: Any, name: str) -> int:
    # Details may be missing, null, an object or (from model_construct) a plain dict.
    if isinstance(details, dict):
        value = details.get(name)
    else:
        value = getattr(details, name, None)
    return value if isinstance(value, int) else 0


def parse_usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    if isinstance(usage, dict):  # a non-streamed body is read without validation
        get = usage.get
    else:
        def get(name: str) -> Any:
            return getattr(usage, name, None)
    return Usage(
        prompt_tokens=get("prompt_tokens") or 0,
        completion_tokens=get("completion_tokens") or 0,
        total_tokens=get("total_tokens") or 0,
        cached_tokens=_count(get("prompt_tokens_details"), "cached_tokens"),
        reasoning_tokens=_count(get("completion_tokens_details"), "reasoning_tokens"),
    )
