"""The model interface and its OpenAI-compatible implementation."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, default, validate
from traitlets import Callable as CallableTrait
from traitlets.config import LoggingConfigurable

from ._endpoints import (
    OPENAI_SHORT_SIDE,
    known_openai_host,
    openrouter_claude,
    with_cache_control,
)
from ._errors import ConfigError, ModelUnreachable
from ._hooks import run_hook
from ._meta import InterfaceMeta
from ._openai_warmup import import_openai_soon
from ._openai_wire import map_error, read_plain, read_streamed, wire_params
from ._openai_wire import parse_usage as _usage  # noqa: F401 - tests read usage through here
from ._records import Usage
from ._retry import RetryNotice, retry_delay, retry_reason

__all__ = ["Model", "ModelReply", "OpenAIModel"]

DeltaCallback = Callable[[str], "Awaitable[None] | None"]

@dataclass
class ModelReply:
    """One completion: its text, token usage and why it ended.

    Parameters
    ----------
    text : str
        The reply's content ("" when it had none).
    usage : Usage
        Token counts as reported; zero when the endpoint reported none, or when
        reading stopped early (``cut``) before the usage report, which comes last.
    finish_reason : str or None
        The endpoint's: ``"stop"``, ``"length"`` (``max_tokens`` reached),
        ``"tool_calls"``, ``"content_filter"``; ``"stop"`` when ``cut``.
    refusal : str or None
        The model's refusal message (OpenAI's ``refusal`` field), when it
        declined to answer; None otherwise.
    tool_calls : list of str
        Names of the functions the model called. None are offered, so a call
        means the model did not write its code as the prompt asks.
    cut : bool
        True when reading stopped after the reply's first complete code block
        or answer: what the model wrote after it is cut by
        :func:`~pyvision_magic._parsing.parse_reply` anyway.
    """

    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    refusal: str | None = None
    tool_calls: list[str] = field(default_factory=list)
    cut: bool = False


class Model(metaclass=InterfaceMeta):
    """Something that continues a chat conversation.

    Called by :class:`~pyvision_magic.Session` once per turn with the whole
    conversation so far (OpenAI chat message dicts, images as ``image_url`` data
    URLs). Implementations stream text to ``on_delta`` as it arrives and raise a
    :class:`~pyvision_magic.ModelError` subclass when the endpoint fails.

    ``cache_key`` is the same string for every request of one session (a new one
    per session): endpoints that cache prompt prefixes can use it to send a
    session's requests to the same cache. Implementations that cannot use it
    may leave the keyword out: the Session passes it only to a ``complete`` that
    takes it (or ``**kwargs``).
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
        cache_key: str | None = None,
    ) -> ModelReply:
        """Return the model's next reply to ``messages``."""

    async def aclose(self) -> None:
        """Release connections. Idempotent."""


