"""What we know about particular endpoints: pure functions of the URL and model name.

OpenAI-compatible servers differ in the extras they take: OpenAI and Azure OpenAI know
``prompt_cache_key`` and honour an image's ``detail``; OpenRouter passes Anthropic's
``cache_control`` breakpoints on to Claude models; vLLM, Ollama and others may refuse
fields they do not know. Nothing here does I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["known_openai_host", "openrouter_claude", "with_cache_control",
           "OPENAI_SHORT_SIDE", "OPENAI_TILE"]

#: OpenAI's high detail scales an image so that its short side is at most 768 px,
#: then counts 512 px tiles.
OPENAI_SHORT_SIDE = 768
OPENAI_TILE = 512

_EPHEMERAL = {"type": "ephemeral"}


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def known_openai_host(url: str) -> bool:
    """True for OpenAI's and Azure OpenAI's endpoints, whose extra fields we know."""
    host = _host(url)
    return host == "openai.com" or host.endswith((".openai.com", ".openai.azure.com"))


def openrouter_claude(url: str, model: str) -> bool:
    """True for an Anthropic model reached through OpenRouter (``anthropic/...``)."""
    host = _host(url)
    return (host == "openrouter.ai" or host.endswith(".openrouter.ai")) and \
        model.lower().startswith("anthropic/")


def with_cache_control(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with Anthropic-style ``cache_control`` breakpoints (copies).

    Two of the four breakpoints Anthropic allows: after the system prompt (shared by
    every request of every session with the same prompt) and after the last message
    (so the next request, which extends this one, reads it from the cache). A text
    content is turned into one text part to carry the marker; a last message that
    ends in an image gets the marker on that image part, which Anthropic accepts.
    """
    out = list(messages)
    targets = [i for i, m in enumerate(out) if m.get("role") == "system"][:1]
    if out and (len(out) - 1) not in targets:
        targets.append(len(out) - 1)
    for i in targets:
        message = copy.copy(out[i])
        content = message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        elif isinstance(content, list) and content:
            parts = [dict(p) if isinstance(p, dict) else p for p in content]
        else:
            continue
        if isinstance(parts[-1], dict):
            parts[-1]["cache_control"] = dict(_EPHEMERAL)
        message["content"] = parts
        out[i] = message
    return out
