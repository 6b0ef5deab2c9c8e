"""Server-sent events on the wire (WHATWG HTML §9.2): parse an upstream stream into events, frame one.

What the events mean (chat chunks, Responses API events) is the endpoint's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(slots=True)
class SSEEvent:
    """One event: its exact bytes (to forward untouched) and its joined ``data:`` payload."""

    raw: bytes
    data: bytes | None

    def json_object(self) -> dict[str, Any] | None:
        """The ``data:`` payload as a JSON object; None when there is none, it is not JSON or not
        an object (the endpoints' folds pass such events through untouched)."""
        return None if self.data is None else json_object(self.data)


def json_object(data: bytes) -> dict[str, Any] | None:
    """``data`` as a JSON object, or None (not JSON, or another JSON value)."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


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


def sse(data: bytes) -> bytes:
    """Frame one payload as an SSE event."""
    return b"data: " + data + b"\n\n"
