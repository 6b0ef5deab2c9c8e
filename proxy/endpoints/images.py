"""``POST /v1/images/generations``: the Images API, cached as chat's image answers are.

Each ``data[].b64_json`` of an answer is a blob slot (``start=0``: the whole string is base64), so
a PNG lands once, as raw bytes, in the same content-addressed blobs as chat's images, and a hit
splices it back byte-identically. A ``stream: true`` request reads the named events of OpenAI's
"Image streaming" (``endpoints.image_stream``); stream and JSON share one entry.

What generations and edits (``endpoints.image_edits``) share lives here too: the form of the
answer, its cache key rules, its demand and its usage.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from proxy.cache.entry import BlobSlot
from proxy.cache.replay import ReplayEvent
from proxy.endpoints.base import Parsed
from proxy.endpoints.chat import prompt_token_bound
from proxy.endpoints.fields import check_types, load_object
from proxy.endpoints.image_stream import ImageFold, replay_images
from proxy.errors import bad_request
from proxy.obs.usage import Demand, Usage

# OpenAI "Create image": `n` is 1 to 10, `partial_images` 0 to 3.
MAX_IMAGES = 10
MAX_PARTIAL_IMAGES = 3
# The model the upstream picks when the request names none (LLMGateway's name for its default).
# It is what metrics and budgets see: a key with a budget must name a priced model.
AUTO_MODEL = "auto"

# Known fields of "Create image" and their JSON types; unknown ones are forwarded and keyed.
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "prompt": (str,),
    "model": (str,),
    "n": (int,),
    "size": (str,),
    "quality": (str,),
    "response_format": (str,),
    "style": (str,),
    "background": (str,),
    "output_format": (str,),
    "output_compression": (int,),
    "moderation": (str,),
    "stream": (bool,),
    "partial_images": (int,),
    "user": (str,),
    "safety_identifier": (str,),
    "aspect_ratio": (str,),  # LLMGateway: takes precedence over size
}

# Fields that cannot change the images: `stream` only changes how they are delivered (one entry
# serves both), `partial_images` only how many previews a live stream shows before the final image
# (never stored, never replayed). `user` and `safety_identifier` are NOT among them: the answer
# echoes the effective identifier ("safety_identifier: the non-empty safety_identifier from the
# request, or the deprecated user value", openai `ImagesResponse`), so one end user's answer must
# not be served to another; the key covers that effective value (see ``image_key``).
UNKEYED = frozenset({"stream", "partial_images", "user", "safety_identifier"})


def check_count(name: str, value: int, low: int, high: int) -> None:
    """An integer option in [low, high], refused as OpenAI words it."""
    if not low <= value <= high:
        side, bound = ("below minimum", f">= {low}") if value < low else ("above maximum", f"<= {high}")
        raise bad_request(
            f"Invalid '{name}': integer {side} value. Expected a value {bound}, but got {value} instead.",
            param=name,
        )


def check_prompt_and_model(prompt: object, model: object) -> str:
    """A non-empty prompt (returned) and, if named, a non-empty model."""
    if not isinstance(prompt, str) or not prompt:
        raise bad_request(
            "Invalid 'prompt': string too short. Expected a string with minimum length 1.", "prompt"
        )
    if model == "":
        raise bad_request("'model' must not be empty.", param="model")
    return prompt


def image_key(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the unkeyed fields, plus the effective safety identifier if any."""
    key = {name: value for name, value in values.items() if name not in UNKEYED}
    for name in ("safety_identifier", "user"):
        value = values.get(name)
        if isinstance(value, str) and value:
            key["safety_identifier"] = value  # the one the answer echoes
            break
    return key


def image_demand(prompt: str, n: int, input_images: int = 0) -> Demand:
    """The most an image request may cost: its prompt, its uploads and ``n`` images, each at the
    model's per-image price and its largest image in tokens (the API takes no completion bound)."""
    return Demand(
        prompt_tokens=prompt_token_bound(prompt.encode("utf-8"), 0),
        input_images=input_images,
        choices=n,
        boundable=False,
        images=n,
    )


def image_usage(usage: Mapping[str, Any] | None, doc: Mapping[str, Any] | None, input_images: int) -> Usage:
    """Tokens from a GPT image model's ``usage`` (input split into text and image tokens), and the
    images of a complete answer, which price it when there is no ``usage`` (per image)."""
    images = len(doc["data"]) if doc is not None else 0
    tokens = Usage.from_mapping(usage)
    details = usage.get("input_tokens_details") if usage is not None else None
    image_tokens = details.get("image_tokens") if isinstance(details, Mapping) else None
    return Usage(
        tokens.prompt_tokens,
        tokens.completion_tokens,
        images,
        input_images,
        image_prompt_tokens=image_tokens if isinstance(image_tokens, int) and image_tokens > 0 else 0,
        from_answer=doc is not None,
    )


