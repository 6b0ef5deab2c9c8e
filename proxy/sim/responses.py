"""The simulated Responses API: `POST /v1/responses` (JSON or SSE) and `GET /v1/responses/{id}`.

The answer is a pure function of the request (minus `stream`, `store`, `background`, `metadata`,
`user`), plus, like the real API, upstream state: the text names the conversation's turn when a
`conversation` is given (the same request in a conversation gets a new answer each turn), and
`previous_response_id` must name a stored response (else 400 `previous_response_not_found`, as
OpenAI answers). Responses are stored unless `store: false`, the newest `state.responses_kept`
by id. `background: true` answers at once with status `queued`; `GET /v1/responses/{id}` then
returns it completed. A background stream is streamed as any other (with `background: true`).

The `image_generation` tool (unless `tool_choice: "none"`) adds an `image_generation_call` item
whose `result` is a deterministic PNG, its `partial_images` streamed as partial-image events, and
`tool_usage.image_gen` with gpt-image-1's token figures. `max_output_tokens` (at least 16) cuts
the text: status `incomplete`. `state.completion_tokens` makes every text that long.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.sim.http import (
    JSON,
    InvalidRequest,
    answer_delay,
    count_tokens,
    json_response,
    route,
    write_events,
)
from proxy.sim.images import (
    INPUT_IMAGE_TOKENS,
    MAX_PARTIAL_IMAGES,
    image_background,
    image_format,
    image_output_tokens,
    image_quality,
    image_size,
    image_usage,
    partial_png_b64,
)
from proxy.sim.params import SHOWN_CHARS, bounded_int, invalid_type, missing, typed
from proxy.sim.payloads import long_text
from proxy.sim.response_events import Answer, ImageCall

if TYPE_CHECKING:
    from proxy.sim.simulator import SimulatorState

MIN_OUTPUT_TOKENS = 16  # OpenAI refuses a smaller max_output_tokens
_ECHO_CHARS = 200
# Request fields that do not change the answer.
_NOT_CONTENT = ("stream", "store", "background", "metadata", "user", "stream_options", "conversation")
_PARTS_WITH_TEXT = ("input_text", "output_text", "text")


def read_input(value: object) -> tuple[list[str], str, int]:
    """The texts of `input`, the last user text, and the number of input images."""
    if value is None:
        return [], "", 0
    if isinstance(value, str):
        return [value], value, 0
    if not isinstance(value, list):
        raise invalid_type("input", "one of a string or array of input items", value)
    texts: list[str] = []
    last_user, images = "", 0
    for position, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid_type(f"input[{position}]", "an object", item)
        content = item.get("content", item.get("output"))
        parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else content
        item_texts = []
        for part in parts if isinstance(parts, list) else []:
            if (
                isinstance(part, dict)
                and part.get("type") in _PARTS_WITH_TEXT
                and isinstance(part.get("text"), str)
            ):
                item_texts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") == "input_image":
                if not isinstance(part.get("image_url", part.get("file_id")), str):
                    raise InvalidRequest(
                        f"Missing required parameter: 'input[{position}].content.image_url'.",
                        param=f"input[{position}]",
                        code="missing_required_parameter",
                    )
                images += 1
        texts.extend(item_texts)
        if item.get("role", "user") == "user" and item_texts:
            last_user = " ".join(item_texts)
    return texts, last_user, images


def _image_tool(body: JSON) -> Mapping[str, object] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("type"), str) for t in tools
    ):
        raise invalid_type("tools", "an array of tool objects", tools)
    found = next((tool for tool in tools if tool["type"] == "image_generation"), None)
    return None if body.get("tool_choice") == "none" else found


def _conversation(body: JSON) -> str | None:
    value = body.get("conversation")
    conversation = value.get("id") if isinstance(value, dict) else value
    if value is not None and not isinstance(conversation, str):
        raise invalid_type("conversation", "a string or an object with an id", value)
    if conversation is not None and body.get("previous_response_id") is not None:
        raise InvalidRequest(
            "Mutually exclusive parameters: provide only one of 'previous_response_id' or 'conversation'.",
            param="conversation",
        )
    return conversation


def _validate(body: JSON, state: SimulatorState) -> None:
    if body.get("model") is None:
        raise missing("model")
    typed(body, "model", str, "a string")
    typed(body, "instructions", str, "a string")
    typed(body, "previous_response_id", str, "a string")
    for flag in ("stream", "store", "background"):
        typed(body, flag, bool, "a boolean")
    bounded_int(body, "max_output_tokens", MIN_OUTPUT_TOKENS, 1_000_000, MIN_OUTPUT_TOKENS)
    previous = body.get("previous_response_id")
    if previous is not None and previous not in state.stored_responses:
        raise InvalidRequest(
            f"Previous response with id '{previous[:SHOWN_CHARS]}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    if body.get("background") is True and body.get("store") is False:
        raise InvalidRequest("Background mode requires 'store' to be true.", param="background")


def _echo(body: JSON, conversation: str | None) -> JSON:
    """The request's settings as the response object repeats them, with OpenAI's defaults."""
    return {
        "background": body.get("background", False),
        "conversation": None if conversation is None else {"id": conversation},
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "metadata": body.get("metadata") or {},
        "model": body["model"],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "user": body.get("user"),
    }


def _image_call(
    state: SimulatorState, tool: Mapping[str, object], digest: str, prompt: str, ident: str
) -> tuple[ImageCall, JSON]:
    output_format = image_format(tool)
    settings = {
        "background": image_background(tool, output_format),
        "output_format": output_format,
        "quality": image_quality(tool),
        "size": image_size(tool),
    }
    partials = bounded_int(tool, "partial_images", 0, MAX_PARTIAL_IMAGES, 0)
    model = tool.get("model", "gpt-image-1")
    seed = f"responses|{model}|{digest}"
    b64 = state.image_url(seed).partition(",")[2]
    partial = tuple(partial_png_b64(seed, index, state.image_bytes) for index in range(partials))
    call = ImageCall(f"ig_{ident}", b64, partial, prompt[:_ECHO_CHARS], settings)
    usage = image_usage(prompt, 0, image_output_tokens(settings["quality"], settings["size"]))
    return call, {"image_gen": usage, "web_search": {"num_requests": 0}}


def build_answer(state: SimulatorState, body: JSON) -> Answer:
    """The deterministic answer to a request body (validated here: raises `InvalidRequest`)."""
    _validate(body, state)
    conversation = _conversation(body)
    tool = _image_tool(body)
    texts, last_user, images = read_input(body.get("input"))
    content = {name: value for name, value in body.items() if name not in _NOT_CONTENT}
    digest = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
    ident = hashlib.sha256(f"{state.calls['responses']}|{digest}".encode()).hexdigest()[:48]
    text = f"Echo: {last_user[:_ECHO_CHARS]} #{digest[:8]}"
    if conversation is not None:  # the turn is taken once answered (`_create`)
        text += f" (turn {state.conversation_turns[conversation] + 1})"
    if state.completion_tokens is not None:
        text = long_text(digest, state.completion_tokens)
    limit = body.get("max_output_tokens")
    complete = not isinstance(limit, int) or count_tokens(text) <= limit
    if isinstance(limit, int) and not complete:
        text = text[: limit * 4]
    image, tool_usage = None, None
    if tool is not None:
        image, tool_usage = _image_call(state, tool, digest, last_user, ident)
    instructions = body.get("instructions") or ""
    input_tokens = count_tokens(" ".join([instructions, *texts])) + images * INPUT_IMAGE_TOKENS
    output_tokens = count_tokens(text)
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
    echo = _echo(body, conversation)
    return Answer(
        f"resp_{ident}", int(time.time()), f"msg_{ident}", text, complete, image, usage, tool_usage, echo
    )


def _keep(state: SimulatorState, answer: Answer) -> None:
    state.stored_responses[answer.id] = answer.body()
    while len(state.stored_responses) > state.responses_kept:
        state.stored_responses.pop(next(iter(state.stored_responses)))


async def _create(request: web.Request, state: SimulatorState, body: JSON) -> web.StreamResponse:
    answer = build_answer(state, body)
    if (failure := await answer_delay(state, image=answer.image is not None)) is not None:
        return failure
    if (conversation := answer.echo["conversation"]) is not None:
        state.conversation_turns[conversation["id"]] += 1
    if body.get("store", True):
        _keep(state, answer)
    if body.get("stream") is True:
        return await write_events(request, state, answer.events())
    return json_response(answer.body("queued") if body.get("background") is True else answer.body())


async def _path_id(request: web.Request) -> JSON:
    return {"response_id": request.match_info["response_id"]}


async def _retrieve(request: web.Request, state: SimulatorState, path: JSON) -> web.StreamResponse:
    stored = state.stored_responses.get(path["response_id"])
    if stored is None:
        raise InvalidRequest(f"No response found with id '{path['response_id'][:SHOWN_CHARS]}'.", status=404)
    return json_response(stored)


def responses_route(state: SimulatorState) -> Handler:
    """`POST /v1/responses`, counted as `calls["responses"]`."""
    return route(state, "responses", _create)


def response_get_route(state: SimulatorState) -> Handler:
    """`GET /v1/responses/{response_id}`, counted as `calls["responses_get"]`."""
    return route(state, "responses_get", _retrieve, read=_path_id)
