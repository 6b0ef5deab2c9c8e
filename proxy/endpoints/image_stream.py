"""Image streams (OpenAI "Image streaming"): fold the named events into an ``ImagesResponse``, and
replay a stored one as the events the openai SDK parses.

A live stream sends ``{kind}.partial_image`` events (previews, as many as ``partial_images``
asked) and one ``{kind}.completed`` event per image, then ends (no ``[DONE]``); ``kind`` is
``image_generation`` or ``image_edit``. Partial images go on to the client as they come and are
never stored; the completed images are the answer. A replay sends only the completed events:
the previews were never kept (README, "How caching behaves").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from proxy.cache.replay import ReplayEvent
from proxy.upstream.sse import SSEEvent, sse

# What a completed event says about its image besides the image itself, kept in the answer.
SETTINGS = ("background", "output_format", "quality", "size", "safety_identifier")


class ImageFold:
    """The relay's view of one image stream (``upstream.relay.StreamFold``): every event goes on to
    the client as it came, except the last image's completed event, held back until the answer
    is stored (``end``). The stream is over when ``images`` completed events arrived."""

    def __init__(self, kind: str, images: int) -> None:
        self.kind = kind
        self.images = images
        self.completed: list[dict[str, Any]] = []
        self._usage: dict[str, Any] | None = None
        self._tail = b""

    @property
    def done(self) -> bool:
        """Every image asked for has its completed event."""
        return len(self.completed) >= self.images

    @property
    def usage(self) -> dict[str, Any] | None:
        """A GPT image model's token usage (on its completed event), if it sent one."""
        return self._usage

    def feed(self, event: SSEEvent) -> bytes | None:
        """The bytes to send the client now for ``event``; None to hold it back."""
        parsed = event.json_object()
        if (
            parsed is None
            or parsed.get("type") != f"{self.kind}.completed"
            or not isinstance(parsed.get("b64_json"), str)
        ):
            return event.raw
        self.completed.append(parsed)
        if isinstance(parsed.get("usage"), dict):
            self._usage = parsed["usage"]
        if self.done:
            self._tail = event.raw
            return None
        return event.raw

    def document(self) -> dict[str, Any] | None:
        """The ``ImagesResponse`` the stream stands for (as the JSON API answers), once complete."""
        if not self.done:
            return None
        last = self.completed[-1]
        doc: dict[str, Any] = {
            "created": last.get("created_at", 0),
            "data": [{"b64_json": event["b64_json"]} for event in self.completed],
        }
        doc.update((name, last[name]) for name in SETTINGS if name in last)
        if self._usage is not None:
            doc["usage"] = self._usage
        return doc

    def end(self) -> bytes:
        """The last completed event, sent once the answer is stored."""
        return self._tail

    def cut(self) -> bytes:
        """An ``error`` event (the SDK raises ``APIError`` on it) when the upstream breaks off."""
        error = {
            "message": "The upstream stream ended before the image was complete.",
            "type": "server_error",
            "param": None,
            "code": "upstream_stream_cut",
        }
        return b"event: error\n" + sse(orjson.dumps({"type": "error", "error": error}))


def replay_images(doc: Mapping[str, Any], kind: str) -> Iterator[ReplayEvent]:
    """One ``{kind}.completed`` event per image of a stored answer, its usage on the last one.

    Each event is the image's own object of ``doc`` (the template document), rewritten in place:
    the cache recognises a blob slot by the identity of its owner and splices the payload into it.
    """
    data = doc.get("data")
    images = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
    settings = {name: doc[name] for name in SETTINGS if name in doc}
    for index, image in enumerate(images):
        payload = image.get("b64_json", "")
        image.clear()
        image.update(type=f"{kind}.completed", b64_json=payload, created_at=doc.get("created", 0), **settings)
        if index == len(images) - 1 and doc.get("usage") is not None:
            image["usage"] = doc["usage"]
        yield ReplayEvent(image, name=f"{kind}.completed")
