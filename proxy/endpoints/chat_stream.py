"""Chat completion streams: fold ``chat.completion.chunk`` events into the answer they stand for,
and replay a stored answer as chunks (OpenAI "Streaming", ``stream: true``; the stream ends with
``data: [DONE]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import error_body
from proxy.upstream.sse import SSEEvent, json_object, sse

DONE = b"[DONE]"


@dataclass(slots=True)
class _ChoiceState:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    has_content: bool = False
    refusal: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None


class StreamAssembler:
    """Folds ``chat.completion.chunk`` objects into the ``chat.completion`` they stand for."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, _ChoiceState] = {}
        self.usage: dict[str, Any] | None = None
        self.done = False

    def add(self, chunk: dict[str, Any]) -> None:
        """Merge one parsed chunk."""
        for name in ("id", "created", "model", "system_fingerprint"):
            if name in chunk and name not in self.head:
                self.head[name] = chunk[name]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            self._add_choice(choice)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        state = self.choices.setdefault(int(choice.get("index", 0)), _ChoiceState())
        delta = choice.get("delta") or {}
        if delta.get("role"):
            state.role = delta["role"]
        if delta.get("content") is not None:
            state.has_content = True
            state.content.append(delta["content"])
        if delta.get("refusal"):
            state.refusal.append(delta["refusal"])
        for image in delta.get("images") or ():
            state.images.append({k: v for k, v in image.items() if k != "index"})
        for call in delta.get("tool_calls") or ():
            _merge_tool_call(state.tool_calls, call)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and logprobs.get("content"):
            state.logprobs.extend(logprobs["content"])
        if choice.get("finish_reason"):
            state.finish_reason = choice["finish_reason"]

    @property
    def complete(self) -> bool:
        """Ended with ``[DONE]`` and every choice has a finish_reason."""
        return self.done and bool(self.choices) and all(c.finish_reason for c in self.choices.values())

    def response(self) -> dict[str, Any]:
        """The assembled non-streaming response."""
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            message: dict[str, Any] = {
                "role": state.role,
                "content": "".join(state.content) if state.has_content else None,
            }
            if state.refusal:
                message["refusal"] = "".join(state.refusal)
            if state.tool_calls:
                message["tool_calls"] = [state.tool_calls[i] for i in sorted(state.tool_calls)]
            if state.images:
                message["images"] = state.images
            entry: dict[str, Any] = {
                "index": index,
                "message": message,
                "finish_reason": state.finish_reason,
            }
            if state.logprobs:
                entry["logprobs"] = {"content": state.logprobs}
            choices.append(entry)
        doc: dict[str, Any] = {
            "id": self.head.get("id", ""),
            "object": "chat.completion",
            "created": self.head.get("created", 0),
            "model": self.head.get("model", ""),
            "choices": choices,
        }
        if self.usage is not None:
            doc["usage"] = self.usage
        if "system_fingerprint" in self.head:
            doc["system_fingerprint"] = self.head["system_fingerprint"]
        return doc


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = int(delta.get("index", len(calls)))
    call = calls.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    if delta.get("type"):
        call["type"] = delta["type"]
    function = delta.get("function") or {}
    if function.get("name"):
        call["function"]["name"] += function["name"]
    if function.get("arguments"):
        call["function"]["arguments"] += function["arguments"]


def replay_chunks(doc: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """Chunks that a client reassembles into ``doc``: role, content, tool calls, images, finish, usage.

    Image URLs are yielded as they are in ``doc``; the caller splices payloads in.
    """
    base = {
        "id": doc.get("id", ""),
        "object": "chat.completion.chunk",
        "created": doc.get("created", 0),
        "model": doc.get("model", ""),
    }
    if "system_fingerprint" in doc:
        base["system_fingerprint"] = doc["system_fingerprint"]

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    for choice in doc.get("choices") or ():
        index = int(choice.get("index", 0))
        message = choice.get("message") or {}
        # A null content (tool calls, images only) must stay null after re-assembly, as OpenAI streams it.
        opening = "" if message.get("content") is not None else None
        yield chunk(index, {"role": message.get("role", "assistant"), "content": opening})
        if message.get("content"):
            yield chunk(index, {"content": message["content"]})
        if message.get("refusal"):
            yield chunk(index, {"refusal": message["refusal"]})
        if message.get("tool_calls"):
            calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            yield chunk(index, {"tool_calls": calls})
        for i, image in enumerate(message.get("images") or ()):
            yield chunk(index, {"images": [{"index": i, **image}]})
        final = chunk(index, {}, choice.get("finish_reason") or "stop")
        if choice.get("logprobs"):
            final["choices"][0]["logprobs"] = choice["logprobs"]
        yield final
    if include_usage and doc.get("usage") is not None:
        yield {**base, "choices": [], "usage": doc["usage"]}


def parse_chunk(data: bytes) -> dict[str, Any] | None:
    """A chunk object, or None for ``[DONE]`` / non-JSON keep-alives."""
    return None if data.strip() == DONE else json_object(data)


class ChatFold:
    """The relay's view of one chat stream (``upstream.relay.StreamFold``): every event goes on to
    the client as it came, except the usage chunk the proxy asked for on its own account and the
    final ``[DONE]``, which is held back until the answer is stored."""

    def __init__(self, usage_asked: bool) -> None:
        self.usage_asked = usage_asked
        self.assembler = StreamAssembler()

    @property
    def done(self) -> bool:
        """``[DONE]`` arrived."""
        return self.assembler.done

    @property
    def usage(self) -> dict[str, Any] | None:
        """What the upstream billed so far (its usage chunk)."""
        return self.assembler.usage

    def feed(self, event: SSEEvent) -> bytes | None:
        """The bytes to send the client now for ``event``; None to hold it back."""
        if event.data is None:
            return event.raw
        if event.data.strip() == DONE:
            self.assembler.done = True
            return None
        parsed = parse_chunk(event.data)
        if parsed is not None:
            self.assembler.add(parsed)
            if not self.usage_asked and not parsed.get("choices") and parsed.get("usage"):
                return None  # we asked for usage; the client did not
        return event.raw

    def document(self) -> dict[str, Any] | None:
        """The assembled ``chat.completion`` when the stream was complete, else None."""
        return self.assembler.response() if self.assembler.complete else None

    def end(self) -> bytes:
        """The final event, sent once the answer is stored."""
        return sse(DONE)

    def cut(self) -> bytes:
        """The event a client gets when the upstream stream breaks off."""
        message = "The upstream stream ended before completion; the response is incomplete."
        return sse(error_body(message, "server_error", "upstream_stream_cut"))
