"""``POST /v1/chat/completions``: the first implementation of the Endpoint seam (``endpoints.base``).

What is chat-specific lives here: the request's validation, where its images and limits are
(budget demand, input images), what a complete answer is, where the answer's images sit
(``choices[].message.images[].image_url.url`` data URLs), and its stream (``endpoints.chat_stream``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from proxy.cache.entry import BlobSlot
from proxy.cache.replay import ReplayEvent
from proxy.endpoints.base import Parsed
from proxy.endpoints.chat_stream import DONE, ChatFold, replay_chunks
from proxy.endpoints.fields import NUMBER, check_types, load_object
from proxy.errors import bad_request
from proxy.obs.usage import Demand, Usage, positive_int

# Known fields and the JSON types they must have; a wrong type is refused before forwarding.
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "messages": (list,),
    "stream": (bool,),
    "stream_options": (dict,),
    "temperature": NUMBER,
    "top_p": NUMBER,
    "presence_penalty": NUMBER,
    "frequency_penalty": NUMBER,
    "n": (int,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "seed": (int,),
    "tools": (list,),
    "functions": (list,),
    "response_format": (dict,),
    "modalities": (list,),
    "stop": (str, list),
    "logprobs": (bool,),
    "top_logprobs": (int,),
    "logit_bias": (dict,),
    "parallel_tool_calls": (bool,),
}


def parse_chat_body(raw: bytes) -> dict[str, Any]:
    """The request object, or a 400 saying exactly what is wrong with it."""
    body = load_object(raw)
    check_types(body, FIELD_TYPES, required=("model", "messages"))
    messages = body["messages"]
    if not messages:
        raise bad_request("'messages' must contain at least one message.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(
                f"Invalid type for 'messages[{index}]': expected an object.",
                param=f"messages[{index}]",
            )
    if not body["model"]:
        raise bad_request("'model' must not be empty.", param="model")
    return body


def wants_stream(body: Mapping[str, Any]) -> bool:
    """``stream: true``."""
    return body.get("stream") is True


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether the client asked for the usage chunk on a stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# Prompt tokens are bounded from the body's bytes (image data URLs excluded, counted per image):
# at most one token per 3 ASCII bytes and two per 3 non-ASCII bytes. English averages about
# 4 characters per token in OpenAI's cl100k/o200k and Anthropic's tokenizers, code and digits
# about 3 (digits are split in groups of at most three); a CJK character is 3 UTF-8 bytes and
# usually 1 token, rarely 2. bytes/4, the old rule, undercounted CJK by up to 2.7x. An
# adversarial prompt (one token per byte) can still exceed this bound: that is the estimation
# error the README's guarantee names, and the settle step charges the real count regardless.
ASCII_BYTES_PER_TOKEN = 3
NON_ASCII_TOKENS_PER_3_BYTES = 2
_ASCII = bytes(range(128))


def _image_url(part: object) -> str | None:
    """The URL of an image part (``{"type": "image_url", "image_url": {"url": ...}}``)."""
    if not isinstance(part, Mapping):
        return None
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    return url if isinstance(url, str) else None


def count_images(messages: object) -> tuple[int, int]:
    """Images in the request's messages and the characters of their ``data:`` URLs.

    Both places an image can ride in: ``content`` parts (OpenAI vision input) and an assistant
    message's ``images`` (an image model's earlier answer sent back to edit it).
    """
    count = data_chars = 0
    if not isinstance(messages, Sequence):
        return 0, 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        for parts in (message.get("content"), message.get("images")):
            if not isinstance(parts, list):
                continue
            for part in parts:
                url = _image_url(part)
                if url is None:
                    continue
                count += 1
                if url.startswith("data:"):
                    data_chars += len(url)
    return count, data_chars


def prompt_token_bound(raw: bytes, image_chars: int) -> int:
    """Conservative prompt tokens of a body whose image data URLs span ``image_chars`` bytes."""
    # Data URLs are base64, all ASCII, so every non-ASCII byte is text.
    non_ascii = 0 if raw.isascii() else len(raw.translate(None, _ASCII))
    ascii_text = max(0, len(raw) - image_chars - non_ascii)
    return -(-ascii_text // ASCII_BYTES_PER_TOKEN) + -(-non_ascii * NON_ASCII_TOKENS_PER_3_BYTES // 3)


# The completion limits a client may set, in the order a budget's bound is applied to them.
LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


def chat_demand(raw: bytes, body: Mapping[str, Any]) -> Demand:
    """The most a chat request may cost: prompt bound from its bytes, its images, ``n``, its limits."""
    images, image_chars = count_images(body.get("messages"))
    return Demand(
        prompt_tokens=prompt_token_bound(raw, image_chars),
        input_images=images,
        choices=positive_int(body.get("n")) or 1,
        limits={name: body[name] for name in LIMIT_FIELDS if body.get(name) is not None},
    )


def image_slots(doc: Mapping[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
    """``(choice, image, image_url object)`` for every ``choices[].message.images[].image_url``
    whose ``url`` is a string, in document order (which is also their order in the bytes)."""
    slots: list[tuple[int, int, dict[str, Any]]] = []
    choices = doc.get("choices")
    for choice_pos, choice in enumerate(choices if isinstance(choices, list) else ()):
        message = choice.get("message") if isinstance(choice, dict) else None
        images = message.get("images") if isinstance(message, dict) else None
        for image_pos, image in enumerate(images if isinstance(images, list) else ()):
            owner = image.get("image_url") if isinstance(image, dict) else None
            if isinstance(owner, dict) and isinstance(owner.get("url"), str):
                slots.append((choice_pos, image_pos, owner))
    return slots


def image_urls(doc: Mapping[str, Any]) -> list[str]:
    """Every ``choices[].message.images[].image_url.url`` in document order."""
    return [owner["url"] for _, _, owner in image_slots(doc)]


class ChatCompletions:
    """The chat completions API (OpenAI "Create chat completion"), streamed or not."""

    name = "chat.completions"
    method = "POST"
    route = "/v1/chat/completions"
    upstream_path = "/chat/completions"
    key_scope = ""  # chat entries keep the v1 keys they always had

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        """Validate the JSON body (400s) and read the model and the stream flags."""
        body = parse_chat_body(raw)
        return Parsed(raw, body, body["model"], stream=wants_stream(body), usage_asked=wants_usage(body))

    def key_fields(self, parsed: Parsed) -> Mapping[str, Any]:
        """The whole body: ``cache.keys`` drops the fields that never change an answer."""
        return parsed.body

    def demand(self, parsed: Parsed) -> Demand:
        """See ``chat_demand``."""
        return chat_demand(parsed.raw, parsed.body)

    def forward_body(self, parsed: Parsed, bound: Mapping[str, int]) -> bytes:
        """The client's body, with the budget's bound and, for a stream, the usage chunk asked for."""
        changes: dict[str, object] = dict(bound)
        if parsed.stream and not parsed.usage_asked:
            # Usage is how we account a stream; the client still sees exactly what it asked for.
            changes["stream_options"] = {**(parsed.body.get("stream_options") or {}), "include_usage": True}
        return orjson.dumps({**parsed.body, **changes}) if changes else parsed.raw

    def complete(self, doc: Any) -> bool:
        """Choices present and each with a ``finish_reason``."""
        if not isinstance(doc, dict):
            return False
        choices = doc.get("choices")
        if not isinstance(choices, list) or not choices:
            return False
        return all(isinstance(c, dict) and c.get("finish_reason") for c in choices)

    def cut_short(self, doc: Mapping[str, Any]) -> bool:
        """Some choice stopped at the token limit (OpenAI ``finish_reason: "length"``)."""
        return any(
            isinstance(c, dict) and c.get("finish_reason") == "length" for c in doc.get("choices") or ()
        )

    def fold(self, parsed: Parsed) -> ChatFold:
        """The chunk stream, folded into a ``chat.completion``."""
        return ChatFold(parsed.usage_asked)

    def blob_slots(self, doc: Mapping[str, Any]) -> list[BlobSlot]:
        """Each answer image given as a ``data:...;base64,`` URL (image models, e.g. Gemini)."""
        slots: list[BlobSlot] = []
        for choice, image, owner in image_slots(doc):
            url: str = owner["url"]
            marker = url.find(";base64,") if url.startswith("data:") else -1
            if marker >= 0:
                slots.append(BlobSlot((choice, image), owner, "url", marker + len(";base64,")))
        return slots

    def replay(self, doc: Mapping[str, Any], usage_asked: bool) -> Iterator[ReplayEvent]:
        """Role, content, refusal, tool calls, images, finish, usage (if asked), then ``[DONE]``."""
        for chunk in replay_chunks(dict(doc), usage_asked):
            yield ReplayEvent(chunk)
        yield ReplayEvent(DONE)

    def usage(self, parsed: Parsed, usage: Mapping[str, Any] | None, doc: Mapping[str, Any] | None) -> Usage:
        """Tokens from ``usage``, images generated in the answer, images sent in the messages."""
        images = len(image_urls(doc)) if doc is not None else 0
        input_images, _ = count_images(parsed.body.get("messages"))
        return Usage.from_mapping(usage, images, input_images)
