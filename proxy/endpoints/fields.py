"""Request checks every JSON endpoint shares: an object, bounded, its known fields of the right type.

Each endpoint lists its own known fields and their JSON types (chat: ``chat.FIELD_TYPES``); an
unknown field is never refused (it goes upstream and into the cache key), a known one of the wrong
type is a 400 before anything is forwarded, worded as OpenAI words it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.cache.keys import MAX_DEPTH, NestingTooDeep, check_depth
from proxy.errors import bad_request

# Longest model name accepted: real ones are under 100 characters; anything longer is refused
# before it reaches a log line, a metric label or an error message.
MAX_MODEL_CHARS = 256

NUMBER = (int, float)


def load_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, bounded (``check_bounds``), or a 400 saying what is wrong."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    check_bounds(body)
    return body


def check_bounds(body: Mapping[str, Any]) -> None:
    """Sizes no legitimate request reaches, refused before anything else looks at the body."""
    model = body.get("model")
    if isinstance(model, str) and len(model) > MAX_MODEL_CHARS:
        raise bad_request(f"'model' must be at most {MAX_MODEL_CHARS} characters.", param="model")
    try:
        check_depth(body)
    except NestingTooDeep:
        raise bad_request(f"The request body nests arrays/objects deeper than {MAX_DEPTH} levels.") from None


def check_types(
    body: Mapping[str, Any], types: Mapping[str, tuple[type, ...]], required: tuple[str, ...] = ()
) -> None:
    """Every ``required`` field present, every known field (``types``) of its JSON type; null is
    accepted for an optional field (the SDKs send it for "not given")."""
    for name in required:
        if name not in body:
            raise bad_request(f"Missing required parameter: '{name}'.", param=name)
    for name, allowed in types.items():
        value = body.get(name)
        if value is None and name not in required:
            continue
        # bool is an int subclass in Python; JSON true is never a valid number here.
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            expected = " or ".join(type_name(t) for t in allowed)
            raise bad_request(f"Invalid type for '{name}': expected {expected}.", param=name)


def type_name(t: type) -> str:
    """A Python type as OpenAI names the JSON type in its 400s."""
    return {
        str: "a string",
        list: "an array",
        dict: "an object",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }[t]


_PROMPT_CHARS = 400  # read at most this much of a prompt: the console shows 200 characters of it


def prompt_text(body: Mapping[str, Any]) -> str:
    """The prompt of a request, for the console's gallery (bounded; never parsed further).

    The Images API's ``prompt``; else the last user message of chat's ``messages`` (or the
    Responses API's ``input``): its text, or the text parts of its content list. "" when none.
    """
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt[:_PROMPT_CHARS]
    messages = body.get("messages", body.get("input"))
    if isinstance(messages, str):
        return messages[:_PROMPT_CHARS]
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages[-64:]):
        if isinstance(message, Mapping) and message.get("role", "user") == "user":
            return _text_of(message.get("content"))
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content[:_PROMPT_CHARS]
    if not isinstance(content, list):
        return ""
    texts = [
        part["text"]
        for part in content[:32]
        if isinstance(part, Mapping) and isinstance(part.get("text"), str)
    ]
    return " ".join(texts)[:_PROMPT_CHARS]
