"""Validating a chat completion request and reading the caller's cache controls from its headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.cache.keys import MAX_DEPTH, NestingTooDeep, check_depth
from proxy.errors import bad_request

# Longest model name accepted: real ones are under 100 characters; anything longer is refused
# before it reaches a log line, a metric label or an error message.
MAX_MODEL_CHARS = 256

_NUMBER = (int, float)
# Known fields and the JSON types they must have; a wrong type is refused before forwarding.
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "messages": (list,),
    "stream": (bool,),
    "stream_options": (dict,),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
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
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    _check_bounds(body)
    for name in ("model", "messages"):
        if name not in body:
            raise bad_request(f"Missing required parameter: '{name}'.", param=name)
    for name, types in FIELD_TYPES.items():
        value = body.get(name)
        if value is None and name not in ("model", "messages"):
            continue
        # bool is an int subclass in Python; JSON true is never a valid number here.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(_type_name(t) for t in types)
            raise bad_request(f"Invalid type for '{name}': expected {expected}.", param=name)
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


def _check_bounds(body: dict[str, Any]) -> None:
    """Sizes no legitimate request reaches, refused before anything else looks at the body."""
    model = body.get("model")
    if isinstance(model, str) and len(model) > MAX_MODEL_CHARS:
        raise bad_request(f"'model' must be at most {MAX_MODEL_CHARS} characters.", param="model")
    try:
        check_depth(body)
    except NestingTooDeep:
        raise bad_request(f"The request body nests arrays/objects deeper than {MAX_DEPTH} levels.") from None


def _type_name(t: type) -> str:
    return {
        str: "a string",
        list: "an array",
        dict: "an object",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }[t]


def wants_stream(body: Mapping[str, Any]) -> bool:
    """``stream: true``."""
    return body.get("stream") is True


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether the client asked for the usage chunk on a stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
