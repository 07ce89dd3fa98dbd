"""What the model is sent for images: encoded once, and tool images per ``image_history``."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

from ._history import LOW_DETAIL_PIXELS, SentImage, with_image_history
from ._records import ImageInput

__all__ = ["ModelImages"]

# Images at most this big are encoded for the model on the loop, not in a thread.
_ENCODE_INLINE_BYTES = 256 * 1024
_ENCODE_INLINE_PIXELS = 512 * 512


class ModelImages:
    """The data URLs one session sends its model, and which tool images it has seen.

    Parameters
    ----------
    model : Model
        Who is sent the images (its ``image_short_side`` and ``honours_detail``).
    max_pixels : int
        Pixel budget of each photo (line art stays lossless).
    image_history : str
        How a tool's image is sent again once seen in full (see ``_history``).
    """

    def __init__(self, model: Any, *, max_pixels: int, image_history: str) -> None:
        self.model = model
        self.max_pixels = max_pixels
        self.image_history = image_history
        #: Data URLs by the SHA-1 of the image's bytes.
        self.urls: dict[str, str] = {}
        #: Tool images by their full-detail URL, and the URLs the model has seen in full.
        self.tool_images: dict[str, SentImage] = {}
        self.tool_inputs: dict[str, ImageInput] = {}
        self.seen_full: set[str] = set()

    def url(self, image: ImageInput) -> str:
        """Data URL of an image as sent to the model, encoded once per image."""
        from ._images import encode_for_model, to_data_url

        key = hashlib.sha1(image.data).hexdigest()
        if key not in self.urls:
            mime, data = encode_for_model(image, max_pixels=self.max_pixels,
                                          short_side=getattr(self.model, "image_short_side", None))
            self.urls[key] = to_data_url(mime, data)
        return self.urls[key]

    async def encode(self, images: Sequence[ImageInput]) -> None:
        """Encode images for the model in a worker thread, so that a 12-megapixel
        photo does not block the event loop other sessions and views share."""
        todo = [im for im in images if hashlib.sha1(im.data).hexdigest() not in self.urls]
        for image in todo:
            small = image.width * image.height <= _ENCODE_INLINE_PIXELS
            if small and len(image.data) <= _ENCODE_INLINE_BYTES:
                # A small image takes a millisecond; a thread hop could wait far longer
                # for the loop when many sessions start at once.
                self.url(image)
            else:
                await asyncio.to_thread(self.url, image)

    async def add_tool_images(self, images: Sequence[ImageInput]) -> None:
        """Encode a tool's images and remember them, so history can send them again."""
        await self.encode(images)
        for image in images:
            url = self.url(image)
            if url not in self.tool_images:
                self.tool_images[url] = SentImage(image.name, image.width, image.height)
                self.tool_inputs[url] = image

    def _low_url(self, url: str) -> None:
        from ._images import encode_for_model, to_data_url

        image = self.tool_inputs[url]
        mime, data = encode_for_model(image, max_pixels=LOW_DETAIL_PIXELS,
                                      line_art_max_pixels=LOW_DETAIL_PIXELS)
        self.tool_images[url] = dataclasses.replace(self.tool_images[url],
                                                    low_url=to_data_url(mime, data))

    async def outgoing(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages as sent: tool images the model has seen go per ``image_history``."""
        if self.image_history == "low":
            for url in self.seen_full:
                if self.tool_images[url].low_url is None:
                    await asyncio.to_thread(self._low_url, url)
        return with_image_history(messages, self.image_history, self.tool_images,
                                  self.seen_full,
                                  detail=bool(getattr(self.model, "honours_detail", False)))

    def mark_seen(self, sent: list[dict[str, Any]]) -> None:
        """Note the tool images in ``sent`` as seen in full by the model."""
        for message in sent:
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    url = part.get("image_url", {}).get("url") if isinstance(part, dict) else None
                    if url in self.tool_images:
                        self.seen_full.add(url)