class OpenAIModel(Model, LoggingConfigurable):
    """Any endpoint speaking OpenAI's Chat Completions API.

    Works with OpenAI, Azure OpenAI (its ``/openai/v1`` URL), vLLM, Ollama, LM
    Studio, OpenRouter and others: set ``base_url`` and the variable that holds
    the key. It retries 408/409/429/5xx and connection errors with exponential
    backoff that honours ``Retry-After`` (the ``openai`` package's policy, done
    here so that ``on_retry`` can tell the user while it waits).

    Each reply is bounded, so that no endpoint can hold a session forever: in
    time (``reply_deadline``), in characters read (``max_reply_chars``; reading
    also stops once the first code block or answer is complete) and in tokens
    generated (``max_tokens``).
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
    on_retry = CallableTrait(
        None,
        allow_none=True,
        help="Called as on_retry(notice) with a RetryNotice (attempt, max_retries, delay, "
        "reason) before each wait to retry a request; sync or async. None: retries are "
        "only logged.",
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
        16384,
        allow_none=True,
        help="Most tokens the endpoint may generate per reply, reasoning tokens included: "
        "enough for reasoning models to think, while a runaway reply stays bounded. "
        "None sends no limit. Left out for the rest of the session if the endpoint "
        "refuses it.",
    ).tag(config=True)
    max_tokens_param = Enum(
        ["max_completion_tokens", "max_tokens"],
        help="Request field that carries max_tokens. Default: 'max_completion_tokens' for "
        "OpenAI and Azure OpenAI (their reasoning models refuse 'max_tokens'), else "
        "'max_tokens', the name every OpenAI-compatible server understands.",
    ).tag(config=True)
    prompt_cache_key = Enum(
        ["auto", "on", "off"],
        "auto",
        help="Send a per-session 'prompt_cache_key' so that the endpoint routes one "
        "session's requests to the same prompt cache. 'auto' sends it only to OpenAI "
        "(api.openai.com) and Azure OpenAI (*.openai.azure.com), never to other servers "
        "(vLLM, Ollama, ...), some of which refuse unknown fields; 'on' sends it to any "
        "endpoint; 'off' never. Left out for the rest of the session if the endpoint "
        "refuses it.",
    ).tag(config=True)
    cache_control = Enum(
        ["auto", "on", "off"],
        "auto",
        help="Mark Anthropic-style 'cache_control' breakpoints (after the system prompt "
        "and the last message) so that Claude caches the session's prefix. 'auto' marks "
        "them only for anthropic/... models on OpenRouter, which passes them on; 'on' "
        "for any endpoint; 'off' never.",
    ).tag(config=True)
    image_rules = Enum(
        ["auto", "openai", "plain"],
        "auto",
        help="How the endpoint treats images. 'openai': it honours an image's 'detail' "
        "(older tool images then go at low detail) and tiles the image in 512 px squares "
        "after fitting its short side to 768 px (photos are sent at that size, e.g. "
        "1024x768 for 4:3). 'plain': neither. 'auto': 'openai' for api.openai.com and "
        "Azure OpenAI, else 'plain'.",
    ).tag(config=True)
    reply_deadline = Float(
        300.0,
        allow_none=True,
        help="Seconds one model reply may take in all (connecting, retries and streaming "
        "included). Past it the session ends with an error, keeping the turns so far. "
        "None waits forever.",
    ).tag(config=True)
    max_reply_chars = Int(
        200_000,
        allow_none=True,
        help="Characters one reply may send (text, refusal and function-call arguments "
        "together) before reading stops and the session ends with an error. Reading "
        "stops anyway once the reply's first code block or answer is complete. None "
        "allows any length.",
    ).tag(config=True)

    @default("base_url")
    def _default_base_url(self) -> str | None:
        return os.environ.get("OPENAI_BASE_URL") or None

    @default("max_tokens_param")
    def _default_max_tokens_param(self) -> str:
        return "max_completion_tokens" if known_openai_host(self.endpoint) else "max_tokens"

    @validate("max_tokens", "max_reply_chars", "reply_deadline", "request_timeout")
    def _positive(self, proposal: Any) -> Any:
        value = proposal["value"]
        if value is not None and value <= 0:
            raise TraitError(f"{proposal['trait'].name} must be positive (or None), not {value}.")
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: Any = None
        self._client_params: dict[str, Any] = {}
        self._client_lock = threading.Lock()
        import_openai_soon(self)

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
        with self._client_lock:  # warm_up() may be building it in a thread
            params = {"api_key": self._api_key(), "base_url": self.base_url,
                      "timeout": self.request_timeout}
            if self._client is not None and params != self._client_params:
                # Built ahead of time, and the settings changed since: it never connected.
                self._client = None
            if self._client is None:
                from openai import AsyncOpenAI

                # max_retries=0: retried in _retrying, which reports each wait
                self._client = AsyncOpenAI(max_retries=0, **params)
                self._client_params = params
            return self._client

    def warm_up(self) -> None:
        """Build the HTTP client now (its TLS set-up takes ~0.1 s); called by a Session in
        a thread when it starts, so that the first request does not wait for it."""
        try:
            self._get_client()
        except Exception:  # noqa: BLE001 - the first request reports any fault
            pass

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
        cache_key: str | None = None,
    ) -> ModelReply:
        deadline = self.reply_deadline
        if deadline is None:
            return await self._complete(messages, stop, on_delta, cache_key)
        started = time.monotonic()
        try:
            return await asyncio.wait_for(
                self._complete(messages, stop, on_delta, cache_key), deadline
            )
        except asyncio.TimeoutError:
            if time.monotonic() - started < deadline:
                raise  # not ours
            # A server can keep a connection alive forever with a drip of bytes, or
            # stream tokens forever: neither trips the per-read request_timeout.
            raise ModelUnreachable(
                f"{self.endpoint} did not finish its reply within the {deadline:g} s deadline; "
                "the session so far is kept: check the server, or raise "
                "OpenAIModel.reply_deadline.",
                base_url=self.endpoint,
                model=self.model,
            ) from None

    async def _complete(
        self,
        messages: Sequence[dict[str, Any]],
        stop: Sequence[str] | None,
        on_delta: DeltaCallback | None,
        cache_key: str | None = None,
    ) -> ModelReply:
        import openai

        client = self._get_client()
        if self._sends_cache_control():
            messages = with_cache_control(messages)
        params: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        # Fields some endpoints refuse (reasoning models refuse `stop`; some refuse
        # `max_tokens`, or a limit above what the model or its context allows).
        optional: dict[str, Any] = {}
        if stop and self.use_stop:
            optional["stop"] = list(stop)
        if self.max_tokens is not None:
            optional[self.max_tokens_param] = self.max_tokens
        if cache_key and self._sends_cache_key():
            optional["prompt_cache_key"] = cache_key
        sent = dict(optional)
        try:
            while True:
                try:
                    reply = await self._retrying(
                        lambda: self._request(client, wire_params({**params, **sent}), on_delta,
                                              "stop" in sent)
                    )
                    break
                except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                    if not sent:
                        raise
                    # Ask again without the field the error names, or without all
                    # of them if it names none. A field is left out from now on only
                    # if it was named or the request then works, since a model may be
                    # shared by many sessions and a 400 can have other causes (a huge
                    # image).
                    named = getattr(exc, "param", None)
                    if named in sent:
                        del sent[named]
                        self._leave_out(named)
                    else:
                        sent.clear()
            for name in optional.keys() - sent.keys():
                self._leave_out(name)
            return reply
        except openai.APIError as exc:
            raise map_error(self, exc) from exc

    async def _retrying(self, request: Callable[[], Awaitable[ModelReply]]) -> ModelReply:
        """``await request()``, again after a wait when the endpoint failed in a retryable way.

        Only errors raised before the reply began reach here: a stream cut after it
        began is a ModelStreamError, never retried (its text was already shown).
        """
        attempt = 0
        while True:
            try:
                return await request()
            except Exception as exc:
                reason = retry_reason(exc)
                if attempt >= self.max_retries or reason is None:
                    raise
                attempt += 1
                notice = RetryNotice(attempt, self.max_retries, retry_delay(exc, attempt), reason)
                self.log.info("%s, retry %d/%d in %.1f s", reason, attempt, self.max_retries,
                              notice.delay)
                if self.on_retry is not None:
                    await run_hook(self.on_retry, notice)
                await asyncio.sleep(notice.delay)

    def _leave_out(self, name: str) -> None:
        """Stop sending an optional request field the endpoint refused."""
        if name == "stop" and self.use_stop:
            self.use_stop = False
            self.log.info("endpoint refused the stop sequence; continuing without it")
        elif name == self.max_tokens_param and self.max_tokens is not None:
            self.max_tokens = None
            self.log.info("endpoint refused %s; continuing without a token limit", name)
        elif name == "prompt_cache_key" and self.prompt_cache_key != "off":
            self.prompt_cache_key = "off"
            self.log.info("endpoint refused prompt_cache_key; continuing without it")

    def _openai_images(self) -> bool:
        if self.image_rules != "auto":
            return self.image_rules == "openai"
        return known_openai_host(self.endpoint)

    @property
    def honours_detail(self) -> bool:
        """True when the endpoint honours an image part's ``detail`` field."""
        return self._openai_images()

    @property
    def image_short_side(self) -> int | None:
        """Short side (px) the endpoint scales photos down to, when it is known."""
        return OPENAI_SHORT_SIDE if self._openai_images() else None

    def _sends_cache_control(self) -> bool:
        if self.cache_control != "auto":
            return self.cache_control == "on"
        return openrouter_claude(self.endpoint, self.model)

    def _sends_cache_key(self) -> bool:
        if self.prompt_cache_key != "auto":
            return self.prompt_cache_key == "on"
        return known_openai_host(self.endpoint)

    async def _request(
        self, client: Any, params: dict[str, Any], on_delta: DeltaCallback | None, stop_sent: bool
    ) -> ModelReply:
        if self.stream:
            return await read_streamed(self, client, params, on_delta, stop_sent)
        return await read_plain(self, client, params, on_delta)
