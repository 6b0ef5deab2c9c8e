"""The simulator's answers: deterministic completions and their OpenAI JSON / SSE chunk forms.

Pure functions of the request body (plus a response number and an image source), so the same
request always yields the same content, tool calls and images, streamed or not.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from proxy.sim.http import count_tokens
from proxy.sim.png import make_png

JSON = dict[str, Any]
TEXT_MODELS = ("gpt-4o-mini", "gpt-4o", "sim-text-1")
IMAGE_MODELS = ("gemini-2.5-flash-image-preview",)
IMAGE_COMPLETION_TOKENS = 1290  # what gemini-2.5-flash-image-preview bills per image
_ECHO_CHARS = 200
_CONTENT_PIECE = 16  # characters per streamed content delta
_ARGUMENT_PIECES = 3  # streamed tool-call argument deltas


def is_image_model(model: str) -> bool:
    """Image models are recognised by name, as LLMGateway's catalogue names them."""
    return "image" in model


def png_data_url(seed: str, approx_bytes: int) -> str:
    """A deterministic PNG as the `data:image/png;base64,...` URL image models return."""
    return "data:image/png;base64," + pybase64.b64encode(make_png(seed, approx_bytes)).decode()


def _text_of(content: Any) -> str:
    """The text of a message's content, whether a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the simulated model decided to make."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Choice:
    """One generated alternative: text, images (data URLs) or a tool call."""

    content: str | None
    images: tuple[str, ...]
    tool_call: ToolCall | None
    finish_reason: str

    def message(self) -> JSON:
        message: JSON = {"role": "assistant", "content": self.content}
        if self.images:
            message["images"] = [{"type": "image_url", "image_url": {"url": u}} for u in self.images]
        if self.tool_call is not None:
            call = self.tool_call
            function = {"name": call.name, "arguments": call.arguments}
            message["tool_calls"] = [{"id": call.id, "type": "function", "function": function}]
        return message

    def deltas(self) -> Iterator[tuple[JSON, str | None]]:
        """The (delta, finish_reason) pairs OpenAI streams for this choice."""
        if self.tool_call is not None:
            call = self.tool_call
            head = {"name": call.name, "arguments": ""}
            first = {"index": 0, "id": call.id, "type": "function", "function": head}
            yield {"role": "assistant", "content": None, "tool_calls": [first]}, None
            size = -(-len(call.arguments) // _ARGUMENT_PIECES)
            for start in range(0, len(call.arguments), max(1, size)):
                piece = call.arguments[start : start + size]
                yield {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None
        else:
            yield {"role": "assistant", "content": ""}, None
            text = self.content or ""
            for start in range(0, len(text), _CONTENT_PIECE):
                yield {"content": text[start : start + _CONTENT_PIECE]}, None
            for index, url in enumerate(self.images):
                image = {"index": index, "type": "image_url", "image_url": {"url": url}}
                yield {"images": [image]}, None
        yield {}, self.finish_reason


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole simulated answer, renderable as a response body or as SSE chunks."""

    id: str
    created: int
    model: str
    choices: tuple[Choice, ...]
    usage: JSON

    def to_response(self) -> JSON:
        """The non-streamed `chat.completion` body."""
        choices = [
            {"index": i, "message": c.message(), "finish_reason": c.finish_reason}
            for i, c in enumerate(self.choices)
        ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage,
        }

    def to_chunks(self, *, include_usage: bool) -> Iterator[JSON]:
        """The `chat.completion.chunk` objects of a stream, without the `[DONE]` sentinel."""
        envelope: JSON = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
        if include_usage:  # OpenAI sends `usage: null` on every chunk but the last then
            envelope["usage"] = None
        for index, choice in enumerate(self.choices):
            for delta, finish in choice.deltas():
                entry = {"index": index, "delta": delta, "finish_reason": finish}
                yield {**envelope, "choices": [entry]}
        if include_usage:
            yield {**envelope, "choices": [], "usage": self.usage}


def _pick_tool(body: JSON) -> str | None:
    """The function the model 'calls': the one forced by tool_choice, else the first tool."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        forced = choice["function"].get("name")
        if isinstance(forced, str):
            return forced
    first = tools[0]
    function = first.get("function") if isinstance(first, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else "tool"


def _max_tokens(body: JSON) -> int | None:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def long_text(digest: str, tokens: int) -> str:
    """``tokens`` tokens (4 characters each, as ``count_tokens`` counts) of deterministic filler."""
    words = f"{digest[:11]} " * -(-tokens // 3)
    return words[: tokens * 4]


def build_completion(
    body: JSON, number: int, image_url: Callable[[str], str], long_tokens: int | None = None
) -> Completion:
    """The deterministic answer to a validated chat request; `number` makes the id unique.

    `long_tokens` makes text answers that many tokens long; every answer honours the request's
    token limit as a real model does (cut, `finish_reason: "length"`; an image that does not
    fit is not generated).
    """
    messages: list[JSON] = body["messages"]
    model: str = body["model"]
    digest = hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()
    last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    prompt_tokens = count_tokens(" ".join(_text_of(m.get("content")) for m in messages))
    tool = None if is_image_model(model) else _pick_tool(body)
    limit = _max_tokens(body)
    choices: list[Choice] = []
    completion_tokens = 0
    for index in range(body.get("n", 1)):
        suffix = f" (choice {index})" if index else ""
        if is_image_model(model) and limit is not None and limit < IMAGE_COMPLETION_TOKENS:
            choice = Choice("Here's an image of"[: limit * 4], (), None, "length")
            completion_tokens += limit
        elif is_image_model(model):
            seed = f"{model}|{digest}|{body.get('seed')}|{index}"
            text = f"Here's an image of {last_user[:80]} for you{suffix}: "
            choice = Choice(text, (image_url(seed),), None, "stop")
            completion_tokens += IMAGE_COMPLETION_TOKENS
        elif tool is not None:
            arguments = orjson.dumps({"query": last_user[:60], "n": index}).decode()
            call = ToolCall(f"call_{digest[:20]}{index}", tool, arguments)
            choice = Choice(None, (), call, "tool_calls")
            completion_tokens += count_tokens(tool + arguments) + 8
        else:
            text = f"Echo: {last_user[:_ECHO_CHARS]} #{digest[:8]}{suffix}"
            if long_tokens is not None:
                text = long_text(digest, long_tokens)
            finish = "stop"
            if limit is not None and count_tokens(text) > limit:
                text, finish = text[: limit * 4], "length"
            choice = Choice(text, (), None, finish)
            completion_tokens += count_tokens(text)
        choices.append(choice)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return Completion(f"chatcmpl-{number}", int(time.time()), model, tuple(choices), usage)
