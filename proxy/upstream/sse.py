"""Server-sent events: parse the upstream stream, assemble it into one response, replay a cached one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

DONE = b"[DONE]"


@dataclass(slots=True)
class SSEEvent:
    """One event: its exact bytes (to forward untouched) and its joined ``data:`` payload."""

    raw: bytes
    data: bytes | None


class SSEParser:
    """Incremental parser: feed arbitrary byte chunks, get whole events back."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Events completed by ``chunk``; a partial event stays buffered."""
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            end, sep_len = _event_end(self._buffer)
            if end < 0:
                return events
            raw = bytes(self._buffer[: end + sep_len])
            del self._buffer[: end + sep_len]
            events.append(SSEEvent(raw, _data_of(raw[:end])))

    @property
    def pending(self) -> bytes:
        """Bytes of an unfinished event (a cut stream leaves them here)."""
        return bytes(self._buffer)


def _event_end(buffer: bytearray) -> tuple[int, int]:
    candidates = [(buffer.find(sep), len(sep)) for sep in (b"\n\n", b"\r\n\r\n", b"\r\r")]
    found = [c for c in candidates if c[0] >= 0]
    return min(found) if found else (-1, 0)


def _data_of(block: bytes) -> bytes | None:
    lines = [line for line in block.replace(b"\r\n", b"\n").split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line.startswith(b"data: ") else line[5:] for line in lines)


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


def sse(data: bytes) -> bytes:
    """Frame one payload as an SSE event."""
    return b"data: " + data + b"\n\n"


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
    if data.strip() == DONE:
        return None
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
