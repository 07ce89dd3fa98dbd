"""What older tool images cost in later requests: the image history policy.

Every request of a session re-sends the whole conversation, so an image a tool showed
at turn 2 is paid for again in every later request. The policy decides how a tool image
goes once the model has seen it at full detail in one request:

- ``full``: unchanged, every time (what the reference does);
- ``low``: a small re-encode (at most 512 x 512 pixels, about what OpenAI's low detail
  keeps), marked ``detail: "low"`` where the endpoint honours it (85 tokens there);
- ``placeholder``: a one-line text saying which image it was and that
  ``display(image_clue_N)`` shows it again.

The question's own images always stay at full detail. A transformation is a pure
function of the messages and of which images were already seen, so consecutive
requests share their prefix byte for byte up to the image that changed last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["IMAGE_HISTORY", "DEFAULT_IMAGE_HISTORY", "LOW_DETAIL_PIXELS", "SentImage",
           "with_image_history", "history_note"]

IMAGE_HISTORY = ("full", "low", "placeholder")
#: Chosen on `python -m benchmarks --only tokens`: see the README's cost section.
DEFAULT_IMAGE_HISTORY = "low"
#: Pixel budget of the low-detail re-encode (OpenAI's low detail is a 512 x 512 view).
LOW_DETAIL_PIXELS = 512 * 512


@dataclass(frozen=True)
class SentImage:
    """A tool image as sent at full detail: its name in the kernel and its size."""

    name: str
    width: int
    height: int
    low_url: str | None = None


def history_note(policy: str) -> str:
    """The sentence that tells the model what happens to older tool images."""
    if policy == "low":
        return ("Images shown by earlier code blocks are sent again at low resolution; "
                "display(image_clue_N) shows one in full again.")
    if policy == "placeholder":
        return ("Images shown by earlier code blocks are not sent again (a note names "
                "them); display(image_clue_N) shows one again.")
    return ""


def placeholder_text(image: SentImage) -> str:
    if not image.name.startswith("image_clue_"):  # e.g. a frame of a video a tool wrote
        return f"[a {image.width}x{image.height} image shown earlier, not sent again]"
    return (f"[{image.name}: {image.width}x{image.height} image shown earlier, not sent "
            f"again; display({image.name}) shows it again]")


def with_image_history(
    messages: Sequence[dict[str, Any]],
    policy: str,
    tool_images: Mapping[str, SentImage],
    seen: set[str] | frozenset[str],
    *,
    detail: bool = False,
) -> list[dict[str, Any]]:
    """``messages`` with every tool image already ``seen`` at full detail sent per ``policy``.

    ``tool_images`` maps the full-detail data URL of each tool image to what it is;
    other images (the question's) are never changed. Under ``low``, an image whose
    ``low_url`` is missing stays as it is. ``detail`` adds ``"detail": "low"`` to
    the re-encoded images (only for endpoints that honour it: some refuse fields
    they do not know). Messages are copied only where they change.
    """
    if policy not in IMAGE_HISTORY:
        raise ValueError(f"image history policy must be one of {', '.join(IMAGE_HISTORY)}, "
                         f"not {policy!r}")
    if policy == "full" or not seen:
        return list(messages)
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list) or not any(_old(p, tool_images, seen) for p in content):
            out.append(message)
            continue
        parts = []
        for part in content:
            if not _old(part, tool_images, seen):
                parts.append(part)
                continue
            image = tool_images[part["image_url"]["url"]]
            if policy == "placeholder":
                parts.append({"type": "text", "text": placeholder_text(image)})
            elif image.low_url is None:
                parts.append(part)
            else:
                url: dict[str, Any] = {"url": image.low_url}
                if detail:
                    url["detail"] = "low"
                parts.append({"type": "image_url", "image_url": url})
        out.append({**message, "content": parts})
    return out


def _old(part: Any, tool_images: Mapping[str, SentImage], seen: set[str] | frozenset[str]) -> bool:
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return False
    url = (part.get("image_url") or {}).get("url")
    return url in tool_images and url in seen
