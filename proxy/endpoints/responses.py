"""``POST /v1/responses``: the Responses API, JSON and ``stream: true`` cached in one entry.

The entry is the final ``response`` object (a streamed miss is folded into it from
``response.completed``, ``endpoints.response_stream``); it is stored only when its ``status`` is
``completed``. Each ``image_generation_call`` output's ``result`` (a base64 image) is a blob slot,
stored once as raw bytes in the same content-addressed blobs as chat's and the Images API's.

Never cached (the answer depends on state the upstream keeps and changes, so the same request
may rightly get a different answer): a ``conversation`` (each response is appended to it),
``background: true`` (answered ``queued``, the result fetched later) and a ``prompt`` template
without a ``version`` (its latest version can change). ``previous_response_id`` names an
immutable stored response: it is part of the key like any field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from proxy.cache.entry import BlobSlot
from proxy.cache.replay import ReplayEvent
from proxy.endpoints.base import Parsed
from proxy.endpoints.chat import prompt_token_bound
from proxy.endpoints.fields import MAX_MODEL_CHARS, NUMBER, check_types, load_object
from proxy.endpoints.images import check_count
from proxy.endpoints.response_stream import IMAGE_CALL, ResponseFold, replay_response
from proxy.errors import bad_request
from proxy.obs.usage import Demand, Usage

# Known fields of "Create a model response" and their JSON types; unknown ones are forwarded and
# keyed (the API grows: a field the proxy does not know may change the answer).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "input": (str, list),
    "instructions": (str,),
    "previous_response_id": (str,),
    "conversation": (str, dict),
    "prompt": (dict,),
    "background": (bool,),
    "store": (bool,),
    "stream": (bool,),
    "stream_options": (dict,),
    "max_output_tokens": (int,),
    "max_tool_calls": (int,),
    "temperature": NUMBER,
    "top_p": NUMBER,
    "top_logprobs": (int,),
    "tools": (list,),
    "tool_choice": (str, dict),
    "parallel_tool_calls": (bool,),
    "text": (dict,),
    "reasoning": (dict,),
    "include": (list,),
    "metadata": (dict,),
    "truncation": (str,),
    "user": (str,),
    "safety_identifier": (str,),
    "prompt_cache_key": (str,),
    "service_tier": (str,),
}

# The image_generation tool's model when the request names none (OpenAI "Image generation" tool).
DEFAULT_IMAGE_MODEL = "gpt-image-1"
# OpenAI refuses a smaller ``max_output_tokens`` ("Expected a value >= 16").
MIN_OUTPUT_TOKENS = 16
# Where a request takes its context from, other than ``input``: with none of them and no
# ``input`` there is nothing to answer.
CONTEXT_FIELDS = ("previous_response_id", "prompt", "conversation")
# Fields that only change how the answer is delivered: ``stream`` (one entry serves both),
# ``stream_options`` (``include_obfuscation``: padding on live delta events, never replayed),
# ``background`` (only ``false`` or absent reach the cache, and they are the same request).
# Everything else stays in the key, ``metadata``, ``user`` and ``safety_identifier`` included:
# the response object echoes them, so one caller's tags must not be served to another request.
UNKEYED = frozenset({"stream", "stream_options", "background"})


def check_input(body: Mapping[str, Any]) -> None:
    """``input`` present (unless the context comes from elsewhere) and, as an array, of objects."""
    value = body.get("input")
    if value is None:
        if not any(body.get(name) is not None for name in CONTEXT_FIELDS):
            raise bad_request("Missing required parameter: 'input'.", param="input")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise bad_request(
                    f"Invalid type for 'input[{index}]': expected an object.", param=f"input[{index}]"
                )


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request object, or a 400 worded as OpenAI words it (nothing is forwarded)."""
    body = load_object(raw)
    check_types(body, FIELD_TYPES, required=("model",))
    if not body["model"]:
        raise bad_request("'model' must not be empty.", param="model")
    check_input(body)
    check_image_tool(body)
    if body.get("max_output_tokens") is not None:
        check_count("max_output_tokens", body["max_output_tokens"], MIN_OUTPUT_TOKENS, 2**31 - 1)
    if body.get("conversation") is not None and body.get("previous_response_id") is not None:
        raise bad_request(
            "Mutually exclusive parameters: provide only one of 'previous_response_id' or 'conversation'.",
            param="conversation",
        )
    return body


def depends_on_upstream_state(body: Mapping[str, Any]) -> bool:
    """The answer depends on mutable upstream state (module docstring): never cached."""
    prompt = body.get("prompt")
    return (
        body.get("conversation") is not None
        or body.get("background") is True
        or (isinstance(prompt, dict) and prompt.get("version") is None)
    )


def input_images(value: object) -> tuple[int, int]:
    """Images in ``input`` (``input_image`` parts) and the characters of their ``data:`` URLs."""
    count = data_chars = 0
    for item in value if isinstance(value, list) else ():
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") == "input_image":
                count += 1
                url = part.get("image_url")
                if isinstance(url, str) and url.startswith("data:"):
                    data_chars += len(url)
    return count, data_chars


