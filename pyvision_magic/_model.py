"""The model interface and its OpenAI-compatible implementation."""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Float, Int, Unicode, default
from traitlets.config import LoggingConfigurable

from ._errors import (
    ConfigError,
    ModelAuthError,
    ModelError,
    ModelNotFoundError,
    ModelRateLimited,
    ModelStreamError,
    ModelUnreachable,
)
from ._hooks import run_hook
from ._meta import InterfaceMeta
from ._records import Usage

__all__ = ["Model", "ModelReply", "OpenAIModel"]

DeltaCallback = Callable[[str], "Awaitable[None] | None"]


@dataclass
class ModelReply:
    """One completion: its text, token usage and why it ended."""

    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None


class Model(metaclass=InterfaceMeta):
    """Something that continues a chat conversation.

    Called by :class:`~pyvision_magic.Session` once per turn with the whole
    conversation so far (OpenAI chat message dicts, images as ``image_url`` data
    URLs). Implementations stream text to ``on_delta`` as it arrives and raise a
    :class:`~pyvision_magic.ModelError` subclass when the endpoint fails.
    """

    #: The model name recorded in transcripts.
    name: str = ""

    @abstractmethod
    async def complete(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        stop: Sequence[str] | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> ModelReply:
        """Return the model's next reply to ``messages``."""

    async def aclose(self) -> None:
        """Release connections. Idempotent."""


class OpenAIModel(Model, LoggingConfigurable):
    """Any endpoint speaking OpenAI's Chat Completions API.

    Works with OpenAI, Azure OpenAI (its ``/openai/v1`` URL), vLLM, Ollama, LM
    Studio, OpenRouter and others: set ``base_url`` and the variable that holds
    the key. Retries of 408/409/429/5xx and connection errors, with exponential
    backoff that honours ``Retry-After``, are done by the ``openai`` package.
    """

    model = Unicode("gpt-4.1", help="Model name sent to the endpoint.").tag(config=True)
    base_url = Unicode(
        None,
        allow_none=True,
        help="Endpoint URL ending in /v1. None uses $OPENAI_BASE_URL, else OpenAI's.",
    ).tag(config=True)
    api_key_env = Unicode(
        "OPENAI_API_KEY",
        help="Name of the environment variable holding the API key (the key itself is "
        "never stored in config or transcripts).",
    ).tag(config=True)
    max_retries = Int(4, help="Retries of 429, 5xx, timeouts and connection errors.").tag(
        config=True
    )
    request_timeout = Float(
        120.0, help="Seconds to wait for the endpoint to answer one request."
    ).tag(config=True)
    stream = Bool(True, help="Stream tokens as they are generated.").tag(config=True)
    use_stop = Bool(
        True,
        help="Send the stop sequence '</code>'. Turned off for the rest of the session "
        "if the endpoint refuses it; the reply is then cut after its first code block.",
    ).tag(config=True)
    temperature = Float(
        None, allow_none=True, help="Sampling temperature; None leaves the endpoint's default."
    ).tag(config=True)
    max_tokens = Int(
        None, allow_none=True, help="Cap on tokens per reply; None leaves the endpoint's default."
    ).tag(config=True)

    @default("base_url")
    def _default_base_url(self) -> str | None:
        return os.environ.get("OPENAI_BASE_URL") or None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: Any = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.model

    @property
    def endpoint(self) -> str:
        """The endpoint URL used, for messages."""
        return self.base_url or "https://api.openai.com/v1"

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env, "")
        if key:
            return key
        if self.base_url:
            # Local servers (Ollama, vLLM, LM Studio) usually need no key, but the
            # openai client insists on one.
            return "no-key"
        raise ConfigError(
            f"No API key: set ${self.api_key_env} (or name another variable with "
            "--api-key-env), or point --base-url at a server that needs none."
        )

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                api_key=self._api_key(),
                base_url=self.base_url,
                max_retries=self.max_retries,
                timeout=self.request_timeout,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def check(self) -> None:
        """Raise :class:`ConfigError` now if the configuration cannot work."""
        self._api_key()

    async def complete(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        stop: Sequence[str] | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> ModelReply:
        import openai

        client = self._get_client()
        params: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        send_stop = bool(stop) and self.use_stop
        if send_stop:
            params["stop"] = list(stop or ())
        try:
            try:
                return await self._request(client, params, on_delta)
            except openai.BadRequestError as exc:
                if not send_stop:
                    raise
                # Some endpoints (reasoning models among them) refuse `stop`. Ask
                # once more without it; only if that works (or the error names
                # `stop`) is it left out from now on, since a model may be shared by
                # many sessions and a 400 can have other causes (a huge image).
                params.pop("stop")
                if getattr(exc, "param", None) == "stop":
                    self.use_stop = False
                reply = await self._request(client, params, on_delta)
                self.use_stop = False
                self.log.info("endpoint refused the stop sequence; continuing without it")
                return reply
        except openai.APIError as exc:
            raise self._map_error(exc) from exc

    async def _request(
        self, client: Any, params: dict[str, Any], on_delta: DeltaCallback | None
    ) -> ModelReply:
        import openai

        if not self.stream:
            resp = await client.chat.completions.create(**params)
            choice = resp.choices[0] if resp.choices else None
            text = (choice.message.content or "") if choice else ""
            if text and on_delta is not None:
                await run_hook(on_delta, text)
            return ModelReply(text, _usage(resp.usage), choice.finish_reason if choice else None)

        stream = await client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
        pieces: list[str] = []
        usage = Usage()
        finish: str | None = None
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices or ():
                    delta = choice.delta.content if choice.delta else None
                    if delta:
                        pieces.append(delta)
                        if on_delta is not None:
                            await run_hook(on_delta, delta)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except openai.APIStatusError:
            raise
        except Exception as exc:
            # The connection broke after the stream began (openai reports it as
            # APIConnectionError); that is a cut reply, not an unreachable server.
            raise ModelStreamError(
                f"The response from {self.endpoint} stopped after {len(''.join(pieces))} "
                "characters; the session so far is kept, try again.",
                base_url=self.endpoint,
                model=self.model,
            ) from exc
        finally:
            await stream.close()
        if finish is None:
            raise ModelStreamError(
                f"The response from {self.endpoint} ended without finishing; the session "
                "so far is kept, try again.",
                base_url=self.endpoint,
                model=self.model,
            )
        return ModelReply("".join(pieces), usage, finish)

    def _map_error(self, exc: Exception) -> ModelError:
        """Turn an openai exception into our error with one actionable sentence."""
        import openai

        where = self.endpoint
        kw = {"base_url": where, "model": self.model}
        status = getattr(exc, "status_code", None)
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return ModelAuthError(
                f"{where} refused the API key (HTTP {status}): check ${self.api_key_env}.",
                status_code=status,
                **kw,
            )
        if isinstance(exc, openai.NotFoundError):
            return ModelNotFoundError(
                f"{where} does not know the model '{self.model}' (HTTP 404): check --model, "
                "and that the base URL ends in /v1.",
                status_code=status,
                **kw,
            )
        if isinstance(exc, openai.RateLimitError):
            return ModelRateLimited(
                f"{where} kept answering 429 (rate limit) after {self.max_retries} retries: "
                "wait a minute or lower the concurrency.",
                status_code=status,
                **kw,
            )
        if isinstance(exc, openai.APITimeoutError):
            return ModelUnreachable(
                f"{where} did not answer within {self.request_timeout:g} s after "
                f"{self.max_retries} retries: check the server or raise the timeout.",
                **kw,
            )
        if isinstance(exc, openai.APIConnectionError):
            return ModelUnreachable(
                f"Cannot reach the model endpoint {where}: check the URL and that the "
                "server is running.",
                **kw,
            )
        if isinstance(exc, openai.APIStatusError):
            detail = _one_line(getattr(exc, "message", "") or str(exc))
            return ModelError(
                f"{where} failed with HTTP {status}: {detail}", status_code=status, **kw
            )
        return ModelStreamError(
            f"{where} sent a response that could not be read: {_one_line(str(exc))}", **kw
        )


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    return Usage(
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        total_tokens=getattr(usage, "total_tokens", 0) or 0,
    )
