"""Helpers for the Responses API tests: raw requests to the proxy, the SDK's view of a response."""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response

from tests.e2e_helpers import JSON, RawReply, send_raw
from tests.proxy_harness import ProxyServer

MODEL = "gpt-4o-mini"  # priced in the built-in table: $0.15/M in, $0.60/M out
IMAGE_TOOL: JSON = {"type": "image_generation", "quality": "low"}
# What a replayed text message is made of (one delta carries the whole text).
TEXT_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


async def respond_raw(proxy: ProxyServer, body: bytes | JSON, **kwargs: Any) -> RawReply:
    """``POST /v1/responses`` with a raw body."""
    return await send_raw(f"{proxy.url}/responses", body, **kwargs)


def folded(types: list[str]) -> list[str]:
    """Event types with each run of text deltas folded into one (a live stream sends many)."""
    out: list[str] = []
    for kind in types:
        if not (kind == "response.output_text.delta" and out and out[-1] == kind):
            out.append(kind)
    return out


def plain(response: Response) -> JSON:
    """A response as a dict without what the SDK's stream helper adds (``parsed`` on each text
    part, ``parsed_arguments`` on each function call), to compare an accumulated stream with a
    JSON answer."""
    body = response.to_dict()
    for item in body.get("output", []):
        if item.get("type") == "function_call":
            item.pop("parsed_arguments", None)
        for part in item.get("content", []) if item.get("type") == "message" else []:
            part.pop("parsed", None)
    return body