def image_tool(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``image_generation`` tool the model may call (None when absent or ``tool_choice`` is
    ``none``)."""
    tools = body.get("tools")
    if body.get("tool_choice") == "none" or not isinstance(tools, list):
        return None
    return next(
        (tool for tool in tools if isinstance(tool, dict) and tool.get("type") == "image_generation"), None
    )


def check_image_tool(body: Mapping[str, Any]) -> None:
    """The image tool's ``model``, if named, is a string no longer than a model name may be: it
    prices the images, so it reaches the price table, the entry header and the logs."""
    tool = image_tool(body)
    model = tool.get("model") if tool is not None else None
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_CHARS):
        raise bad_request(
            f"Invalid 'tools.model': expected a model name of 1 to {MAX_MODEL_CHARS} characters.",
            param="tools",
        )


def image_model(body: Mapping[str, Any]) -> str | None:
    """The model the image tool draws with (OpenAI's default: gpt-image-1), None without the tool."""
    tool = image_tool(body)
    if tool is None:
        return None
    model = tool.get("model")
    return model if isinstance(model, str) else DEFAULT_IMAGE_MODEL


def image_tool_calls(body: Mapping[str, Any]) -> int:
    """Images the ``image_generation`` tool may add: one per call the request allows (at most
    ``max_tool_calls``, else one), none without the tool."""
    if image_tool(body) is None:
        return 0
    calls = body.get("max_tool_calls")
    return calls if isinstance(calls, int) and not isinstance(calls, bool) and calls > 0 else 1


def complete_response(doc: Any) -> bool:
    """A ``response`` object whose ``status`` is ``completed`` with its ``output``: storable.
    ``incomplete`` (cut at ``max_output_tokens`` or by a content filter), ``failed``, ``queued``
    and ``in_progress`` ones are passed on, never stored."""
    return (
        isinstance(doc, dict)
        and doc.get("object") == "response"
        and doc.get("status") == "completed"
        and isinstance(doc.get("output"), list)
    )


def image_calls(doc: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(output index, item)`` of every ``image_generation_call`` with a ``result`` string."""
    output = doc.get("output")
    return [
        (index, item)
        for index, item in enumerate(output if isinstance(output, list) else ())
        if isinstance(item, dict) and item.get("type") == IMAGE_CALL and isinstance(item.get("result"), str)
    ]


class Responses:
    """OpenAI "Create a model response", JSON or streamed (``response.*`` events)."""

    name = "responses"
    method = "POST"
    route = "/v1/responses"
    upstream_path = "/responses"
    key_scope = "responses"

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        """Validate (400s); mark the requests whose answer depends on upstream state uncacheable."""
        body = parse_body(raw)
        return Parsed(
            raw,
            body,
            body["model"],
            stream=body.get("stream") is True,
            cacheable=not depends_on_upstream_state(body),
        )

    def key_fields(self, parsed: Parsed) -> Mapping[str, Any]:
        """The body but ``UNKEYED``, and whether the upstream keeps the response (``store``,
        default true): a response id is only usable as a ``previous_response_id`` when it was
        stored upstream, so an answer made with ``store: false`` must not be served to a request
        that expects to continue from it. (Nested: ``cache.keys`` drops a top-level ``store``.)"""
        request = {name: value for name, value in parsed.body.items() if name not in UNKEYED}
        request.pop("store", None)
        return {"request": request, "stored_upstream": parsed.body.get("store") is not False}

    def demand(self, parsed: Parsed) -> Demand:
        """Prompt bound from the body's bytes (input image data URLs counted per image), the
        client's ``max_output_tokens``, the images the image tool may make (at its model's
        ``per_image``); a budget's bound is
        sent as ``max_output_tokens``. Context from ``previous_response_id`` is billed as input too
        and cannot be seen here: the settle step charges the real count."""
        images, image_chars = input_images(parsed.body.get("input"))
        limit = parsed.body.get("max_output_tokens")
        return Demand(
            prompt_tokens=prompt_token_bound(parsed.raw, image_chars),
            input_images=images,
            limits={} if limit is None else {"max_output_tokens": limit},
            images=image_tool_calls(parsed.body),
            image_model=image_model(parsed.body),
            bound_param="max_output_tokens",
        )

    def forward_body(self, parsed: Parsed, bound: Mapping[str, int]) -> bytes:
        """The client's body, with the budget's bound as ``max_output_tokens`` if there is one
        (raised to OpenAI's minimum of 16: a grant below that would be refused, not obeyed)."""
        if not bound:
            return parsed.raw
        limits = {name: max(value, MIN_OUTPUT_TOKENS) for name, value in bound.items()}
        return orjson.dumps({**parsed.body, **limits})

    def complete(self, doc: Any) -> bool:
        """See ``complete_response``."""
        return complete_response(doc)

    def cut_short(self, doc: Mapping[str, Any]) -> bool:
        """Never among storable answers: one cut at ``max_output_tokens`` is ``incomplete``, which
        ``complete`` already refuses."""
        return False

    def fold(self, parsed: Parsed) -> ResponseFold:
        """The event stream, folded into the final ``response``."""
        return ResponseFold(complete_response)

    def blob_slots(self, doc: Mapping[str, Any]) -> list[BlobSlot]:
        """Each ``output[i].result`` of an ``image_generation_call`` (the whole string is base64)."""
        return [BlobSlot((index, 0), item, "result", 0) for index, item in image_calls(doc)]

    def replay(self, doc: Mapping[str, Any], usage_asked: bool) -> Iterator[ReplayEvent]:
        """``response.created`` … ``response.completed`` (``endpoints.response_stream``)."""
        return replay_response(doc)

    def usage(self, parsed: Parsed, usage: Mapping[str, Any] | None, doc: Mapping[str, Any] | None) -> Usage:
        """``input_tokens``/``output_tokens`` (reasoning tokens are among the output tokens), the
        input images, and the images of ``image_generation_call`` outputs: the tool is billed apart
        from the text model's usage, so each costs the ``per_image`` of the tool's model."""
        tokens = Usage.from_mapping(usage)
        images = len(image_calls(doc)) if doc is not None else 0
        return Usage(
            tokens.prompt_tokens,
            tokens.completion_tokens,
            images,
            input_images(parsed.body.get("input"))[0],
            from_answer=doc is not None and images > 0,
            image_model=(image_model(parsed.body) or DEFAULT_IMAGE_MODEL) if images else None,
        )