def complete_images(doc: Any) -> bool:
    """A non-empty ``data`` whose every image is a ``b64_json`` string: storable. An answer of URLs
    (``response_format: "url"``, DALL-E's default) is passed through, never stored: the URLs
    expire upstream (OpenAI: after 60 minutes), a cached copy would outlive them."""
    if not isinstance(doc, dict):
        return False
    data = doc.get("data")
    if not isinstance(data, list) or not data:
        return False
    return all(isinstance(item, dict) and isinstance(item.get("b64_json"), str) for item in data)


def image_slots(doc: Mapping[str, Any]) -> list[BlobSlot]:
    """Each ``data[i].b64_json``, the whole string base64, at position ``(i, 0)``."""
    data = doc.get("data")
    return [
        BlobSlot((index, 0), item, "b64_json", 0)
        for index, item in enumerate(data if isinstance(data, list) else ())
        if isinstance(item, dict) and isinstance(item.get("b64_json"), str)
    ]


class ImagesAPI:
    """What generations and edits share: the answer and its blobs, the key rules, the stream, the
    price. A subclass says how to read its request (``parse``, ``count``, ``uploads``)."""

    method = "POST"
    events = "image_generation"  # the prefix of the stream's event types

    def count(self, parsed: Parsed) -> int:
        """How many images the request asks for (``n``, validated by ``parse``)."""
        n = parsed.body.get("n")
        return n if isinstance(n, int) else 1

    def uploads(self, parsed: Parsed) -> tuple[int, int]:
        """Files uploaded: (reserved as input images, billed as input images)."""
        return 0, 0

    def key_fields(self, parsed: Parsed) -> Mapping[str, Any]:
        """Every field but ``UNKEYED``; the effective safety identifier stays in."""
        return image_key(parsed.body)

    def demand(self, parsed: Parsed) -> Demand:
        """See ``image_demand``."""
        return image_demand(parsed.body["prompt"], self.count(parsed), self.uploads(parsed)[0])

    def forward_body(self, parsed: Parsed, bound: Mapping[str, int]) -> bytes:
        """The exact bytes received: the Images API takes no completion bound (``Demand.boundable``)."""
        return parsed.raw

    def complete(self, doc: Any) -> bool:
        """See ``complete_images``."""
        return complete_images(doc)

    def cut_short(self, doc: Mapping[str, Any]) -> bool:
        """Never: no bound is sent, so nothing the proxy did can cut an image short."""
        return False

    def fold(self, parsed: Parsed) -> ImageFold:
        """The event stream, folded into an ``ImagesResponse``."""
        return ImageFold(self.events, self.count(parsed))

    def blob_slots(self, doc: Mapping[str, Any]) -> list[BlobSlot]:
        """See ``image_slots``."""
        return image_slots(doc)

    def replay(self, doc: Mapping[str, Any], usage_asked: bool) -> Iterator[ReplayEvent]:
        """One ``{events}.completed`` event per image (no partial images on replay)."""
        return replay_images(doc, self.events)

    def usage(self, parsed: Parsed, usage: Mapping[str, Any] | None, doc: Mapping[str, Any] | None) -> Usage:
        """See ``image_usage``."""
        return image_usage(usage, doc, self.uploads(parsed)[1])


class ImagesGenerations(ImagesAPI):
    """OpenAI "Create image", JSON or streamed (``image_generation.*`` events)."""

    name = "images.generations"
    route = "/v1/images/generations"
    upstream_path = "/images/generations"
    key_scope = "images.generations"

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        """Validate as OpenAI does (400s, nothing forwarded); a URL answer is never cached."""
        body = load_object(raw)
        check_types(body, FIELD_TYPES, required=("prompt",))
        check_prompt_and_model(body["prompt"], body.get("model"))
        if body.get("n") is not None:
            check_count("n", body["n"], 1, MAX_IMAGES)
        if body.get("partial_images") is not None:
            check_count("partial_images", body["partial_images"], 0, MAX_PARTIAL_IMAGES)
        return Parsed(
            raw,
            body,
            body.get("model") or AUTO_MODEL,
            stream=body.get("stream") is True,
            cacheable=body.get("response_format") != "url",
        )
