"""A stored answer replayed as server-sent events, its blobs spliced back in by position.

The events come from the endpoint (chat: ``chat.completion.chunk`` objects, then ``[DONE]``); they
carry the template document's own slot objects, so a slot is recognised by identity, never by
searching content for a marker. Each payload is yielded on its own, as encoded, instead of being
copied into a joined event and again into its framing (three ~2 MB copies per streamed image hit).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from proxy.upstream.sse import sse

# id(slot owner) -> (field, blob): where each payload of one replayed document goes.
Holes = dict[int, tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """One event of a replay: a JSON object (slots may be holes) or literal data (``[DONE]``), and
    its SSE event name (the Responses API names its events; chat does not)."""

    data: dict[str, Any] | bytes
    name: str | None = None


def replay_parts(events: Iterable[ReplayEvent], holes: Holes) -> Iterator[bytes]:
    """The SSE bytes of ``events``, each hole's blob spliced in where its slot's text ends."""
    for event in events:
        framing = b"event: " + event.name.encode() + b"\n" if event.name else b""
        if isinstance(event.data, bytes):
            yield framing + sse(event.data)
            continue
        owners = _holes_in(event.data, holes) if holes else []
        if not owners:
            yield framing + sse(orjson.dumps(event.data))
            continue
        head, pieces = _split_at_holes(event.data, owners)
        yield framing + b"data: " + head
        for index, (blob, piece) in enumerate(pieces):
            yield pybase64.b64encode(blob)
            yield piece + b"\n\n" if index == len(pieces) - 1 else piece


def _holes_in(value: Any, holes: Holes) -> list[tuple[dict[str, Any], str, bytes]]:
    """The slot owners inside one event object (a walk over its containers; events are small)."""
    found: list[tuple[dict[str, Any], str, bytes]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            hole = holes.get(id(item))
            if hole is not None:
                found.append((item, *hole))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _split_at_holes(
    data: dict[str, Any], owners: list[tuple[dict[str, Any], str, bytes]]
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """``data`` serialised and cut where each hole's text ends: the head, then (blob, the bytes up
    to the next cut) per hole.

    Found from the structure, never by searching: the object is serialised again with one more
    character at the end of the hole's text, and the first byte where the two differ is where that
    text ends (base64 needs no JSON escaping, so the payload goes there as it is).
    """
    plain = orjson.dumps(data)
    cuts: list[tuple[int, bytes]] = []
    for owner, field, blob in owners:
        text = owner[field]
        owner[field] = text + "A"
        longer = orjson.dumps(data)
        owner[field] = text
        cuts.append((next(i for i, (a, b) in enumerate(zip(plain, longer, strict=False)) if a != b), blob))
    cuts.sort(key=lambda cut: cut[0])
    ends = [end for end, _ in cuts[1:]] + [len(plain)]
    return plain[: cuts[0][0]], [
        (blob, plain[end:after]) for (end, blob), after in zip(cuts, ends, strict=True)
    ]
