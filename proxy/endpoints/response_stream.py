"""Responses API streams: fold the named SSE events into the final ``response``, and replay a stored
``response`` as the events the openai SDK parses.

A live stream (OpenAI "Responses streaming events") is ``response.created``,
``response.in_progress``, per output item ``response.output_item.added`` … its own events …
``response.output_item.done``, then one terminal event: ``response.completed``, ``.incomplete``
or ``.failed``, whose ``response`` is the whole answer (the same object the JSON API returns).
Every event carries a ``sequence_number`` counting from 0. There is no ``[DONE]``: the body ends.

Only a ``completed`` response is an answer to store; the other terminal events end the stream,
are accounted (their ``usage``) and passed on, never stored. A replay sends, per stored output
item, the events that build it (one text delta with the whole text), so the SDK's accumulator
(``client.responses.stream``) ends with the stored response; what a live stream showed on the way
(partial images, reasoning summaries, annotations one by one) is not replayed, the final items are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from proxy.cache.replay import ReplayEvent
from proxy.upstream.sse import SSEEvent, sse

COMPLETED = "response.completed"
# Terminal events that are not an answer to store: passed on and accounted, nothing kept.
UNFINISHED = frozenset({"response.incomplete", "response.failed"})
IMAGE_CALL = "image_generation_call"


class ResponseFold:
    """The relay's view of one Responses stream (``upstream.relay.StreamFold``): every event goes
    on as it came except ``response.completed``, held back until the answer is stored (``end``)."""

    def __init__(self, complete: Callable[[Any], bool]) -> None:
        self._complete = complete
        self._final: dict[str, Any] | None = None
        self._usage: dict[str, Any] | None = None
        self._tail = b""
        self._done = False
        self._last_sequence = -1
        self._error_sent = False

    @property
    def done(self) -> bool:
        """A terminal event arrived: the stream has nothing more to say."""
        return self._done

    @property
    def usage(self) -> dict[str, Any] | None:
        """What the terminal event's response says was billed (incomplete and failed ones too)."""
        return self._usage

    def feed(self, event: SSEEvent) -> bytes | None:
        """The bytes to send the client now for ``event``; None to hold it back."""
        parsed = event.json_object()
        if parsed is None:
            return event.raw
        sequence = parsed.get("sequence_number")
        if isinstance(sequence, int) and not isinstance(sequence, bool):
            self._last_sequence = max(self._last_sequence, sequence)
        kind = parsed.get("type")
        if kind == "error":
            self._error_sent = True  # a cut after this needs no error of our own
            return event.raw
        if kind != COMPLETED and kind not in UNFINISHED:
            return event.raw
        response = parsed.get("response")
        if isinstance(response, dict):
            usage = response.get("usage")
            self._usage = usage if isinstance(usage, dict) else None
            if kind == COMPLETED:
                self._final = response
        self._done = True
        self._tail = event.raw
        return None

    def document(self) -> dict[str, Any] | None:
        """The completed ``response`` (what the JSON API answers), if it is one to store."""
        return self._final if self._final is not None and self._complete(self._final) else None

    def end(self) -> bytes:
        """The terminal event, sent once the answer is stored."""
        return self._tail

    def cut(self) -> bytes:
        """An ``error`` event when the upstream breaks off: the Responses API's own error event,
        with an ``error`` object too, so the SDK raises ``APIError`` instead of waiting for more.
        Nothing when the upstream already sent its error event."""
        if self._error_sent:
            return b""
        error = {
            "message": "The upstream stream ended before the response was complete.",
            "type": "server_error",
            "param": None,
            "code": "upstream_stream_cut",
        }
        event = {
            "type": "error",
            "code": error["code"],
            "message": error["message"],
            "param": None,
            "sequence_number": self._last_sequence + 1,
            "error": error,
        }
        return b"event: error\n" + sse(orjson.dumps(event))


def replay_response(doc: Mapping[str, Any]) -> Iterator[ReplayEvent]:
    """A stored ``response`` as its stream of events, numbered from 0.

    The ``response.output_item.done`` events and ``response.completed`` carry the template
    document's own item objects: the cache recognises an image's blob slot by the identity of its
    owner and splices the payload into both, as a live stream has it twice.
    """
    for number, event in enumerate(_events(doc)):
        event["sequence_number"] = number
        yield ReplayEvent(event, name=str(event["type"]))


def _events(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    started = {
        **doc,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
    }
    if "tool_usage" in started:
        started["tool_usage"] = None
    yield {"type": "response.created", "response": started}
    yield {"type": "response.in_progress", "response": dict(started)}
    output = doc.get("output")
    items = output if isinstance(output, list) else []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            yield from _item_events(item, index)
    yield {"type": COMPLETED, "response": doc}


def _item_events(item: dict[str, Any], index: int) -> Iterator[dict[str, Any]]:
    """The events that build one output item, ending with ``output_item.done`` carrying ``item``."""
    kind = item.get("type")
    at = {"item_id": item.get("id"), "output_index": index}
    if kind == "message":
        yield _added(index, {**item, "status": "in_progress", "content": []})
        content = item.get("content")
        for part_index, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, dict):
                yield from _part_events(part, {**at, "content_index": part_index})
    elif kind == "function_call":
        arguments = item.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        yield _added(index, {**item, "status": "in_progress", "arguments": ""})
        yield {"type": "response.function_call_arguments.delta", **at, "delta": arguments}
        yield {"type": "response.function_call_arguments.done", **at, "arguments": arguments}
    elif kind == IMAGE_CALL:
        started = {"id": item.get("id"), "type": IMAGE_CALL, "status": "in_progress", "result": None}
        yield _added(index, started)
        for step in ("in_progress", "generating", "completed"):
            yield {"type": f"response.image_generation_call.{step}", **at}
    else:  # reasoning, tool calls: the item as it ended, announced then done
        yield _added(index, dict(item))
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def _added(index: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "response.output_item.added", "output_index": index, "item": item}


def _part_events(part: dict[str, Any], at: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A message's content part: added empty, its whole text in one delta, done."""
    kind = part.get("type")
    if kind == "output_text":
        text = part.get("text") if isinstance(part.get("text"), str) else ""
        logprobs = part.get("logprobs") if isinstance(part.get("logprobs"), list) else []
        yield {
            "type": "response.content_part.added",
            **at,
            "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
        }
        yield {"type": "response.output_text.delta", **at, "delta": text, "logprobs": logprobs}
        yield {"type": "response.output_text.done", **at, "text": text, "logprobs": logprobs}
    elif kind == "refusal":
        refusal = part.get("refusal") if isinstance(part.get("refusal"), str) else ""
        yield {"type": "response.content_part.added", **at, "part": {"type": "refusal", "refusal": ""}}
        yield {"type": "response.refusal.delta", **at, "delta": refusal}
        yield {"type": "response.refusal.done", **at, "refusal": refusal}
    else:
        yield {"type": "response.content_part.added", **at, "part": part}
    yield {"type": "response.content_part.done", **at, "part": part}
